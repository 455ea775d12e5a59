"""The q8_0 KV cache against the float64 reference, and proof that the logit tolerances bite.

q8_0 KV cache (`eval --kv q8_0`): tiny generated models (the shapes of test_forward_ref.py) in
F32, F16, Q8_0, Q4_0, Q5_1 (and Q4_K_M where llama-cpp-python can quantize), prompt in one batch
and token by token (--batch 1, every key and value read back from the cache). Compared with the
float64 reference (tests/py/ref_forward.py, which keeps K and V in float64) and with the same
engine's F16 cache, using test_forward_ref's metric (nmax / nrms normalised by the reference
logit RMS). Tolerances: about 2x the largest measured figure (docs/TESTING.md).

Sabotage: a copy of a quantized file with (a) one attention head's rows of blk.0.attn_q zeroed,
or (b) the scale of one quant block of blk.0.attn_v negated, must be REJECTED by
test_forward_ref's own check (its TOL, imported) against the reference of the ORIGINAL file,
while the original file passes. This shows the tolerances can see a one-head or one-block error.
"""
import os
import shutil

import numpy as np
import pytest

from conftest import eval_logits
from gen_models import LLAMA_CPP_TYPES
from test_forward_ref import PROMPT, SHAPES, TOL, check, compare, reference

# (nmax, nrms) limits for the q8_0 KV cache. Measured maxima over the 3 shapes, one batch and
# --batch 1 (identical): vs reference, float weights 0.102 / 0.018, quantized weights 0.258 /
# 0.035; vs the F16 cache 0.161 / 0.031.
KV_Q8_TOL_FLOAT = (0.20, 0.04)
KV_Q8_TOL_QUANT = (0.50, 0.07)
KV_Q8_TOL_VS_F16 = (0.32, 0.06)

KV_TYPES = ["F32", "F16", "Q8_0", "Q4_0", "Q5_1", "Q4_K_M"]
KV_CASES = [(s, t) for s in SHAPES for t in KV_TYPES if not (t in LLAMA_CPP_TYPES and SHAPES[s].n_embd % 256)]


def within(st, tol, what):
    msg = f"{what}: nmax {st['nmax']:.4f} (tol {tol[0]}), nrms {st['nrms']:.4f} (tol {tol[1]}), rms(ref) {st['scale']:.3f}"
    assert st["nmax"] <= tol[0] and st["nrms"] <= tol[1], msg


@pytest.mark.parametrize("batch", [None, 1], ids=["one-batch", "batch1"])
@pytest.mark.parametrize("shape,wtype", KV_CASES, ids=[f"{s}-{t}" for s, t in KV_CASES])
def test_kv_q8_0_vs_reference_and_f16(llama3c, tiny_model, tmp_path, shape, wtype, batch):
    path = tiny_model(shape, SHAPES[shape], wtype)
    ref = reference(path)
    q8 = eval_logits(path, PROMPT, tmp_path, batch=batch, extra=("--kv", "q8_0"))
    f16 = eval_logits(path, PROMPT, tmp_path, batch=batch, extra=("--kv", "f16"))
    assert np.all(np.isfinite(q8))
    tol = KV_Q8_TOL_FLOAT if wtype in ("F32", "F16", "BF16") else KV_Q8_TOL_QUANT
    st = compare(q8, ref)
    within(st, tol, f"{shape} {wtype} --kv q8_0 vs float64 reference")
    within(compare(q8, f16.astype(np.float64)), KV_Q8_TOL_VS_F16, f"{shape} {wtype} --kv q8_0 vs --kv f16")
    # the option is in effect: an 8-bit cache does not give the F16 cache's logits
    assert not np.array_equal(q8, f16), "--kv q8_0 gave exactly the F16 cache's logits"
    sure = st["margin"] > 2 * tol[0] * st["scale"]
    bad = np.nonzero(sure & (q8.argmax(1) != ref.argmax(1)))[0]
    assert bad.size == 0, f"argmax differs at positions {bad.tolist()} with clear reference margins"


# ---------------------------------------------------------------------- sabotage

BLOCK = {"Q8_0": (32, 34), "Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24),
         "Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210)}


def tensor_span(path, name):
    """(file offset, row bytes, rows, block elements, block bytes, type name) of a 2-D tensor."""
    import gguf

    r = gguf.GGUFReader(path)
    t = next(t for t in r.tensors if t.name == name)
    tname = t.tensor_type.name
    assert tname in BLOCK, f"{name}: {tname} has no block layout here"
    ne0, ne1 = int(t.shape[0]), int(t.shape[1])
    be, bb = BLOCK[tname]
    row = ne0 // be * bb
    assert row * ne1 == t.n_bytes, (name, row, ne1, t.n_bytes)
    return int(t.data_offset), row, ne1, be, bb, tname


def sabotaged_copy(path, out, kind, spec):
    shutil.copyfile(path, out)
    with open(out, "r+b") as f:
        if kind == "head":  # zero head 1's rows of blk.0.attn_q (all quants 0, scales 0)
            off, row, rows, _, _, _ = tensor_span(path, "blk.0.attn_q.weight")
            hd = spec.n_embd // spec.n_head
            assert rows == spec.n_embd
            f.seek(off + 1 * hd * row)
            f.write(b"\0" * (hd * row))
        else:  # negate the f16 scale `d` (the block's first two bytes) of one block of blk.0.attn_v
            off, row, rows, _, bb, tname = tensor_span(path, "blk.0.attn_v.weight")
            pos = off + 3 * row + 1 * bb  # row 3, second block
            if tname.endswith("_K") and tname == "Q6_K":
                pos += bb - 2  # Q6_K keeps d at the end of its block
            f.seek(pos + 1)
            hi = f.read(1)[0]
            f.seek(pos + 1)
            f.write(bytes([hi ^ 0x80]))


SAB_CASES = [("gqa1_tied", "Q4_0"), ("gqa4_untied_rf", "Q8_0"), ("gqa3_untied", "Q5_1"), ("gqa1_tied", "Q4_K_M"),
             ("gqa4_untied_rf", "Q4_K_M")]


@pytest.mark.parametrize("kind", ["head", "block"])
@pytest.mark.parametrize("shape,wtype", SAB_CASES, ids=[f"{s}-{t}" for s, t in SAB_CASES])
def test_tolerance_rejects_one_head_or_block(llama3c, tiny_model, tmp_path, shape, wtype, kind):
    spec = SHAPES[shape]
    path = tiny_model(shape, spec, wtype)
    ref = reference(path)
    check(compare(eval_logits(path, PROMPT, tmp_path), ref), wtype, f"{shape} {wtype} original")
    bad = os.path.join(str(tmp_path), f"sabotaged_{kind}.gguf")
    sabotaged_copy(path, bad, kind, spec)
    st = compare(eval_logits(bad, PROMPT, tmp_path), ref)
    with pytest.raises(AssertionError):
        check(st, wtype, f"{shape} {wtype} with one {kind} altered")
    print(f"\n{shape} {wtype} {kind}: nmax {st['nmax']:.3f} nrms {st['nrms']:.4f} (tol {TOL[wtype]})")
