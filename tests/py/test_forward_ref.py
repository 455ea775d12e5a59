"""Forward pass of llama3c vs an independent float64 numpy reference and vs llama.cpp.

Models: tiny random llama GGUFs (tests/py/gen_models.py) in three shapes that cover GQA ratios
1, 3 and 4, tied and untied classifiers, with and without Llama 3.1 rope_freqs, in every weight
type we support. Prompt: BOS + 31 fixed pseudo-random ids, evaluated with `eval --all`.

Metric: differences are normalised by the RMS of the reference logits (logit scales differ
between shapes: ~8 tied, ~2 untied), giving
    nmax = max|ours - ref| / rms(ref)          nrms = rms(ours - ref) / rms(ref)
The reference runs on the file's own dequantized weights, so for quantized types the only
expected difference is the engine's (llama.cpp-style) 8-bit quantization of the activations
(Q8_0 / Q8_K blocks), plus the F16 KV cache. Tolerances were set from llama.cpp's own error
against the same reference on the same files (docs/TESTING.md has the measured figures), with
about 2x headroom; a real bug (wrong rope pairing, GQA mapping, norm, scale) gives nmax > 1.
"""

import json

import numpy as np
import pytest

from conftest import eval_logits, generate_ids, llama_cpp_or_skip, run_cli
from gen_models import LLAMA_CPP_TYPES, ModelSpec
from ref_forward import RefModel

SHAPES = {
    # GQA 1, tied classifier, no rope_freqs; K-quant compatible (rows of 256 / 512)
    "gqa1_tied": ModelSpec(n_embd=256, n_layer=2, n_head=8, n_head_kv=8, n_ff=512, n_vocab=320, seed=1),
    # GQA 4, untied, Llama 3.1 rope_freqs with theta 500000; K-quant compatible
    "gqa4_untied_rf": ModelSpec(n_embd=256, n_layer=2, n_head=8, n_head_kv=2, n_ff=768, n_vocab=320,
                                tied=False, rope_freqs=True, theta=500000.0, seed=7),
    # GQA 3, untied (n_embd 192: not a multiple of 256, so no K-quants)
    "gqa3_untied": ModelSpec(n_embd=192, n_layer=2, n_head=6, n_head_kv=2, n_ff=384, n_vocab=320,
                             tied=False, seed=11),
}
TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
         "Q3_K_M", "Q4_K_M", "Q5_K_M"]
CASES = [(s, t) for s in SHAPES for t in TYPES if not (t in LLAMA_CPP_TYPES and SHAPES[s].n_embd % 256)]

# (nmax, nrms) limits per type; see the module docstring and docs/TESTING.md.
TOL = {
    "F32": (0.01, 0.002),
    "F16": (0.02, 0.004),
    "BF16": (0.12, 0.02),
    "Q8_0": (0.30, 0.06),
    "Q4_0": (0.40, 0.07),
    "Q4_1": (0.40, 0.07),
    "Q5_0": (0.40, 0.07),
    "Q5_1": (0.40, 0.07),
    "Q2_K": (0.45, 0.08),
    "Q3_K": (0.45, 0.08),
    "Q3_K_M": (0.45, 0.08),
    "Q4_K": (0.45, 0.08),
    "Q5_K": (0.45, 0.08),
    "Q6_K": (0.45, 0.08),
    "Q4_K_M": (0.45, 0.08),
    "Q5_K_M": (0.45, 0.08),
    # F16 / BF16 with --bf16: measured nmax 0.046-0.074, nrms 0.008-0.013 (exact F16: 0.004)
    "bf16_matmul": (0.15, 0.03),
}

PROMPT = [1] + [int(x) for x in np.random.default_rng(42).integers(3, 320, 31)]


def compare(ours, ref):
    """Statistics of ours vs ref ([T, V] arrays)."""
    ours = np.asarray(ours, dtype=np.float64)
    d = np.abs(ours - ref)
    scale = float(np.sqrt(np.mean(ref * ref)))
    pos, tok = np.unravel_index(int(np.argmax(d)), d.shape)
    top2 = np.sort(ref, axis=1)[:, -2:]
    return dict(max=float(d.max()), nmax=float(d.max()) / scale, nrms=float(np.sqrt(np.mean(d * d))) / scale,
                scale=scale, at=(int(pos), int(tok)), agree=float(np.mean(ours.argmax(1) == ref.argmax(1))),
                margin=top2[:, 1] - top2[:, 0])


