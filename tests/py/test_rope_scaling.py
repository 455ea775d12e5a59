"""RoPE scaling metadata: llama.rope.scaling.type / .factor (and the older rope.scale_linear).

- "linear" (and a factor without a type, which llama.cpp reads as linear): positions scaled by
  1 / factor; llama3c's logits vs the float64 reference (ref_forward.py, which models it
  independently) at F32 tolerances (test_forward_ref.py's: nmax 0.01, nrms 0.002), and vs
  llama.cpp when llama-cpp-python is importable. The unscaled reference must be far from
  llama3c's output (nmax > 0.1), so ignoring the factor cannot pass.
- "none": no scaling whatever the factor (llama.cpp: "never scale if scaling type is none").
- yarn, longrope and unknown types are refused: `info` / `run` exit non-zero with an error that
  names the file, the key and the value (never a crash, never silently ignored).
- a negative or non-finite factor is a format error naming the key.
"""
import numpy as np
import pytest

from conftest import eval_logits, llama_cpp_or_skip, run_cli
from gen_models import ModelSpec
from ref_forward import RefModel

BASE = dict(n_embd=128, n_layer=2, n_head=4, n_head_kv=2, n_ff=256, n_vocab=320, theta=10000.0, seed=5)
PROMPT = [1] + [int(x) for x in np.random.default_rng(3).integers(3, 320, 47)]


def stats(ours, ref):
    d = np.abs(np.asarray(ours, dtype=np.float64) - ref)
    scale = float(np.sqrt(np.mean(ref * ref)))
    return float(d.max()) / scale, float(np.sqrt(np.mean(d * d))) / scale


@pytest.mark.parametrize("name,kv,scaled", [
    ("linear4", (("llama.rope.scaling.type", "linear"), ("llama.rope.scaling.factor", 4.0)), True),
    ("untyped_factor4", (("llama.rope.scaling.factor", 4.0),), True),
    ("legacy_scale_linear4", (("llama.rope.scale_linear", 4.0),), True),
    ("none_factor4", (("llama.rope.scaling.type", "none"), ("llama.rope.scaling.factor", 4.0)), False),
])
def test_linear_and_none_vs_reference(llama3c, tiny_model, tmp_path, name, kv, scaled):
    path = tiny_model(f"rope_{name}", ModelSpec(**BASE, kv=kv), "F32")
    ref = RefModel(path)
    assert ref.freq_scale == (0.25 if scaled else 1.0)
    want = ref.forward(PROMPT)
    ours = eval_logits(path, PROMPT, tmp_path)
    nmax, nrms = stats(ours, want)
    assert nmax < 0.01 and nrms < 0.002, f"{name}: nmax {nmax:.5f} nrms {nrms:.5f}"
    ref.freq_scale = 1.0 if scaled else 0.25  # the other reading must be clearly wrong
    nmax_other, _ = stats(ours, ref.forward(PROMPT))
    assert nmax_other > 0.1, f"{name}: the test cannot tell scaled from unscaled ({nmax_other:.4f})"
    llama_cpp = llama_cpp_or_skip()
    llm = llama_cpp.Llama(model_path=path, n_ctx=64, logits_all=True, verbose=False, n_threads=2)
    llm.eval(PROMPT)
    peer = np.array(llm.scores[:len(PROMPT)], dtype=np.float64)
    nmax_cpp, nrms_cpp = stats(ours, peer)
    assert nmax_cpp < 0.02 and nrms_cpp < 0.004, f"{name} vs llama.cpp: nmax {nmax_cpp:.5f} nrms {nrms_cpp:.5f}"


@pytest.mark.parametrize("stype", ["yarn", "longrope", "llama3", "dynamic", "su"])  # llama3: no rope_freqs
def test_unimplemented_types_refused(llama3c, tiny_model, stype):
    kv = (("llama.rope.scaling.type", stype), ("llama.rope.scaling.factor", 4.0))
    path = tiny_model(f"rope_type_{stype}", ModelSpec(**BASE, kv=kv), "F32")
    for args in (("info", "-m", path), ("run", "-m", path, "-p", "hi", "-n", "2")):
        p = run_cli(*args, check=False)
        assert p.returncode > 0, f"{args[0]}: exit {p.returncode}\n{p.stderr}"
        assert path in p.stderr and "llama.rope.scaling.type" in p.stderr and f"'{stype}'" in p.stderr, p.stderr
        assert "not supported" in p.stderr, p.stderr


@pytest.mark.parametrize("factor", [-2.0, float("inf"), float("nan")])
def test_bad_factor_is_a_format_error(llama3c, tiny_model, factor):
    kv = (("llama.rope.scaling.type", "linear"), ("llama.rope.scaling.factor", factor))
    path = tiny_model(f"rope_factor_{factor}", ModelSpec(**BASE, kv=kv), "F32")
    p = run_cli("info", "-m", path, check=False)
    assert p.returncode > 0 and path in p.stderr and "llama.rope.scaling.factor" in p.stderr, p.stderr


def test_llama3_type_with_rope_freqs_is_the_rope_freqs_scaling(llama3c, tiny_model, tmp_path):
    """type 'llama3' is accepted where the file has rope_freqs.weight (the factors live there): the
    logits equal those of the same weights without the key, and the factor key is not applied."""
    spec = dict(BASE, n_embd=256, n_head=4, theta=500000.0, rope_freqs=True)
    kv = (("llama.rope.scaling.type", "llama3"), ("llama.rope.scaling.factor", 8.0))
    tagged = tiny_model("rope_llama3_tagged", ModelSpec(**spec, kv=kv), "F32")
    plain = tiny_model("rope_llama3_plain", ModelSpec(**spec), "F32")
    a = eval_logits(tagged, PROMPT, tmp_path)
    b = eval_logits(plain, PROMPT, tmp_path)
    assert np.array_equal(a, b)
    nmax, nrms = stats(a, RefModel(plain).forward(PROMPT))
    assert nmax < 0.01 and nrms < 0.002, f"nmax {nmax:.5f} nrms {nrms:.5f}"
