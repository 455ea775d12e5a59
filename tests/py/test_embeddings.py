"""Embeddings (`llama3c embed`, l3c_get_embeddings*) against independent references.

References:
  - the float64 numpy reference (ref_forward.RefModel.hidden: the final-normed hidden state),
    pooled here (mean / first / last / every token) over the ids llama.cpp's tokenizer gives;
  - llama-cpp-python: Llama(embedding=True, pooling_type=...).embed(text, normalize=...), which
    tokenizes with add_bos (the vocabulary's add_bos_token) and no special parsing, as we do.

Metric per vector: cosine similarity and nmax = max|ours - ref| / max|ref|. Measured (2 threads,
F16 KV cache; docs/TESTING.md), worst over 3 inputs and the four poolings:
  tiny F32 / F16:   vs reference cos >= 0.9999987, nmax <= 7.9e-4; vs llama.cpp cos >= 0.9999972,
                    nmax <= 1.5e-3
  tiny Q8_0 / Q4_0: vs reference cos >= 0.99831, nmax <= 0.040 (llama.cpp itself: 0.99855 / 0.034);
                    vs llama.cpp cos >= 0.99963, nmax <= 0.023
  SmolLM2 Q4_1:     vs llama.cpp pooled cos >= 0.99977, nmax <= 0.0125; per token cos >= 0.9980,
                    nmax <= 0.031
Tolerances below leave 2-3x headroom; the wrong hidden state (before output_norm) or a wrong
pooling is far outside them (cos < 0.9). The engine is batch invariant, so N inputs in one run
equal N single runs bitwise, whatever -b.
"""
import json
import os
import re

import numpy as np
import pytest

from conftest import THREADS, llama_cpp_or_skip, run_cli
from gen_models import ModelSpec
from ref_forward import RefModel

POOLINGS = ["mean", "cls", "last", "none"]
SPEC = ModelSpec(n_embd=192, n_layer=2, n_head=6, n_head_kv=2, n_ff=384, n_vocab=320, tied=False, seed=11)
TINY_TEXTS = ["hello world", "the quick brown fox jumps over the lazy dog and runs far away", "a"]
SMOL_TEXTS = ["Hello world", "The quick brown fox jumps over the lazy dog. " * 3, "a",
              "Embeddings map text to vectors; similar texts get similar vectors."]

# (cos_min, nmax_max) per comparison
TOL_FLOAT_REF = (0.99999, 3e-3)
TOL_FLOAT_LCPP = (0.99999, 5e-3)
TOL_QUANT_REF = (0.996, 0.08)
TOL_QUANT_LCPP = (0.999, 0.05)
TOL_SMOL_POOLED = (0.999, 0.03)
TOL_SMOL_TOKENS = (0.995, 0.08)


def embed(model, texts, tmp_path, pooling="mean", normalize=False, extra=(), fmt="npy"):
    """Runs `llama3c embed -f` on the texts (one per line); returns (array, stderr)."""
    src = tmp_path / "inputs.txt"
    src.write_text("".join(t + "\n" for t in texts))
    out = tmp_path / f"out.{fmt}"
    args = ["embed", "-m", model, "-f", src, "--pooling", pooling, "--format", fmt, "-o", out, "-t", THREADS]
    if normalize:
        args.append("--normalize")
    p = run_cli(*args, *extra)
    if fmt == "npy":
        return np.load(out), p.stderr
    return json.loads(out.read_text()), p.stderr


def compare(ours, ref):
    """(min cosine, nmax) over the rows of two [n, dim] arrays."""
    ours = np.asarray(ours, np.float64).reshape(-1, np.shape(ref)[-1])
    ref = np.asarray(ref, np.float64).reshape(ours.shape)
    cos = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    return float(cos.min()), float(np.abs(ours - ref).max() / np.abs(ref).max())


def check(ours, ref, tol, what):
    cos, nmax = compare(ours, ref)
    assert cos >= tol[0] and nmax <= tol[1], f"{what}: cos {cos:.7f} (min {tol[0]}), nmax {nmax:.3g} (max {tol[1]})"