def check(st, wtype, what):
    nmax_tol, nrms_tol = TOL[wtype]
    msg = (f"{what}: max|diff| {st['max']:.5f} at (pos, id) {st['at']} = {st['nmax']:.4f} x rms(ref) "
           f"(tol {nmax_tol}); rms diff {st['nrms']:.5f} x rms(ref) (tol {nrms_tol}); "
           f"rms(ref) {st['scale']:.3f}; argmax agreement {st['agree']:.3f}")
    assert st["nmax"] <= nmax_tol and st["nrms"] <= nrms_tol, msg
    return msg


_ref_cache = {}


def reference(path):
    if path not in _ref_cache:
        _ref_cache[path] = RefModel(path).forward(PROMPT)
    return _ref_cache[path]


@pytest.mark.parametrize("shape,wtype", CASES, ids=[f"{s}-{t}" for s, t in CASES])
def test_logits_vs_reference(llama3c, tiny_model, tmp_path, shape, wtype):
    path = tiny_model(shape, SHAPES[shape], wtype)
    ref = reference(path)
    ours = eval_logits(path, PROMPT, tmp_path)
    assert ours.shape == ref.shape, f"eval --all gave {ours.shape}, expected {ref.shape}"
    assert np.all(np.isfinite(ours)), "non-finite logits"
    st = compare(ours, ref)
    check(st, wtype, f"{shape} {wtype} vs numpy float64 reference")
    # Where the reference's top-2 gap is far above the tolerance, the argmax must agree.
    sure = st["margin"] > 2 * TOL[wtype][0] * st["scale"]
    bad = np.nonzero(sure & (ours.argmax(1) != ref.argmax(1)))[0]
    assert bad.size == 0, f"argmax differs at positions {bad.tolist()} with clear reference margins"


@pytest.mark.parametrize("shape,wtype", CASES, ids=[f"{s}-{t}" for s, t in CASES])
def test_logits_vs_llama_cpp(llama3c, tiny_model, tmp_path, shape, wtype):
    llama_cpp = llama_cpp_or_skip()
    path = tiny_model(shape, SHAPES[shape], wtype)
    ours = eval_logits(path, PROMPT, tmp_path)
    lm = llama_cpp.Llama(model_path=path, logits_all=True, n_ctx=64, n_batch=64, n_threads=1, verbose=False)
    try:
        lm.eval(PROMPT)
        peer = np.array(lm.scores[:len(PROMPT)], dtype=np.float64)
    finally:
        lm.close()
    check(compare(ours, peer), wtype, f"{shape} {wtype} vs llama.cpp")


BATCH_CASES = [("gqa4_untied_rf", "F32"), ("gqa3_untied", "F16"), ("gqa1_tied", "BF16"), ("gqa1_tied", "Q4_0"),
               ("gqa4_untied_rf", "Q8_0"), ("gqa1_tied", "Q4_K_M"), ("gqa4_untied_rf", "Q6_K"),
               ("gqa1_tied", "Q3_K_M"), ("gqa4_untied_rf", "Q2_K"), ("gqa1_tied", "Q5_K_M")]
FLOAT_TYPES = ("F32", "F16", "BF16")


@pytest.mark.parametrize("shape,wtype", BATCH_CASES, ids=[f"{s}-{t}" for s, t in BATCH_CASES])
@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("kv", ["f16", "f32"])
def test_batch_vs_token_by_token(llama3c, tiny_model, tmp_path, shape, wtype, batch, kv):
    """Prompt in one batch vs in chunks of `batch` tokens (--batch 1: token by token, the decode path).

    Quantized weights: the activations are quantized per row and the integer dot products are
    exact, so the logits must be bitwise equal. Float weights: the batched (gemm tile) and
    single-row kernels sum in different orders (measured ~5e-6 x rms with an F32 KV cache); with
    the F16 KV cache such differences occasionally flip one f16 rounding of a key/value (measured
    up to 5e-4 x rms), hence the two tolerances."""
    path = tiny_model(shape, SHAPES[shape], wtype)
    full = eval_logits(path, PROMPT, tmp_path, extra=("--kv", kv)).astype(np.float64)
    chunked = eval_logits(path, PROMPT, tmp_path, batch=batch, extra=("--kv", kv))
    d = np.abs(full - chunked)
    scale = float(np.sqrt(np.mean(full ** 2)))
    tol = 0.0 if wtype not in FLOAT_TYPES else (5e-5 if kv == "f32" else 2e-3) * scale
    pos = int(np.unravel_index(int(np.argmax(d)), d.shape)[0])
    assert d.max() <= tol, (f"{wtype} --kv {kv}: --batch {batch} vs one batch: max|diff| {d.max():.3g} at "
                            f"position {pos} (tol {tol:.3g}; rms logits {scale:.3f})")


