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
                "threshold": {"type": "number", "default": 1e-05, "examples": [0.5, 100.0, 1.5e+300]},
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
    yield from Server(path, "--parallel", 2, "--ctx", 32768).serving()  # room for test_llama31_tools_json_forms


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


def test_llama31_tools_json_forms(llama31_server):
    """Python's json.dumps forms that Meta's template relies on (tojson with indent=4 and without):
    2,000 random doubles over the whole exponent range (repr: shortest round trip, fixed or
    exponent notation), integers, and strings with control characters, quotes and non-ASCII text."""
    import random

    r = random.Random(2026)
    floats = [r.uniform(-1, 1) * 10 ** r.randint(-320, 308) for _ in range(1500)]
    floats += [float(r.randint(-2**53, 2**53)) for _ in range(200)] + [r.random() for _ in range(300)]
    floats += [5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 0.1, 1e-4, 1e-5, 1e15, 1e16, 123.0]
    ints = [r.randint(-2**62, 2**62) for _ in range(50)]
    text = "".join(chr(c) for c in range(1, 0x80)) + "é東京🙂\u2028\x7f"
    tool = {"type": "function", "function": {"name": "g", "description": text, "parameters": {
        "type": "object", "properties": {
            "a": {"type": "array", "default": floats, "examples": [ints, [text, {}, [], None, True]]},
            text: {"type": "string", "description": text}}}}}
    msgs = [{"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [{"function": {"name": "g", "arguments": {"f": floats[:50],
                                                                                           "t": text}}}]}]
    want = render(LLAMA31_TEMPLATE, msgs, "<|begin_of_text|>", tools=[tool])
    got = apply_template(llama31_server, {"messages": openai_messages(msgs), "tools": [tool]})
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


# ---------------------------------------------------------------------------- errors (fast)

SMALL_TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
BAD_BODIES = [
    ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools[0].function.name"),
    ({"tools": [SMALL_TOOL, {"type": "function", "function": {"name": "g", "parameters": "object"}}]},
     "tools[1].function.parameters"),
    ({"tools": [SMALL_TOOL, {"type": "function", "function": {
        "name": "g", "parameters": {"type": "object", "properties": {"a": {"type": "strnig"}}}}}]},
     "tools[1].function.parameters"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}}}]}, "tools[0].function.parameters"),
    ({"tools": [SMALL_TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": "f"}, "tools"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "properties": {"a": {"type": "string", "frobnicate": 3}}}}}},
     "response_format.json_schema.schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "$ref": "#/$defs/node", "$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}},
                                                   "required": ["next"]}}}}}},
     "response_format.json_schema.schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}},
     "response_format.json_schema.name"),
    ({"response_format": {"type": "yaml"}}, "response_format.type"),
    ({"grammar": "root ::= answer"}, "grammar"),  # an undefined rule
    ({"grammar": "root ::= \"a"}, "grammar"),
    ({"grammar": 5}, "grammar"),
    ({"json_schema": {"type": "object", "properties": {"a": {"type": "strnig"}}}}, "json_schema"),
    ({"grammar": "root ::= \"a\"", "json_schema": {}}, "grammar"),
    ({"grammar": "root ::= \"a\"", "response_format": {"type": "json_object"}}, "grammar"),
    ({"json_schema": {}, "tools": [SMALL_TOOL]}, "json_schema"),
]


@pytest.fixture(scope="module")
def smol_server(llama3c, smollm2_path):
    yield from Server(smollm2_path, "--parallel", 2, "--ctx", 1024).serving()


@pytest.fixture(scope="module")
def client(smol_server):
    return openai.OpenAI(base_url=smol_server.base_url + "/v1", api_key="unused", max_retries=0, timeout=300)


@pytest.mark.parametrize("i", range(len(BAD_BODIES)))
def test_bad_tools_and_formats_are_400_naming_the_field(smol_server, i):
    extra, param = BAD_BODIES[i]
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, **extra}
    st, r = smol_server.post_json("/v1/chat/completions", body)
    assert st == 400, r
    assert r["error"]["param"] == param, r
    assert r["error"]["type"] == "invalid_request_error" and r["error"]["message"], r


def test_bad_grammar_on_completions_is_400(smol_server):
    st, r = smol_server.post_json("/v1/completions", {"prompt": "x", "grammar": "root ::= answer"})
    assert st == 400 and r["error"]["param"] == "grammar" and "answer" in r["error"]["message"], r