def lcpp_embed(path, texts, pooling, normalize):
    """llama.cpp's vectors (pooled: [n, dim]; none: all tokens [T, dim]) and its token ids."""
    llama_cpp = llama_cpp_or_skip()
    pt = {"mean": llama_cpp.LLAMA_POOLING_TYPE_MEAN, "cls": llama_cpp.LLAMA_POOLING_TYPE_CLS,
          "last": llama_cpp.LLAMA_POOLING_TYPE_LAST, "none": llama_cpp.LLAMA_POOLING_TYPE_NONE}[pooling]
    llm = llama_cpp.Llama(model_path=path, embedding=True, pooling_type=pt, n_ctx=256, n_batch=256,
                          n_threads=THREADS, verbose=False)
    vecs = [np.asarray(llm.embed(t, normalize=normalize), np.float64) for t in texts]
    toks = [llm.tokenize(t.encode()) for t in texts]
    del llm
    return (np.concatenate(vecs) if pooling == "none" else np.stack(vecs)), toks


def pool(h, pooling):
    return {"mean": lambda: h.mean(0), "cls": lambda: h[0], "last": lambda: h[-1], "none": lambda: h}[pooling]()


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("wtype", ["F32", "F16", "Q8_0", "Q4_0"])
def test_tiny_vs_reference_and_llama_cpp(llama3c, tiny_model, tmp_path, wtype, pooling):
    path = tiny_model("embd", SPEC, wtype)
    quant = wtype.startswith("Q")
    ours, err = embed(path, TINY_TEXTS, tmp_path, pooling)
    peer, toks = lcpp_embed(path, TINY_TEXTS, pooling, normalize=False)
    n_tok = sum(len(t) for t in toks)
    assert f"{len(TINY_TEXTS)} inputs, {n_tok} tokens" in err, f"token count differs from llama.cpp's: {err}"
    ref = RefModel(path)
    want = [pool(ref.hidden(t), pooling) for t in toks]
    want = np.concatenate(want) if pooling == "none" else np.stack(want)
    assert ours.shape == want.shape == peer.shape and ours.dtype == np.float32
    check(ours, want, TOL_QUANT_REF if quant else TOL_FLOAT_REF, f"{wtype} {pooling} vs float64 reference")
    check(ours, peer, TOL_QUANT_LCPP if quant else TOL_FLOAT_LCPP, f"{wtype} {pooling} vs llama.cpp")


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("pooling", POOLINGS)
def test_smollm2_vs_llama_cpp(llama3c, smollm2_path, tmp_path, pooling, normalize):
    ours, _ = embed(smollm2_path, SMOL_TEXTS, tmp_path, pooling, normalize)
    peer, _ = lcpp_embed(smollm2_path, SMOL_TEXTS, pooling, normalize)
    assert ours.shape == peer.shape
    check(ours, peer, TOL_SMOL_TOKENS if pooling == "none" else TOL_SMOL_POOLED,
          f"SmolLM2 {pooling} normalize={normalize} vs llama.cpp")
    if normalize:
        assert np.allclose(np.linalg.norm(ours.astype(np.float64), axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_batch_of_inputs_equals_single_inputs(llama3c, smollm2_path, tmp_path, pooling):
    """All inputs in one run (sharing decode batches) == each alone, bitwise; and -b 7 (inputs
    split over several decode calls) == the default batch, bitwise."""
    together, _ = embed(smollm2_path, SMOL_TEXTS, tmp_path, pooling)
    alone = np.concatenate([embed(smollm2_path, [t], tmp_path, pooling)[0] for t in SMOL_TEXTS])
    assert np.array_equal(together, alone), f"{pooling}: one run of {len(SMOL_TEXTS)} inputs != single runs"
    small, _ = embed(smollm2_path, SMOL_TEXTS, tmp_path, pooling, extra=("-b", 7))
    assert np.array_equal(together, small), f"{pooling}: -b 7 != -b 512"


def test_json_equals_npy_and_normalize(llama3c, smollm2_path, tmp_path):
    npy, _ = embed(smollm2_path, SMOL_TEXTS[:2], tmp_path, "mean", normalize=True)
    js, _ = embed(smollm2_path, SMOL_TEXTS[:2], tmp_path, "mean", normalize=True, fmt="json")
    assert np.array_equal(np.asarray(js, np.float32), npy), "JSON (9 digits) must round-trip float32 exactly"
    tok, _ = embed(smollm2_path, SMOL_TEXTS[:2], tmp_path, "none", fmt="json")
    assert [len(x) for x in tok] == [2, 31] and all(len(v) == 576 for x in tok for v in x)
    raw, _ = embed(smollm2_path, SMOL_TEXTS[:2], tmp_path, "mean")
    unit = raw / np.linalg.norm(raw.astype(np.float64), axis=1, keepdims=True)
    assert np.abs(unit - npy).max() < 1e-6


def test_cli_single_prompt_and_stdout(llama3c, smollm2_path, tmp_path):
    p = run_cli("embed", "-m", smollm2_path, "-p", SMOL_TEXTS[0], "-t", THREADS)
    from_p = np.asarray(json.loads(p.stdout), np.float32)
    from_f, _ = embed(smollm2_path, SMOL_TEXTS[:1], tmp_path)
    assert from_p.shape == (1, 576) and np.array_equal(from_p, from_f)


def test_cli_truncate(llama3c, tiny_model, tmp_path):
    path = tiny_model("embd", SPEC, "F32")
    long_text = " ".join(["abc"] * 400)  # > the tiny model's 256-token context
    p = run_cli("embed", "-m", path, "-p", long_text, check=False)
    assert p.returncode == 1 and re.search(r"input 1 has \d+ tokens; the context holds 256 "
                                           r"\(--truncate cuts it; -c sets the context\)", p.stderr), p.stderr
    cut, err = embed(path, [long_text], tmp_path, "last", extra=("--truncate",))
    assert "1 inputs, 256 tokens" in err
    llama_cpp = llama_cpp_or_skip()
    toks = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False).tokenize(long_text.encode())[:256]
    check(cut, pool(RefModel(path).hidden(toks), "last")[None], TOL_FLOAT_REF, "--truncate vs reference")


@pytest.mark.parametrize("args,code,msg", [
    (["--pooling", "max"], 2, "--pooling: 'max' is not one of mean, cls, last, none"),
    (["--format", "csv"], 2, "--format: 'csv' is not one of json, npy"),
    (["-b", "0"], 2, "-b: '0' is not an integer in [1, 1048576]"),
    (["--bogus"], 2, "unknown option '--bogus'"),
    (["-p", "x", "-f", "y"], 2, "give either -p or -f, not both"),
    (["-f", "/nonexistent/in.txt"], 1, "cannot open '/nonexistent/in.txt'"),
])
def test_cli_errors(llama3c, smollm2_path, args, code, msg):
    p = run_cli("embed", "-m", smollm2_path, *args, check=False)
    assert p.returncode == code and msg in p.stderr, (p.returncode, p.stderr)


def test_cli_error_inputs(llama3c, smollm2_path, tmp_path):
    p = run_cli("embed", "-p", "x", check=False)
    assert p.returncode == 2 and "a model is required (-m MODEL)" in p.stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    p = run_cli("embed", "-m", smollm2_path, "-f", empty, check=False)
    assert p.returncode == 2 and f"'{empty}' has no input lines" in p.stderr, p.stderr
    blank = tmp_path / "blank.txt"
    blank.write_text("hello\n\nworld\n")  # a blank line is skipped with a note (issue #24)
    p = run_cli("embed", "-m", smollm2_path, "-f", blank)
    assert "skipped 1 blank line (line 2)" in p.stderr and len(json.loads(p.stdout)) == 2, p.stderr
    p = run_cli("embed", "-m", smollm2_path, "-p", "", check=False)  # SmolLM2 adds no BOS: no tokens
    assert p.returncode == 1 and "input 1 gives no tokens" in p.stderr, p.stderr
    p = run_cli("embed", "-m", "/nonexistent.gguf", "-p", "x", check=False)
    assert p.returncode == 1 and "cannot load model '/nonexistent.gguf'" in p.stderr, p.stderr


# ------------------------------------------------------------------ server: POST /v1/embeddings

SERVER_CTX = 256


@pytest.fixture(scope="module")
def server(llama3c, smollm2_path):
    from server_util import Server
    yield from Server(smollm2_path, "--parallel", 4, "--ctx", SERVER_CTX, "--batch", 64).serving()


@pytest.fixture(scope="module")
def cli_unit(llama3c, smollm2_path, tmp_path_factory):
    """The CLI's normalized mean vectors of SMOL_TEXTS (float32)."""
    return embed(smollm2_path, SMOL_TEXTS, tmp_path_factory.mktemp("cli"), "mean", normalize=True)[0]


def post(server, body):
    return server.post_json("/v1/embeddings", body)


def vectors(resp):
    assert resp["object"] == "list" and [d["index"] for d in resp["data"]] == list(range(len(resp["data"])))
    assert all(d["object"] == "embedding" for d in resp["data"])
    return np.asarray([d["embedding"] for d in resp["data"]], np.float32)


def token_ids(smollm2_path, text):
    p = run_cli("tokenize", "-m", smollm2_path, "-p", text, "--ids")
    return [int(x) for x in p.stdout.split()]


def test_server_equals_cli(server, cli_unit, smollm2_path):
    st, r = post(server, {"model": "m", "input": SMOL_TEXTS})
    assert st == 200, r
    assert np.array_equal(vectors(r), cli_unit), "server vectors != `llama3c embed --normalize` (bitwise)"
    n_tok = sum(len(token_ids(smollm2_path, t)) for t in SMOL_TEXTS)
    assert r["usage"] == {"prompt_tokens": n_tok, "total_tokens": n_tok}
    assert r["model"] == "SmolLM2-135M-Instruct.Q4_1"  # the served name, not the one asked for
    st, one = post(server, {"input": SMOL_TEXTS[1]})  # a single string; model defaults to the file's
    assert st == 200 and np.array_equal(vectors(one)[0], cli_unit[1])
    assert one["model"] == "SmolLM2-135M-Instruct.Q4_1"
    # token ids: one list, or a list of lists, equal the text inputs
    ids = [token_ids(smollm2_path, t) for t in SMOL_TEXTS[:2]]
    st, r1 = post(server, {"input": ids[1]})
    st2, r2 = post(server, {"input": ids})
    assert st == st2 == 200 and np.array_equal(vectors(r1)[0], cli_unit[1])
    assert np.array_equal(vectors(r2), cli_unit[:2])


def test_server_base64_dimensions_and_openai_client(server, cli_unit, smollm2_path):
    import base64
    import openai
    st, r = post(server, {"input": SMOL_TEXTS, "encoding_format": "base64"})
    assert st == 200
    got = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in r["data"]])
    assert np.array_equal(got, cli_unit)
    # dimensions: the first N of the raw vector, re-normalized (Matryoshka style)
    st, r = post(server, {"input": SMOL_TEXTS, "dimensions": 64})
    v = vectors(r).astype(np.float64)
    assert st == 200 and v.shape == (len(SMOL_TEXTS), 64)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-6)
    cut = cli_unit[:, :64].astype(np.float64)
    assert np.abs(v - cut / np.linalg.norm(cut, axis=1, keepdims=True)).max() < 1e-6
    # the openai client (it asks for base64 and decodes it)
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=120)
    e = client.embeddings.create(model="any", input=SMOL_TEXTS)
    assert np.array_equal(np.asarray([d.embedding for d in e.data], np.float32), cli_unit)
    assert e.usage.prompt_tokens == e.usage.total_tokens > 0
    e = client.embeddings.create(model="any", input=SMOL_TEXTS[0], encoding_format="float", dimensions=8)
    assert len(e.data) == 1 and len(e.data[0].embedding) == 8