GREEDY_SHAPES = list(SHAPES)


@pytest.mark.parametrize("shape", GREEDY_SHAPES)
def test_greedy_f32_matches_reference(llama3c, tiny_model, shape):
    """64 greedy tokens after an 8-token prompt: identical to the numpy reference's greedy path."""
    path = tiny_model(shape, SHAPES[shape], "F32")
    prompt = PROMPT[:8]
    n = 64
    ours = generate_ids(path, prompt, n)
    ref = RefModel(path)
    seq = list(prompt)
    logits = None
    for step in range(n):
        logits = ref.forward(seq)[-1]
        nxt = int(np.argmax(logits))
        if step >= len(ours) or ours[step] != nxt:
            top = np.sort(logits)[-2:]
            pytest.fail(f"{shape}: greedy differs at step {step}: ours {ours[step:step + 4]} vs reference "
                        f"{nxt}; reference top-2 margin {top[1] - top[0]:.5f} (ours so far {ours[:step]})",
                        pytrace=False)
        seq.append(nxt)
    assert len(ours) == n, f"generated {len(ours)} ids, expected {n}"


# Packed weights (Q4_0 / Q8_0 / Q4_K / Q6_K / F16 / BF16 on AVX-512 + VNNI, see docs/ARCHITECTURE.md)
# are the default where the CPU has them; the per-row kernels over the file's layout (L3C_PACK=0,
# and every CPU without the packed path) must stay as close to the reference.
PACK_CASES = [("gqa1_tied", "Q4_0"), ("gqa4_untied_rf", "Q8_0"), ("gqa1_tied", "Q4_K_M"), ("gqa4_untied_rf", "Q6_K"),
              ("gqa1_tied", "F16"), ("gqa3_untied", "BF16"), ("gqa4_untied_rf", "Q5_K_M"), ("gqa1_tied", "Q3_K_M")]


@pytest.mark.parametrize("shape,wtype", PACK_CASES, ids=[f"{s}-{t}" for s, t in PACK_CASES])
def test_unpacked_layout_vs_reference(llama3c, tiny_model, tmp_path, monkeypatch, shape, wtype):
    path = tiny_model(shape, SHAPES[shape], wtype)
    ref = reference(path)
    packed = eval_logits(path, PROMPT, tmp_path)
    monkeypatch.setenv("L3C_PACK", "0")
    plain = eval_logits(path, PROMPT, tmp_path)
    check(compare(plain, ref), wtype, f"{shape} {wtype} (L3C_PACK=0) vs numpy float64 reference")
    check(compare(plain, packed), wtype, f"{shape} {wtype} L3C_PACK=0 vs packed")


# --bf16 (l3c_model_params.bf16_matmul): F16 / BF16 matrices multiply in bfloat16 where the kernel
# path has bf16 dot products. Weights rounded to bf16 once and activations at each matmul: about the
# precision of 8-bit activation blocks (TOL["bf16_matmul"]). Prompt and decode run the same
# kernel (bit-identical logits for any batch split with an F32 KV cache).
BF16_CASES = [("gqa1_tied", "F16"), ("gqa3_untied", "F16"), ("gqa4_untied_rf", "BF16")]


def bf16_matrices(path):
    """How many matrices --bf16 packs as bf16 on this machine (0: no AVX512-BF16 path)."""
    p = run_cli("bench", "-m", path, "-p", 4, "-n", 0, "-r", 1, "-t", 1, "--bf16", "--json")
    return json.loads(p.stdout)["bf16_matrices"]


