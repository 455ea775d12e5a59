"""Long context: a Llama-3.2-1B-shaped model past 4096 positions, llama3c vs llama.cpp.

Model: tools/make_shaped_gguf.py --preset llama3.2-1b --layers 1 --type Q8_0 --data random:
the real Llama 3.2 1B dimensions (vocab 128256, n_embd 2048, 32 heads, 8 kv heads, head_dim 64,
n_ff 8192, rope theta 500000, tied embeddings, rope_freqs with Meta's llama3 factors: factor 32,
low 1, high 4, original context 8192), one layer, random Q8_0 weights (block scale 0.0003: weight
std ~0.022 ~ 1/sqrt(2048), so attention is neither uniform nor one-hot). 347 MB, written in ~4 s.

Prompt: BOS + 4199 seeded random ids, evaluated once as one sequence; logits compared at early
positions and at positions around and past 4096 (the positions where a wrapped / truncated
position, a float32 angle, or a wrong rope_freqs factor would show). llama3c writes only those
rows (`eval --positions`); llama.cpp (llama-cpp-python, logits_all off) is evaluated in chunks
that end at those positions and its last-row logits are read each time.

Metric: nmax = max|ours - peer| / rms(peer), nrms = rms(ours - peer) / rms(peer) per position.
Measured (docs/TESTING.md): nmax 0.064-0.074, nrms 0.014-0.017 at every position, early and past
4096 alike (both engines quantize activations to 8 bits for Q8_0 weights). Tolerance: nmax 0.15,
nrms 0.03 (2x). Runtime ~45 s on 2 cores (llama3c ~14 s, llama.cpp ~23 s).
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, run_cli

pytestmark = pytest.mark.slow

N = 4200
POSITIONS = [3, 200, 1500, 4000, 4095, 4096, 4097, 4150, 4199]
TOL_NMAX, TOL_NRMS = 0.15, 0.03


@pytest.fixture(scope="module")
def shaped(model_dir):
    path = os.path.join(str(model_dir), "llama3.2-1b-shaped-1layer-q8_0.gguf")
    if not os.path.exists(path):
        subprocess.run([sys.executable, os.path.join(REPO, "tools", "make_shaped_gguf.py"), "--preset",
                        "llama3.2-1b", "--layers", "1", "--type", "Q8_0", "--data", "random", "--block-scale",
                        "0.0003", path], check=True, capture_output=True, timeout=300)
    return path


def test_past_4096_matches_llama_cpp(llama3c, shaped, tmp_path):
    try:
        import llama_cpp
    except ImportError as e:
        pytest.skip(f"llama-cpp-python is not importable ({e}); the long-context peer comparison needs it")
    ids = [128000] + [int(x) for x in np.random.default_rng(0).integers(0, 128000, N - 1)]
    idf, out = tmp_path / "ids.txt", tmp_path / "logits.f32"
    idf.write_text(" ".join(map(str, ids)))
    run_cli("eval", "-m", shaped, "--ids-file", idf, "--positions", " ".join(map(str, POSITIONS)),
            "--logits-out", out, "--ctx", N, "-t", 2, timeout=600)
    ours = np.fromfile(out, dtype="<f4").reshape(len(POSITIONS), -1).astype(np.float64)
    assert ours.shape[1] == 128256

    llm = llama_cpp.Llama(model_path=shaped, n_ctx=N + 64, n_batch=512, logits_all=False, verbose=False,
                          n_threads=2)
    peer, prev = [], 0
    for p in POSITIONS:
        llm.eval(ids[prev:p + 1])
        row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(llm.n_vocab(),))
        peer.append(row.astype(np.float64))
        prev = p + 1
    assert llm.n_tokens == N

    report, bad = [], []
    for k, p in enumerate(POSITIONS):
        d = np.abs(ours[k] - peer[k])
        scale = float(np.sqrt(np.mean(peer[k] ** 2)))
        nmax, nrms = float(d.max()) / scale, float(np.sqrt(np.mean(d * d))) / scale
        report.append(f"pos {p}: nmax {nmax:.4f} nrms {nrms:.4f} argmax {'=' if ours[k].argmax() == peer[k].argmax() else '!='}")
        if nmax > TOL_NMAX or nrms > TOL_NRMS:
            bad.append(p)
    print("\n".join(report))
    assert not bad, f"positions {bad} beyond nmax {TOL_NMAX} / nrms {TOL_NRMS}:\n" + "\n".join(report)


def test_eval_positions_rows_equal_all_rows(llama3c, tiny_model, tmp_path):
    """`eval --positions` writes exactly the --all rows it names, in the order given (repeats allowed)."""
    from gen_models import ModelSpec
    from conftest import eval_logits

    path = tiny_model("positions", ModelSpec(), "F32")
    ids = [1] + list(range(10, 40))
    full = eval_logits(path, ids, tmp_path)
    sel = [30, 0, 7, 7, 15]
    out = tmp_path / "sel.f32"
    run_cli("eval", "-m", path, "--ids", " ".join(map(str, ids)), "--positions", ",".join(map(str, sel)),
            "--logits-out", out, "--batch", 8)
    got = np.fromfile(out, dtype="<f4").reshape(len(sel), -1)
    np.testing.assert_array_equal(got, full[sel])
    for bad in ("31", "-1", "x", ""):
        p = run_cli("eval", "-m", path, "--ids", "1 2 3", "--positions", bad, "--logits-out", out, check=False)
        assert p.returncode == 2 and "--positions" in p.stderr, p.stderr