def test_server_concurrent_requests_share_batches(server, cli_unit):
    """8 concurrent requests (2 inputs each, with a greedy chat running beside them) equal the
    serial answers bitwise; the batches carried several sequences at once."""
    from concurrent.futures import ThreadPoolExecutor
    chat = {"messages": [{"role": "user", "content": "Name three colours."}], "max_tokens": 24, "temperature": 0}
    st, alone = server.post_json("/v1/chat/completions", chat)
    assert st == 200
    before = server.metrics()
    jobs = [[SMOL_TEXTS[i % 4], SMOL_TEXTS[(i + 1) % 4]] for i in range(8)]
    with ThreadPoolExecutor(9) as ex:
        chat_f = ex.submit(server.post_json, "/v1/chat/completions", chat)
        futs = [ex.submit(post, server, {"input": j}) for j in jobs]
        res = [f.result() for f in futs]
        st, busy = chat_f.result()
    assert st == 200 and busy["choices"][0]["message"]["content"] == alone["choices"][0]["message"]["content"]
    for i, (st, r) in enumerate(res):
        assert st == 200, r
        assert np.array_equal(vectors(r), cli_unit[[i % 4, (i + 1) % 4]]), f"request {i} differs"
    after = server.metrics()
    steps = after["llama3c_decode_steps_total"] - before["llama3c_decode_steps_total"]
    toks = after["llama3c_batch_tokens_total"] - before["llama3c_batch_tokens_total"]
    assert toks / steps > 2, f"{toks} tokens in {steps} steps: the requests were not batched together"
    assert after['llama3c_requests_total{endpoint="/v1/embeddings",status="200"}'] >= 8