@pytest.mark.parametrize("shape,wtype", BF16_CASES, ids=[f"{s}-{t}" for s, t in BF16_CASES])
def test_bf16_matmul_vs_reference(llama3c, tiny_model, tmp_path, shape, wtype):
    path = tiny_model(shape, SHAPES[shape], wtype)
    n = bf16_matrices(path)
    if n == 0:
        pytest.skip("--bf16 uses no matrix here: the kernel path has no bf16 dot products (needs AVX512-BF16)")
    spec = SHAPES[shape]
    assert n == 7 * spec.n_layer + 1, f"--bf16 packed {n} matrices, expected every matmul's"
    ref = reference(path)
    exact = eval_logits(path, PROMPT, tmp_path)
    ours = eval_logits(path, PROMPT, tmp_path, extra=("--bf16",))
    st = compare(ours, ref)
    check(st, "bf16_matmul", f"{shape} {wtype} --bf16 vs numpy float64 reference")
    assert compare(ours, exact)["nmax"] > 0, "--bf16 gave the exact path's logits: the option did nothing"
    full = eval_logits(path, PROMPT, tmp_path, extra=("--bf16", "--kv", "f32"))
    for batch in (1, 5):
        chunked = eval_logits(path, PROMPT, tmp_path, batch=batch, extra=("--bf16", "--kv", "f32"))
        assert np.array_equal(full, chunked), f"--bf16 --batch {batch} differs from one batch"


def test_bf16_matmul_without_bf16_kernels(llama3c, tiny_model, tmp_path, monkeypatch):
    """--bf16 where the kernel path has no bf16 layout (forced: L3C_KERNELS=avx2): a note on
    stderr, no matrix in bf16, and the exact path's logits."""
    path = tiny_model("gqa3_untied", SHAPES["gqa3_untied"], "F16")
    monkeypatch.setenv("L3C_KERNELS", "avx2")
    p = run_cli("bench", "-m", path, "-p", 4, "-n", 0, "-r", 1, "-t", 1, "--bf16", "--json")
    if json.loads(p.stdout)["path"] != "avx2":
        pytest.skip("no avx2 kernel path on this CPU/build")
    assert json.loads(p.stdout)["bf16_matrices"] == 0
    assert "--bf16 changes nothing here" in p.stderr, p.stderr
    exact = eval_logits(path, PROMPT, tmp_path)
    asked = eval_logits(path, PROMPT, tmp_path, extra=("--bf16",))
    assert np.array_equal(exact, asked), "--bf16 without bf16 kernels changed the logits"


# AMX (src/kernels/x86_amx.h): the tile kernels of the packed Q4_0 / Q8_0 / Q4_K / Q5_K / Q6_K layouts reproduce the
# avx512 packed kernel bit for bit (same integer block dots, same float epilogue in the same
# order; calls with few tokens run the avx512 kernel itself); the bf16 tile kernel (--bf16) sums
# in the tile unit's order, so it is held to the bf16 tolerance and to batch invariance.
# "amx-emu" runs the same kernels on an emulated tile unit (any AVX-512 CPU); "amx" on the CPU's.
AMX_PATHS = ("amx-emu", "amx")
AMX_INT8_CASES = [(k, s, t) for k in AMX_PATHS
                  for s, t in (("gqa1_tied", "Q4_0"), ("gqa4_untied_rf", "Q8_0"), ("gqa3_untied", "Q4_0"),
                               ("gqa1_tied", "Q4_K_M"), ("gqa4_untied_rf", "Q6_K"), ("gqa1_tied", "Q5_K"))]


def use_kernel_path(name, model, monkeypatch):
    """Sets L3C_KERNELS=name; skips the test when this CPU / build cannot run that path."""
    monkeypatch.setenv("L3C_KERNELS", name)
    p = run_cli("bench", "-m", model, "-p", 4, "-n", 0, "-r", 1, "-t", 1, "--json")
    if json.loads(p.stdout)["path"] != name:
        pytest.skip(f"kernel path {name} is not available on this CPU / OS: {p.stderr.strip()}")


@pytest.mark.parametrize("kpath,shape,wtype", AMX_INT8_CASES, ids=[f"{k}-{s}-{t}" for k, s, t in AMX_INT8_CASES])
def test_amx_int8_same_bits_as_avx512(llama3c, tiny_model, tmp_path, monkeypatch, kpath, shape, wtype):
    path = tiny_model(shape, SHAPES[shape], wtype)
    use_kernel_path("avx512", path, monkeypatch)
    want = eval_logits(path, PROMPT, tmp_path, extra=("--kv", "f32"))
    want_ids = generate_ids(path, PROMPT[:12], 8)
    use_kernel_path(kpath, path, monkeypatch)
    got = eval_logits(path, PROMPT, tmp_path, extra=("--kv", "f32"))  # 32 tokens: the tile kernels
    assert np.array_equal(got, want), f"{kpath} logits differ from avx512's: {compare(got, want)}"
    chunked = eval_logits(path, PROMPT, tmp_path, batch=5, extra=("--kv", "f32"))  # the avx512 kernel
    assert np.array_equal(chunked, want), f"{kpath} --batch 5 differs from one batch"
    assert generate_ids(path, PROMPT[:12], 8) == want_ids


