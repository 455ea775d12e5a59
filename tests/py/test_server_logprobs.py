"""`llama3c serve` logprobs against llama-cpp-python on the same GGUF (a tiny random F32 model).

- completions `logprobs: N` + `echo: true` on a token-id prompt: tokens, token_logprobs (the
  first null), top_logprobs and the greedy continuation equal llama-cpp-python's
  create_completion(logprobs=N, echo=True) within 1e-3;
- chat `logprobs: true` + `top_logprobs`: OpenAI's shape (token, logprob, bytes, top_logprobs);
  greedy tokens are their own top alternative (the values come from the same scheduler code
  that the completions tests compare with llama-cpp-python);
- streamed logprobs concatenate to the non-streamed ones; bad values get a 400.
Logprobs are the log-softmax of the raw logits (before temperature, penalties and bias).
"""
import json

import numpy as np
import pytest

import gen_models
from conftest import llama_cpp_or_skip
from server_util import Server

SPEC = gen_models.ModelSpec(n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=128, n_vocab=320, n_ctx=256)
PROMPT = [1, 300, 17, 290, 45, 260, 99, 270, 301, 12]
TOL = 1e-3



def incomplete_tail(b):
    """Bytes at the end of b that start a UTF-8 sequence and are too few to end it (0 if none)."""
    for k in range(1, min(3, len(b)) + 1):
        c = b[-k]
        if c & 0xC0 == 0x80:
            continue  # a continuation byte: look further back
        need = 2 if c & 0xE0 == 0xC0 else 3 if c & 0xF0 == 0xE0 else 4 if c & 0xF8 == 0xF0 else 1
        return k if need > k else 0
    return 0


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model("lp", SPEC, "F32")


@pytest.fixture(scope="module")
def server(llama3c, model):
    # F32 KV caches on both sides: the logprobs then agree to ~1e-5 (F16 caches round K / V
    # differently: up to ~7e-3 on this model's large logits)
    yield from Server(model, "--parallel", 2, "--ctx", 256, "--kv", "f32").serving()


@pytest.fixture(scope="module")
def llm(model):
    llama_cpp = llama_cpp_or_skip()
    return llama_cpp.Llama(model_path=model, n_ctx=256, n_batch=256, logits_all=True, verbose=False,
                           n_threads=2, seed=0, type_k=0, type_v=0)  # GGML_TYPE_F32


def log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def in_top(ours, ref_top, what):
    """ours: {text: logprob} of N alternatives (tokens of equal text keep the likelier: fewer
    entries); each value must be one of the reference's N best, and the best must be there."""
    vals = sorted(ours.values(), reverse=True)
    assert len(vals) >= min(3, len(ref_top)), (what, ours)
    assert abs(vals[0] - ref_top[0]) <= TOL, (what, vals, ref_top)
    for v in vals:
        assert np.min(np.abs(np.asarray(ref_top) - v)) <= TOL, (what, v, ref_top)


def post(server, path, body):
    st, _, data = server.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    return st, json.loads(data)


def test_completion_echo_logprobs_equal_llama_cpp(server, llm):
    st, got = post(server, "/v1/completions", {"prompt": [PROMPT], "max_tokens": 4, "temperature": 0,
                                               "logprobs": 5, "echo": True})
    assert st == 200, got
    lp = got["choices"][0]["logprobs"]
    n_gen = got["usage"]["completion_tokens"]
    n = len(PROMPT) + n_gen
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == len(lp["text_offset"]) == n
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    # the prompt: log-softmax of llama.cpp's logits, the top 5 of each position
    llm.reset()
    llm.eval(PROMPT)
    ref = log_softmax(np.array(llm.scores[:len(PROMPT)]))
    for i in range(1, len(PROMPT)):
        assert lp["token_logprobs"][i] == pytest.approx(ref[i - 1, PROMPT[i]], abs=TOL), i
        in_top(lp["top_logprobs"][i], np.sort(ref[i - 1])[::-1][:5], f"position {i}")
    # the generated tokens: greedy on llama.cpp's logits, token by token
    assert n_gen > 0
    last = ref[len(PROMPT) - 1]
    for k in range(n_gen):
        tok = int(np.argmax(last))
        assert lp["token_logprobs"][len(PROMPT) + k] == pytest.approx(last[tok], abs=TOL), k
        in_top(lp["top_logprobs"][len(PROMPT) + k], np.sort(last)[::-1][:5], f"generated {k}")
        llm.eval([tok])
        last = log_softmax(np.array(llm.scores[llm.n_tokens - 1]))
    # and the text is llama-cpp-python's greedy completion
    rc = llm.create_completion(PROMPT, max_tokens=n_gen, temperature=0)["choices"][0]
    assert got["choices"][0]["text"].endswith(rc["text"])
    assert lp["text_offset"] == sorted(lp["text_offset"]) and lp["text_offset"][0] == 0