def test_bad_message_tool_calls_are_400(smol_server):
    msgs = [{"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function", "function": {}}]}]
    st, r = smol_server.post_json("/v1/chat/completions", {"messages": msgs, "max_tokens": 1})
    assert st == 400 and r["error"]["param"] == "messages[1].tool_calls[0].function.name", r


# ---------------------------------------------------------------------------- generation (slow, SmolLM2)

jsonschema = pytest.importorskip("jsonschema")

CALL_TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "The current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 24},
                                                        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                       "required": ["city", "unit"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "get_time", "description": "The time now in a time zone",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 24}},
                       "required": ["zone"], "additionalProperties": False}}},
]
PARAMS = {t["function"]["name"]: t["function"]["parameters"] for t in CALL_TOOLS}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def check_calls(calls, only=None):
    assert calls, "no tool calls"
    for c in calls:
        assert c.type == "function" and c.id.startswith("call_")
        assert c.function.name in PARAMS and (only is None or c.function.name == only)
        jsonschema.validate(json.loads(c.function.arguments), PARAMS[c.function.name])


def stream_calls(client, **kw):
    """Streams a completion; rebuilds content and tool calls from the deltas as OpenAI documents it."""
    chunks = list(client.chat.completions.create(model="m", stream=True, **kw))
    content, calls, finish = "", {}, []
    for ch in chunks:
        d = ch.choices[0].delta
        content += d.content or ""
        for tc in d.tool_calls or []:
            if tc.id:  # the first delta of a call: id, type and name, no arguments yet
                assert tc.index not in calls and tc.type == "function" and tc.function.name
                calls[tc.index] = {"id": tc.id, "name": tc.function.name, "arguments": tc.function.arguments or ""}
            else:
                calls[tc.index]["arguments"] += tc.function.arguments
        if ch.choices[0].finish_reason:
            finish.append(ch.choices[0].finish_reason)
    return content, [calls[i] for i in sorted(calls)], finish


@pytest.mark.slow
def test_tool_call_required_streamed_and_not(client):
    kw = dict(messages=ASK, tools=CALL_TOOLS, tool_choice="required", parallel_tool_calls=False, temperature=0,
              max_tokens=60)
    r = client.chat.completions.create(model="m", **kw)
    ch = r.choices[0]
    assert ch.finish_reason == "tool_calls" and ch.message.content is None, ch
    check_calls(ch.message.tool_calls)
    assert len(ch.message.tool_calls) == 1
    content, calls, finish = stream_calls(client, **kw)
    assert finish == ["tool_calls"] and content == ""
    assert [(c["name"], c["arguments"]) for c in calls] == [(c.function.name, c.function.arguments)
                                                            for c in ch.message.tool_calls]


