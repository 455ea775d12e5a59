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
    assert p.returncode == 1 and re.search(r"input 1 has \d+ tokens; the model's context holds 256 "
                                           r"\(--truncate cuts it\)", p.stderr), p.stderr
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
    blank.write_text("hello\n\nworld\n")  # SmolLM2 adds no BOS: an empty line has no tokens
    p = run_cli("embed", "-m", smollm2_path, "-f", blank, check=False)
    assert p.returncode == 1 and "input 2 (line 2) gives no tokens" in p.stderr, p.stderr
    p = run_cli("embed", "-m", "/nonexistent.gguf", "-p", "x", check=False)
    assert p.returncode == 1 and "cannot load model '/nonexistent.gguf'" in p.stderr, p.stderr