def test_completion_string_prompt_offsets(server):
    st, got = post(server, "/v1/completions", {"prompt": "abc de", "max_tokens": 3, "temperature": 0,
                                               "logprobs": 0, "echo": True})
    assert st == 200, got
    c = got["choices"][0]
    text, lp = c["text"], c["logprobs"]
    assert text.startswith("abc de")
    # each token's text sits at its offset (text_offset: UTF-8 byte offsets; ASCII here)
    for tok, off in zip(lp["tokens"], lp["text_offset"]):
        if tok not in ("<s>", "</s>"):
            assert text[off:off + len(tok)] == tok, (tok, off, text)
    assert all(len(t) == 0 for t in lp["top_logprobs"][1:])


def test_chat_logprobs_shape_and_values(server, llm, model):
    body = {"messages": [{"role": "user", "content": "abc"}], "max_tokens": 5, "temperature": 0,
            "logprobs": True, "top_logprobs": 3}
    st, got = post(server, "/v1/chat/completions", body)
    assert st == 200, got
    content = got["choices"][0]["logprobs"]["content"]
    assert len(content) == got["usage"]["completion_tokens"] > 0
    for e in content:
        assert set(e) == {"token", "logprob", "bytes", "top_logprobs"}
        assert bytes(e["bytes"]).decode("utf-8", "replace") == e["token"]
        assert len(e["top_logprobs"]) == 3
        tops = [t["logprob"] for t in e["top_logprobs"]]
        assert tops == sorted(tops, reverse=True)
        assert e["logprob"] == pytest.approx(tops[0], abs=1e-6)  # greedy: the top token
        assert e["token"] == e["top_logprobs"][0]["token"]
    # streamed: the same records, chunk by chunk
    st, _, data = server.request("POST", "/v1/chat/completions", json.dumps(dict(body, stream=True)),
                                 {"Content-Type": "application/json"})
    streamed = []
    for line in data.decode().splitlines():
        if line.startswith("data: {"):
            ch = json.loads(line[6:])["choices"]
            if ch and ch[0]["logprobs"]:
                streamed += ch[0]["logprobs"]["content"]
    assert streamed == content


def test_completion_stream_equals_non_stream(server):
    body = {"prompt": [PROMPT], "max_tokens": 5, "temperature": 0, "logprobs": 2, "echo": True}
    st, full = post(server, "/v1/completions", body)
    st, _, data = server.request("POST", "/v1/completions", json.dumps(dict(body, stream=True)),
                                 {"Content-Type": "application/json"})
    keys = ("tokens", "token_logprobs", "top_logprobs", "text_offset")
    acc = {k: [] for k in keys}
    text = ""
    for line in data.decode().splitlines():
        if line.startswith("data: {"):
            c = json.loads(line[6:])["choices"][0]
            text += c["text"]
            if c["logprobs"]:
                for k in keys:
                    acc[k] += c["logprobs"][k]
    assert text == full["choices"][0]["text"]
    assert acc == {k: full["choices"][0]["logprobs"][k] for k in keys}


def test_logprobs_match_direct_logits(server, llm):
    """The generated tokens' logprobs are the log-softmax of the raw logits at temperature 1.5 too
    (sampling settings do not change them)."""
    st, got = post(server, "/v1/completions", {"prompt": [PROMPT], "max_tokens": 3, "temperature": 1.5,
                                               "seed": 7, "logprobs": 1, "echo": True})
    assert st == 200, got
    lp = got["choices"][0]["logprobs"]
    llm.reset()
    llm.eval(PROMPT)
    ref = log_softmax(np.array(llm.scores[:len(PROMPT)]))
    ours = lp["token_logprobs"][1:len(PROMPT)]
    theirs = [ref[i - 1, PROMPT[i]] for i in range(1, len(PROMPT))]
    np.testing.assert_allclose(ours, theirs, atol=TOL)