@pytest.mark.slow
def test_tool_call_named_function(client):
    r = client.chat.completions.create(model="m", messages=ASK, tools=CALL_TOOLS, temperature=0, max_tokens=60,
                                       tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert r.choices[0].finish_reason == "tool_calls"
    check_calls(r.choices[0].message.tool_calls, only="get_time")


@pytest.mark.slow
@pytest.mark.parametrize("stream", [False, True])
def test_tool_round_trip(client, stream):
    """call -> tool result -> final answer, with tool_choice auto on the second turn."""
    r = client.chat.completions.create(model="m", messages=ASK, tools=CALL_TOOLS, tool_choice="required",
                                       parallel_tool_calls=False, temperature=0, max_tokens=60)
    call = r.choices[0].message.tool_calls[0]
    msgs = ASK + [r.choices[0].message.model_dump(exclude_none=True),
                  {"role": "tool", "tool_call_id": call.id, "content": "{\"temperature\": 21, \"sky\": \"sunny\"}"}]
    kw = dict(messages=msgs, tools=CALL_TOOLS, temperature=0, max_tokens=40)
    if stream:
        content, calls, finish = stream_calls(client, **kw)
    else:
        f = client.chat.completions.create(model="m", **kw)
        content, calls, finish = f.choices[0].message.content, f.choices[0].message.tool_calls or [], \
            [f.choices[0].finish_reason]
        assert f.usage.prompt_tokens > r.usage.prompt_tokens + 10  # the call and its result are in the prompt
    assert not calls and finish[0] in ("stop", "length") and content.strip(), (content, calls, finish)


@pytest.mark.slow
@pytest.mark.parametrize("stream", [False, True])
def test_badly_written_call_is_text(client, stream):
    """A call cut short (here by a stop string inside it) is not a call: its text comes back as
    content with finish_reason "stop", never an error."""
    kw = dict(messages=ASK, tools=CALL_TOOLS, tool_choice="required", parallel_tool_calls=False, temperature=0,
              max_tokens=60, stop=["arguments"])
    if stream:
        content, calls, finish = stream_calls(client, **kw)
    else:
        r = client.chat.completions.create(model="m", **kw)
        content, calls, finish = r.choices[0].message.content, r.choices[0].message.tool_calls, \
            [r.choices[0].finish_reason]
    assert not calls and finish == ["stop"]
    assert content.lstrip().startswith("{") and "tool_calls" in content and "arguments" not in content


SCHEMAS = {
    "person": {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "role": {"enum": ["admin", "user", "guest"]}}, "required": ["name", "age", "role"],
        "additionalProperties": False},
    "nested": {"type": "object", "properties": {
        "title": {"type": "string", "maxLength": 16},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["red", "green", "blue"]}, "minItems": 1,
                 "maxItems": 3},
        "owner": {"$ref": "#/$defs/owner"}}, "required": ["title", "tags", "owner"], "additionalProperties": False,
        "$defs": {"owner": {"type": "object", "properties": {"id": {"type": "integer"},
                                                             "ok": {"type": "boolean"}},
                            "required": ["id", "ok"], "additionalProperties": False}}},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCHEMAS))
@pytest.mark.parametrize("temperature", [0, 0.8])
def test_response_format_json_schema(client, name, temperature):
    schema = SCHEMAS[name]
    r = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": f"Give me an example {name} as JSON."}], temperature=temperature,
        seed=7, max_tokens=90, response_format={"type": "json_schema",
                                                "json_schema": {"name": name, "schema": schema, "strict": True}})
    assert r.choices[0].finish_reason == "stop", r
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)


@pytest.mark.slow
def test_response_format_json_object_streamed(client):
    kw = dict(messages=[{"role": "user", "content": 'Give Bob, age 30, as a JSON object with keys "name" and "age".'}],
              temperature=0, max_tokens=60, response_format={"type": "json_object"})
    r = client.chat.completions.create(model="m", **kw)
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content), dict)
    content, calls, finish = stream_calls(client, **kw)
    assert content == r.choices[0].message.content and finish == ["stop"] and not calls


@pytest.mark.slow
def test_parse_with_pydantic(client):
    from typing import List, Literal

    from pydantic import BaseModel, Field

    class Pet(BaseModel):
        name: str = Field(max_length=16)
        kind: Literal["cat", "dog", "bird"]
        age: int = Field(ge=0, le=30)
        toys: List[str] = Field(max_length=2)

    r = client.chat.completions.parse(model="m", messages=[{"role": "user", "content": "Invent a pet."}],
                                      response_format=Pet, temperature=0, max_tokens=80)
    pet = r.choices[0].message.parsed
    assert isinstance(pet, Pet) and r.choices[0].finish_reason == "stop"
    assert Pet.model_validate_json(r.choices[0].message.content) == pet


# ---------------------------------------------------------------------------- Llama 3.1 protocol generation

def _llama31_chat(server, **extra):
    body = {"messages": [{"role": "user", "content": "Weather in Oslo?"}], "tools": CALL_TOOLS, "temperature": 0,
            "max_tokens": 80, "seed": 3, **extra}
    return server.post_json("/v1/chat/completions", body)


def _token_id(server, text):
    """The id of a single-token text in the served model's vocabulary (llama3c tokenize --special)."""
    from conftest import run_cli

    path = server.cmd[server.cmd.index("-m") + 1]
    ids = run_cli("tokenize", "-m", path, "--special", "--ids", "-p", text).stdout.split()
    assert len(ids) == 1, ids
    return int(ids[0])


