"""Where generation ends, and the server against the CLI (SmolLM2-135M-Instruct Q4_1, ChatML).

End of generation: the chat question Q below ends by itself under greedy decoding. The stop
point is established independently of the code that stops: the EOG id comes from the GGUF's
metadata (tokenizer.ggml.eos_token_id, read with gguf-py), the path from `run --print-ids
--ignore-eos` (which does not stop there), and, where llama-cpp-python is importable, from
llama.cpp's own greedy path on the same file. Then `run` and `chat` (CLI) and
/v1/chat/completions and /v1/completions (server, streamed and not) must stop exactly there:
the text is the detokenized ids before the EOG token, the EOG token's text never appears (not
even with --print-special), completion_tokens excludes it, finish_reason is "stop"; with
max_tokens below the stop point finish_reason is "length". A logit bias on the EOG id moves the
stop point (+100: nothing is generated; -100: the answer runs on to max_tokens).

Server == CLI: the same prompt, seed and sampling parameters give the same text from
`llama3c run` and /v1/completions, and from `llama3c chat -p` and /v1/chat/completions (one
turn), greedy and at temperature > 0, with and without the presence / frequency penalties.
"""
import json

import pytest

from conftest import THREADS, ids_arg, llama_cpp_or_skip, run_cli
from server_util import Server

Q = "What is the capital of France? Answer in one sentence."
CTX = 512


@pytest.fixture(scope="module")
def eog(smollm2_path):
    gguf = pytest.importorskip("gguf")
    r = gguf.GGUFReader(smollm2_path)
    f = r.fields["tokenizer.ggml.eos_token_id"]
    eos = int(f.parts[f.data[0]][0])
    toks = r.fields["tokenizer.ggml.tokens"]
    text = bytes(toks.parts[toks.data[eos]]).decode()
    assert text == "<|im_end|>", text  # ChatML's end of turn
    return eos, text


@pytest.fixture(scope="module")
def chat_ids(llama3c, smollm2_path):
    """Q through the model's chat template (default system prompt included), as token ids."""
    return [int(x) for x in run_cli("chat", "-m", smollm2_path, "--print-prompt-ids", "-p", Q).stdout.split()]


@pytest.fixture(scope="module")
def path(smollm2_path, chat_ids, eog):
    """(answer ids before the EOG token, the text they detokenize to): from the --ignore-eos path."""
    p = run_cli("run", "-m", smollm2_path, "--ids", ids_arg(chat_ids), "--temp", 0, "-n", 40, "--print-ids",
                "--ignore-eos", "-t", THREADS)
    ids = [int(x) for x in p.stdout.split()]
    assert eog[0] in ids, f"greedy never produced the EOG id {eog[0]} in 40 tokens: {ids}"
    k = ids.index(eog[0])
    assert 3 <= k <= 30, ids
    text = run_cli("detokenize", "-m", smollm2_path, *ids[:k]).stdout
    assert "Paris" in text and eog[1] not in text, text
    return ids[:k], text


def test_stop_point_agrees_with_llama_cpp(smollm2_path, chat_ids, path, eog):
    llama_cpp = llama_cpp_or_skip()
    llm = llama_cpp.Llama(model_path=smollm2_path, n_ctx=256, n_batch=256, n_threads=1, logits_all=True, verbose=False)
    ids = list(chat_ids)
    got = []
    llm.eval(ids)
    for _ in range(len(path[0]) + 1):
        scores = llm.scores[llm.n_tokens - 1]
        top = int(scores.argmax())
        got.append(top)
        if top == eog[0]:
            break
        llm.eval([top])
    assert got == path[0] + [eog[0]], (got, path[0])


# ---------------------------------------------------------------------- CLI


def test_cli_run_stops_at_eog(smollm2_path, chat_ids, path, eog):
    ids, text = path
    base = ("run", "-m", smollm2_path, "--ids", ids_arg(chat_ids), "--temp", 0, "-n", 40, "-t", THREADS)
    p = run_cli(*base, "--print-ids")
    assert [int(x) for x in p.stdout.split()] == ids
    assert f"generation: {len(ids)} tokens" in p.stderr
    p = run_cli(*base)
    assert p.stdout.rstrip("\n") == text
    p = run_cli(*base, "--print-special")
    assert p.stdout.rstrip("\n") == text and eog[1] not in p.stdout
    # max tokens first: cut there
    p = run_cli("run", "-m", smollm2_path, "--ids", ids_arg(chat_ids), "--temp", 0, "-n", len(ids) - 2,
                "--print-ids", "-t", THREADS)
    assert [int(x) for x in p.stdout.split()] == ids[:-2]