def test_server_truncate(server, smollm2_path):
    text = "word " * 400  # > 256 tokens
    st, r = post(server, {"input": ["ok", text]})
    assert st == 400 and r["error"]["code"] == "context_length_exceeded" and r["error"]["param"] == "input"
    assert re.fullmatch(r"'input\[1\]' has \d+ tokens; the context holds 256 per input \(\"truncate\": true "
                        r"cuts it\)", r["error"]["message"]), r
    st, r = post(server, {"input": text, "truncate": True})
    assert st == 200 and r["usage"]["prompt_tokens"] == SERVER_CTX
    st, want = post(server, {"input": token_ids(smollm2_path, text)[:SERVER_CTX]})
    assert st == 200 and np.array_equal(vectors(r), vectors(want))


N_VOCAB = 49152


@pytest.mark.parametrize("body,param,msg", [
    ({}, "input", "'input' is a required property"),
    ({"input": None}, "input", "'input' is a required property"),
    ({"input": ""}, "input", "'input[0]' is an empty string"),
    ({"input": ["a", ""]}, "input", "'input[1]' is an empty string"),
    ({"input": []}, "input", "'input' must not be an empty array"),
    ({"input": [[]]}, "input", "'input[0]' is an empty array of token ids"),
    ({"input": 5}, "input", "'input' must be a string, an array of strings, an array of token ids or an array "
                            "of arrays of token ids"),
    ({"input": {"text": "a"}}, "input", "'input' must be a string, an array of strings, an array of token ids "
                                        "or an array of arrays of token ids"),
    ({"input": ["a", 1]}, "input", "'input' must be a string, an array of strings, an array of token ids or an "
                                   "array of arrays of token ids (input[1] is neither)"),
    ({"input": [["a"]]}, "input", "'input' must be a string, an array of strings, an array of token ids or an "
                                  "array of arrays of token ids (input[0] is neither)"),
    ({"input": [1, "a"]}, "input", f"'input' token ids must be integers between 0 and {N_VOCAB - 1}"),
    ({"input": [-1]}, "input", f"'input' token ids must be integers between 0 and {N_VOCAB - 1}"),
    ({"input": [[N_VOCAB]]}, "input", f"'input' token ids must be integers between 0 and {N_VOCAB - 1}"),
    ({"input": ["a"] * 2049}, "input", "'input' may hold at most 2048 inputs"),
    ({"input": "a", "encoding_format": "int8"}, "encoding_format", "'encoding_format' must be 'float' or 'base64'"),
    ({"input": "a", "dimensions": 0}, "dimensions", "'dimensions' must be between 1 and 576"),
    ({"input": "a", "dimensions": 577}, "dimensions", "'dimensions' must be between 1 and 576"),
    ({"input": "a", "dimensions": "8"}, "dimensions", "'dimensions' must be an integer"),
    ({"input": "a", "truncate": "yes"}, "truncate", "'truncate' must be a boolean"),
    ({"input": "a", "model": 3}, "model", "'model' must be a string"),
    ([1, 2], None, "the body must be a JSON object"),
])
def test_server_hostile_inputs(server, body, param, msg):
    st, r = post(server, body)
    assert st == 400, r
    assert r["error"] == {"message": msg, "type": "invalid_request_error", "param": param, "code": None}, r


def test_server_http_errors(server):
    st, h, _ = server.request("GET", "/v1/embeddings")
    assert st == 405 and h["allow"] == "POST, OPTIONS"
    st, _, data = server.request("POST", "/v1/embeddings", b"{not json")
    assert st == 400 and b"the body is not valid JSON" in data
    st, _, data = server.request("POST", "/v1/embeddings", b"")
    assert st == 400 and b"the request body is empty" in data
    assert server.health()[1]["slots_processing"] == 0


def test_server_pooling_option(llama3c, smollm2_path, tmp_path):
    from server_util import Server
    want, _ = embed(smollm2_path, SMOL_TEXTS, tmp_path, "last", normalize=True)
    with Server(smollm2_path, "--parallel", 2, "--ctx", 128, "--pooling", "last") as srv:
        st, r = post(srv, {"input": SMOL_TEXTS})
        assert st == 200 and np.array_equal(vectors(r), want)
    p = run_cli("serve", "-m", smollm2_path, "--pooling", "none", check=False, timeout=60)
    assert p.returncode == 2 and "--pooling expects mean, cls or last, got 'none'" in p.stderr, p.stderr