AMX_BF16_CASES = [(k, s, t) for k in AMX_PATHS for s, t in (("gqa1_tied", "F16"), ("gqa4_untied_rf", "BF16"))]


@pytest.mark.parametrize("kpath,shape,wtype", AMX_BF16_CASES, ids=[f"{k}-{s}-{t}" for k, s, t in AMX_BF16_CASES])
def test_amx_bf16_vs_reference(llama3c, tiny_model, tmp_path, monkeypatch, kpath, shape, wtype):
    path = tiny_model(shape, SHAPES[shape], wtype)
    use_kernel_path(kpath, path, monkeypatch)
    ref = reference(path)
    ours = eval_logits(path, PROMPT, tmp_path, extra=("--bf16",))
    check(compare(ours, ref), "bf16_matmul", f"{shape} {wtype} --bf16 on {kpath} vs numpy float64 reference")
    full = eval_logits(path, PROMPT, tmp_path, extra=("--bf16", "--kv", "f32"))
    for batch in (1, 5, 17):
        chunked = eval_logits(path, PROMPT, tmp_path, batch=batch, extra=("--bf16", "--kv", "f32"))
        assert np.array_equal(full, chunked), f"{kpath} --bf16 --batch {batch} differs from one batch"


# --bf16 on quantized weights (x86_amx.h "quantized weights as bf16", amx paths only): calls of at
# least 32 tokens (the 32-token PROMPT in one batch) dequantize Q4_0 / Q8_0 / Q4_K / Q5_K / Q6_K
# weights to bf16 tiles, activations rounded to bf16: held to the bf16 tolerance against the
# float64 reference on the file's dequantized weights, and batch invariant among such calls. Fewer
# tokens (--batch 5, generation) keep the int8 kernels: the logits without --bf16, bit for bit.
AMX_BQ_CASES = [(k, s, t) for k in AMX_PATHS
                for s, t in (("gqa1_tied", "Q4_0"), ("gqa4_untied_rf", "Q8_0"), ("gqa1_tied", "Q4_K_M"),
                             ("gqa4_untied_rf", "Q5_K"), ("gqa4_untied_rf", "Q6_K"))]


@pytest.mark.parametrize("kpath,shape,wtype", AMX_BQ_CASES, ids=[f"{k}-{s}-{t}" for k, s, t in AMX_BQ_CASES])
def test_amx_bf16_quantized_vs_reference(llama3c, tiny_model, tmp_path, monkeypatch, kpath, shape, wtype):
    path = tiny_model(shape, SHAPES[shape], wtype)
    use_kernel_path(kpath, path, monkeypatch)
    assert bf16_matrices(path) == 7 * SHAPES[shape].n_layer + 1, "--bf16 did not take every quantized matrix"
    ref = reference(path)
    int8 = eval_logits(path, PROMPT, tmp_path, extra=("--kv", "f32"))
    ours = eval_logits(path, PROMPT, tmp_path, extra=("--bf16", "--kv", "f32"))
    check(compare(ours, ref), "bf16_matmul", f"{shape} {wtype} --bf16 on {kpath} vs numpy float64 reference")
    assert not np.array_equal(ours, int8), "--bf16 gave the int8 kernels' logits: the bf16 tiles did not run"
    again = eval_logits(path, PROMPT + PROMPT[1:17], tmp_path, extra=("--bf16", "--kv", "f32"))
    assert np.array_equal(again[:len(PROMPT)], ours), "--bf16 prompt of 48 tokens differs on the first 32"
    chunked = eval_logits(path, PROMPT, tmp_path, batch=5, extra=("--bf16", "--kv", "f32"))
    want = eval_logits(path, PROMPT, tmp_path, batch=5, extra=("--kv", "f32"))
    assert np.array_equal(chunked, want), f"{kpath} --bf16 --batch 5 (int8 kernels) differs from no --bf16"