def test_cli_chat_stops_at_eog(smollm2_path, path, eog):
    ids, text = path
    p = run_cli("chat", "-m", smollm2_path, "-p", Q, "--temp", 0, "-n", 40, "-t", THREADS)
    assert p.stdout.strip("\n") == text
    assert eog[1] not in p.stdout
    assert f"generation: {len(ids)} tokens" in p.stderr


# ---------------------------------------------------------------------- server


@pytest.fixture(scope="module")
def server(llama3c, smollm2_path):
    yield from Server(smollm2_path, "--parallel", 1, "--ctx", CTX).serving()


def chatml(msgs):
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in msgs) + "<|im_start|>assistant\n"


CHAT_MSGS = [{"role": "system", "content": "You are a helpful AI assistant named SmolLM, trained by Hugging Face"},
             {"role": "user", "content": Q}]


def post(server, route, body):
    st, r = server.post_json(route, body)
    assert st == 200, r
    return r


def stream(server, route, body):
    st, events, raw = server.stream(route, dict(body, stream=True, stream_options={"include_usage": True}))
    assert st == 200, raw[:500]
    assert events[-1] == "[DONE]"
    chunks = [e for e in events[:-1] if e["choices"]]
    if route.endswith("chat/completions"):
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    else:
        text = "".join(c["choices"][0]["text"] for c in chunks)
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]]
    usage = events[-2]["usage"]
    return text, finish, usage


def answer(route, r):
    c = r["choices"][0]
    return (c["message"]["content"] if route.endswith("chat/completions") else c["text"]), c["finish_reason"]


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/completions"])
def test_server_stops_at_eog(server, path, chat_ids, eog, route):
    ids, text = path
    # the two routes see the same tokens: the chat template vs hand-written ChatML (specials parsed)
    body = {"messages": [{"role": "user", "content": Q}]} if "chat" in route else {"prompt": chatml(CHAT_MSGS)}
    body.update(temperature=0, max_tokens=40)
    r = post(server, route, body)
    assert r["usage"]["prompt_tokens"] == len(chat_ids)
    got, finish = answer(route, r)
    assert (got, finish) == (text, "stop")
    assert eog[1] not in got and r["usage"]["completion_tokens"] == len(ids)
    s_text, s_finish, usage = stream(server, route, body)
    assert (s_text, s_finish) == (text, ["stop"]) and usage["completion_tokens"] == len(ids)
    # max_tokens first: "length", the first max_tokens tokens' text
    cut = run_cli("detokenize", "-m", server.cmd[3], *ids[:len(ids) - 2]).stdout
    body["max_tokens"] = len(ids) - 2
    got, finish = answer(route, post(server, route, body))
    assert (got, finish) == (cut, "length")
    s_text, s_finish, usage = stream(server, route, body)
    assert (s_text, s_finish) == (cut, ["length"]) and usage["completion_tokens"] == len(ids) - 2
    # exactly max_tokens == the answer's length: the limit comes before the EOG is sampled
    body["max_tokens"] = len(ids)
    got, finish = answer(route, post(server, route, body))
    assert (got, finish) == (text, "length")
    # the EOG token decides: forced at once -> empty answer, "stop"; banned -> runs to max_tokens
    body.update(max_tokens=40, logit_bias={str(eog[0]): 100})
    r = post(server, route, body)
    assert answer(route, r) == ("", "stop") and r["usage"]["completion_tokens"] == 0
    body.update(logit_bias={str(eog[0]): -100}, max_tokens=len(ids) + 6)
    r = post(server, route, body)
    got, finish = answer(route, r)
    assert finish == "length" and r["usage"]["completion_tokens"] == len(ids) + 6
    assert got.startswith(text) and eog[1] not in got


# ---------------------------------------------------------------------- server == CLI