@pytest.mark.slow
@pytest.mark.parametrize("how", ["required", "named", "lazy_brace", "lazy_python_tag"])
def test_llama31_protocol_calls(llama31_server, how):
    """A tiny random model with the Llama 3.1 template: whatever it would write, the grammar makes
    the reply a {"name", "parameters"} call that parses into tool_calls: from the first token
    (required, a named function) or, with tool_choice auto, from the token that opens a JSON
    object or from <|python_tag|> (pushed here with logit_bias, as the model would choose them)."""
    extra = {}
    if how == "required":
        extra = {"tool_choice": "required"}
    elif how == "named":
        extra = {"tool_choice": {"type": "function", "function": {"name": "get_time"}}}
    elif how == "lazy_brace":
        extra = {"logit_bias": {str(_token_id(llama31_server, "{")): 100}}
    else:
        extra = {"logit_bias": {str(_token_id(llama31_server, "<|python_tag|>")): 100}}
    st, r = _llama31_chat(llama31_server, **extra)
    assert st == 200, r
    ch = r["choices"][0]
    assert ch["finish_reason"] == "tool_calls", ch
    calls = ch["message"]["tool_calls"]
    assert len(calls) == 1 and ch["message"]["content"] is None
    name = calls[0]["function"]["name"]
    assert name == "get_time" if how == "named" else name in PARAMS
    jsonschema.validate(json.loads(calls[0]["function"]["arguments"]), PARAMS[name])
    st, events, _ = llama31_server.stream("/v1/chat/completions", {
        "messages": [{"role": "user", "content": "Weather in Oslo?"}], "tools": CALL_TOOLS, "temperature": 0,
        "max_tokens": 80, "seed": 3, "stream": True, **extra})
    deltas = [e["choices"][0]["delta"] for e in events[:-1] if e["choices"]]
    got = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert got[0]["function"]["name"] == name and got[0]["id"].startswith("call_")
    assert "".join(d["function"].get("arguments", "") for d in got) == calls[0]["function"]["arguments"]
    assert events[-2]["choices"][0]["finish_reason"] == "tool_calls" and events[-1] == "[DONE]"


@pytest.mark.slow
def test_llama31_auto_text_is_not_forced(llama31_server):
    """tool_choice auto and a reply that does not open a JSON object: no grammar, plain text."""
    st, r = _llama31_chat(llama31_server, logit_bias={str(_token_id(llama31_server, "{")): -100}, max_tokens=8)
    assert st == 200 and r["choices"][0]["finish_reason"] in ("stop", "length"), r
    assert "tool_calls" not in r["choices"][0]["message"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_llama31_tools_with_response_format(llama31_server, seed):
    """tool_choice auto + response_format: the answer is a call or follows the format (one grammar)."""
    schema = SCHEMAS["person"]
    st, r = _llama31_chat(llama31_server, temperature=1.0, seed=seed, max_tokens=80,
                          response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}})
    assert st == 200, r
    ch = r["choices"][0]
    if ch["finish_reason"] == "tool_calls":
        c = ch["message"]["tool_calls"][0]["function"]
        jsonschema.validate(json.loads(c["arguments"]), PARAMS[c["name"]])
    else:
        assert ch["finish_reason"] == "stop", ch
        jsonschema.validate(json.loads(ch["message"]["content"]), schema)


@pytest.mark.slow
def test_grammar_and_json_schema_extensions(client, smol_server):
    """llama.cpp's extension fields: "grammar" (GBNF) and "json_schema", on chat and on completions."""
    gbnf = 'root ::= ("yes" | "no") "." " " [A-Z] [a-z]{2,8} "."'
    import re

    for path, body in (("/v1/completions", {"prompt": "Is the sky blue? Answer:"}),
                       ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Is the sky blue?"}]})):
        st, r = smol_server.post_json(path, {**body, "grammar": gbnf, "max_tokens": 20, "temperature": 0.7,
                                             "seed": 5})
        assert st == 200, r
        ch = r["choices"][0]
        text = ch["text"] if "text" in ch else ch["message"]["content"]
        assert re.fullmatch(r"(yes|no)\. [A-Z][a-z]{2,8}\.", text) and ch["finish_reason"] == "stop", ch
    schema = {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 99}, "minItems": 2,
              "maxItems": 4}
    st, r = smol_server.post_json("/v1/completions", {"prompt": "Some numbers:", "json_schema": schema,
                                                      "max_tokens": 30, "temperature": 0})
    assert st == 200 and r["choices"][0]["finish_reason"] == "stop", r
    jsonschema.validate(json.loads(r["choices"][0]["text"]), schema)