@pytest.mark.parametrize("path,body,param", [
    ("/v1/chat/completions", {"top_logprobs": 2}, "top_logprobs"),
    ("/v1/chat/completions", {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ("/v1/chat/completions", {"logprobs": 3}, "logprobs"),
    ("/v1/completions", {"logprobs": 21}, "logprobs"),
    ("/v1/completions", {"logprobs": -1}, "logprobs"),
    ("/v1/completions", {"echo": "yes"}, "echo"),
])
def test_logprobs_errors(server, path, body, param):
    base = {"messages": [{"role": "user", "content": "a"}]} if "chat" in path else {"prompt": "a"}
    st, got = post(server, path, dict(base, max_tokens=1, **body))
    assert st == 400 and got["error"]["param"] == param, got


# ------------------------------------------------------------------ lm-evaluation-harness client

class LlamaCppTokenizer:
    """A tiktoken-shaped tokenizer (encode / decode / decode_batch / eot_token) over the model's own
    vocabulary (llama-cpp-python, vocab_only) for lm-eval's TemplateAPI: the tiny model has no
    Hugging Face tokenizer files to load. No BOS, as lm-eval's encode."""

    def __init__(self, model):
        import llama_cpp
        self.llm = llama_cpp.Llama(model_path=model, vocab_only=True, verbose=False)
        self.eot_token = self.llm.token_bos()

    def encode(self, s):
        return self.llm.tokenize(s.encode(), add_bos=False, special=False)

    def encode_batch(self, strings):
        return [self.encode(s) for s in strings]

    def decode(self, ids):
        return self.llm.detokenize(ids).decode("utf-8", "replace")

    def decode_batch(self, batch):
        return [self.decode(ids) for ids in batch]


@pytest.fixture(scope="module")
def lm_eval_lm(server, model):
    llama_cpp_or_skip()
    oc = pytest.importorskip("lm_eval.models.openai_completions",
                             reason="lm_eval is not installed (scripts/setup.sh --test installs it)")
    lm = oc.LocalCompletionsAPI(base_url=server.base_url + "/v1/completions", model="tiny",
                                tokenizer_backend=None, eos_string="</s>", max_retries=1, max_gen_toks=8)
    lm.tokenizer_backend = "tiktoken"  # its encode / decode_batch calls fit LlamaCppTokenizer
    lm.tokenizer = LlamaCppTokenizer(model)
    lm.tokenized_requests = True  # token-id prompts: [[ids]] with echo + logprobs
    return lm


LL_REQUESTS = [("abc de", " fgh"), ("the cat sat on", " the mat"), ("", "hello"), ("x y z ", "w")]


def test_lm_eval_loglikelihood_equals_direct(lm_eval_lm, llm):
    from lm_eval.api.instance import Instance
    reqs = [Instance(request_type="loglikelihood", doc={}, arguments=a, idx=i) for i, a in enumerate(LL_REQUESTS)]
    got = lm_eval_lm.loglikelihood(reqs)
    tok = lm_eval_lm.tokenizer
    for (ctx, cont), (ll, greedy) in zip(LL_REQUESTS, got):
        # lm-eval's split: trailing spaces of the context go to the continuation; an empty
        # context is the prefix token alone
        n_sp = len(ctx) - len(ctx.rstrip())
        if n_sp:
            ctx, cont = ctx[:-n_sp], ctx[-n_sp:] + cont
        whole = tok.encode(ctx + cont)
        ctx_ids = tok.encode(ctx) if ctx else [tok.eot_token]
        cont_ids = whole[len(ctx_ids):] if ctx else tok.encode(cont)
        ids = ctx_ids + cont_ids
        llm.reset()
        llm.eval(ids)
        lp = log_softmax(np.array(llm.scores[:len(ids)]))
        pos = range(len(ctx_ids) - 1, len(ids) - 1)
        ref = sum(lp[p, ids[p + 1]] for p in pos)
        ref_greedy = all(int(np.argmax(lp[p])) == ids[p + 1] for p in pos)
        assert ll == pytest.approx(ref, abs=TOL * len(cont_ids)), (ctx, cont, ll, ref)
        assert greedy == ref_greedy, (ctx, cont)


def test_lm_eval_generate_until_equals_direct(lm_eval_lm, llm):
    from lm_eval.api.instance import Instance
    args = [("abc de", {"until": ["\n\n"], "max_gen_toks": 6, "do_sample": False}),
            ("the cat", {"until": ["zz"], "max_gen_toks": 4, "temperature": 0})]
    reqs = [Instance(request_type="generate_until", doc={}, arguments=a, idx=i) for i, a in enumerate(args)]
    got = lm_eval_lm.generate_until(reqs)
    tok = lm_eval_lm.tokenizer
    for (ctx, kw), text in zip(args, got):
        # greedy on llama.cpp's logits; the bytes as text with invalid UTF-8 replaced by U+FFFD (as
        # the server sends it; llama-cpp-python's own completion drops such bytes), cut at a stop
        ids = tok.encode(ctx)
        llm.reset()
        llm.eval(ids)
        gen, cut = [], True
        for _ in range(kw["max_gen_toks"]):
            t = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            if t == llm.token_eos():
                cut = False
                break
            gen.append(t)
            llm.eval([t])
        raw = llm.detokenize(gen, prev_tokens=ids)
        if cut:  # cut by max_tokens: the server drops a UTF-8 sequence the next token could finish
            raw = raw[:len(raw) - incomplete_tail(raw)]
        ref = raw.decode("utf-8", "replace")
        for stop in kw["until"]:
            ref = ref.split(stop)[0]
        assert text == ref, (ctx, text, ref)