SAMPLING = [  # (name, CLI options, request fields)
    ("greedy", ["--temp", "0"], {"temperature": 0}),
    ("t0.8-topk40-topp0.95-minp0.05", ["--temp", "0.8", "--top-k", "40", "--top-p", "0.95", "--min-p", "0.05"],
     {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05}),
    ("t1.2-plain", ["--temp", "1.2", "--top-k", "0", "--top-p", "1", "--min-p", "0"],
     {"temperature": 1.2, "top_k": 0, "top_p": 1, "min_p": 0}),
    ("t0.9-repeat1.3", ["--temp", "0.9", "--top-k", "0", "--top-p", "0.9", "--min-p", "0", "--repeat-penalty", "1.3"],
     {"temperature": 0.9, "top_k": 0, "top_p": 0.9, "min_p": 0, "repeat_penalty": 1.3}),
    ("greedy-penalties", ["--temp", "0", "--presence-penalty", "0.8", "--frequency-penalty", "0.6"],
     {"temperature": 0, "presence_penalty": 0.8, "frequency_penalty": 0.6}),
    ("t0.7-penalties", ["--temp", "0.7", "--top-k", "0", "--top-p", "1", "--min-p", "0", "--presence-penalty", "-0.5",
                        "--frequency-penalty", "1.5"],
     {"temperature": 0.7, "top_k": 0, "top_p": 1, "min_p": 0, "presence_penalty": -0.5, "frequency_penalty": 1.5}),
]
SEED = 424242
N = 32


@pytest.mark.parametrize("name,cli,req", SAMPLING, ids=[s[0] for s in SAMPLING])
def test_server_equals_cli(server, smollm2_path, name, cli, req):
    prompt = "Once upon a time, in a small village by the sea,"
    want = run_cli("run", "-m", smollm2_path, "-p", prompt, "-n", N, "--seed", SEED, "-t", THREADS, *cli).stdout
    body = dict(req, prompt=prompt, max_tokens=N, seed=SEED)
    got, _ = answer("/v1/completions", post(server, "/v1/completions", body))
    assert got == want, f"{name}: server {got!r}\nCLI {want!r}"
    assert stream(server, "/v1/completions", body)[0] == want

    q = "Write a short poem about the sea."
    want = run_cli("chat", "-m", smollm2_path, "-p", q, "-n", N, "--seed", SEED, "-t", THREADS, *cli).stdout
    body = dict(req, messages=[{"role": "user", "content": q}], max_tokens=N, seed=SEED)
    got, _ = answer("/v1/chat/completions", post(server, "/v1/chat/completions", body))
    assert got == want.rstrip("\n"), f"{name}: server {got!r}\nCLI {want!r}"


def test_penalties_change_output_deterministically(server, smollm2_path):
    """The penalties do something, the same seed gives the same text, and the CLI agrees."""
    prompt = "List the days of the week: Monday, Tuesday,"
    base = dict(prompt=prompt, max_tokens=N, seed=7, temperature=0)
    plain = answer("/v1/completions", post(server, "/v1/completions", base))[0]
    seen = {plain}
    for pp, fp in ((0.0, 1.0), (1.5, 0.0), (2.0, 2.0), (-2.0, 0.0)):
        body = dict(base, presence_penalty=pp, frequency_penalty=fp)
        a = answer("/v1/completions", post(server, "/v1/completions", body))[0]
        assert answer("/v1/completions", post(server, "/v1/completions", body))[0] == a
        cli = run_cli("run", "-m", smollm2_path, "-p", prompt, "-n", N, "--seed", 7, "--temp", 0, "-t", THREADS,
                      "--presence-penalty", pp, "--frequency-penalty", fp).stdout
        assert a == cli, (pp, fp, a, cli)
        seen.add(a)
    assert len(seen) >= 4, seen  # every setting changed the greedy text (a list of repeated words)
    # out of range -> 400 naming the field
    for f, v in (("presence_penalty", 2.5), ("frequency_penalty", -3), ("frequency_penalty", "x")):
        st, r = server.post_json("/v1/completions", dict(base, **{f: v}))
        assert st == 400 and r["error"]["param"] == f, (f, v, st, r)
    p = run_cli("run", "-m", smollm2_path, "-p", "x", "--presence-penalty", "3", check=False)
    assert p.returncode == 2 and "--presence-penalty" in p.stderr


def test_special_tokens_give_no_text(server, smollm2_path):
    """A generated control token (not an EOG) counts but gives no text, in the server as in `run`
    (which shows it only with --print-special)."""
    for tid in (1, 4):  # <|im_start|>, <reponame>
        name = run_cli("detokenize", "-m", smollm2_path, tid).stdout
        assert name.startswith("<") and name.endswith(">"), name
        body = {"prompt": "Hello", "max_tokens": 3, "temperature": 0, "logit_bias": {str(tid): 100}}
        r = post(server, "/v1/completions", body)
        assert r["choices"][0]["text"] == "" and r["usage"]["completion_tokens"] == 3, r
        assert stream(server, "/v1/completions", body)[0] == ""
        r = post(server, "/v1/chat/completions", dict(body, messages=[{"role": "user", "content": "Hi"}]))
        assert r["choices"][0]["message"]["content"] == "" and r["choices"][0]["finish_reason"] == "length"
