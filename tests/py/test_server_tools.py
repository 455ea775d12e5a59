"""`llama3c serve`: tools (function calling) and response_format (structured output).

- Llama 3.1 protocol: the prompt the server builds for a request with `tools`, assistant
  `tool_calls` and `tool` results (POST /apply-template, llama.cpp's endpoint) equals Meta's
  Llama 3.1 chat template (tests/py/data/llama31_instruct.jinja) rendered with jinja2 the way
  Hugging Face's apply_chat_template renders it, byte for byte, on a tiny model with the real
  Llama 3 vocabulary; tool_choice "none" renders no tools;
- generic protocol (SmolLM2, ChatML): the tool list at the end of the system message exactly as
  docs/SERVER.md describes it;
- 400s that name the field: malformed tools, tool_choice, response_format, bad schemas;
- (slow) SmolLM2 through the official `openai` client: response_format json_object / json_schema
  (outputs validate with `jsonschema`), `client.chat.completions.parse` with a pydantic model,
  tool calls forced (required / a named function) and a round trip call -> tool result -> final
  answer, streamed and not (the streamed deltas rebuild the same calls); a model that writes a
  broken call gets text back with finish_reason "stop".
Tolerance: none (byte-for-byte prompts, exact schema validation).
"""
import copy
import json
import os

import pytest

from server_util import Server

jinja2 = pytest.importorskip("jinja2", reason="jinja2 (the reference template engine) is not installed")
openai = pytest.importorskip("openai")

from test_chat_template import LLAMA3_TOKMODEL, LLAMA31_TEMPLATE, render  # noqa: E402

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city — «quoted», 東京 too",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. \"Paris\"\n(no country)"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "threshold": {"type": "number", "minimum": 0.5, "maximum": 1e-05, "default": 100.0},
                "extra": {},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
            },
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "description": "The time now", "parameters": {"type": "object",
                                                                                 "properties": {}}},
}
TOOLS = [WEATHER, TIME]


def openai_messages(msgs):
    """The jinja messages in OpenAI's wire form: tool-call arguments as JSON strings."""
    out = copy.deepcopy(msgs)
    for m in out:
        for c in m.get("tool_calls", []):
            c["function"]["arguments"] = json.dumps(c["function"]["arguments"])
            c.setdefault("id", "call_1")
            c.setdefault("type", "function")
        if "tool_calls" in m:
            m.setdefault("content", None)
    return out


ROUND_TRIP = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "  What's the weather in Paris?  "},
    {"role": "assistant", "tool_calls": [{"function": {"name": "get_weather",
                                                       "arguments": {"city": "Paris", "days": 2, "x": 1.5}}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 21, \"sky\": \"clear\"}"},
]
LLAMA31_TOOL_CONVERSATIONS = {
    "user_only": [{"role": "user", "content": "Weather in Oslo?"}],
    "system_user": [{"role": "system", "content": "  Be brief. "}, {"role": "user", "content": "Hi\n"}],
    "round_trip": ROUND_TRIP,
    "round_trip_more": ROUND_TRIP + [{"role": "assistant", "content": "It is 21 degrees."},
                                     {"role": "user", "content": "Thanks! And the time?"}],
}


@pytest.fixture(scope="module")
def llama31_server(llama3c, tiny_model):
    if not os.path.exists(LLAMA3_TOKMODEL):
        pytest.fail(f"Llama 3 tokenizer.model not found at {LLAMA3_TOKMODEL}")
    import gen_models

    spec = gen_models.ModelSpec(n_embd=64, n_layer=1, n_head=2, n_head_kv=2, n_ff=128, n_vocab=128256,
                                llama3_vocab=LLAMA3_TOKMODEL, kv=(("tokenizer.chat_template", LLAMA31_TEMPLATE),))
    path = tiny_model("chat_llama31", spec, "F32")
    yield from Server(path, "--parallel", 2, "--ctx", 2048).serving()


def apply_template(server, body):
    st, r = server.post_json("/apply-template", body)
    assert st == 200, r
    return r["prompt"]


@pytest.mark.parametrize("name", sorted(LLAMA31_TOOL_CONVERSATIONS))
def test_llama31_tools_prompt_matches_meta_template(llama31_server, name):
    msgs = LLAMA31_TOOL_CONVERSATIONS[name]
    want = render(LLAMA31_TEMPLATE, msgs, "<|begin_of_text|>", tools=TOOLS)
    got = apply_template(llama31_server, {"messages": openai_messages(msgs), "tools": TOOLS})
    assert got == want


def test_llama31_tool_history_without_tools(llama31_server):
    """tool_choice none: no tools in the prompt; calls and results in the history still render as
    Meta's template renders them (tools=None)."""
    want = render(LLAMA31_TEMPLATE, ROUND_TRIP, "<|begin_of_text|>")
    got = apply_template(llama31_server, {"messages": openai_messages(ROUND_TRIP), "tools": TOOLS,
                                          "tool_choice": "none"})
    assert got == want
    assert "Environment: ipython" not in got


def test_generic_tools_prompt(llama3c, smollm2_path):
    """ChatML (SmolLM2): the tools are listed after the model's default system message, each as
    json.dumps(tool), then the instruction (docs/SERVER.md); a call in the history is rendered as
    {"tool_calls": [{"name", "arguments"}]}."""
    with Server(smollm2_path, "--parallel", 1, "--ctx", 1024) as srv:
        got = apply_template(srv, {"messages": openai_messages(ROUND_TRIP[1:]), "tools": TOOLS})
        sys = ("You can call the following functions (tools):\n" + "".join(json.dumps(t, ensure_ascii=False) + "\n"
                                                                            for t in TOOLS)
               + "\nTo call one or more of them, reply with only a JSON object of the form {\"tool_calls\": "
               "[{\"name\": \"function name\", \"arguments\": {\"argument name\": value}}]} and nothing else. "
               "Otherwise answer in plain text.")
        call = json.dumps({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris", "days": 2,
                                                                                  "x": 1.5}}]})
        want = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face\n\n" + sys
                + "<|im_end|>\n<|im_start|>user\n  What's the weather in Paris?  <|im_end|>\n"
                + "<|im_start|>assistant\n" + call + "<|im_end|>\n"
                + "<|im_start|>tool\n{\"temp\": 21, \"sky\": \"clear\"}<|im_end|>\n<|im_start|>assistant\n")
        assert got == want
