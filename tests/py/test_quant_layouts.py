"""Block layouts: our reference to_float (ref.c) against an independent reading of the ggml
formats, gguf-py's gguf.quants.dequantize (PyPI gguf), on random blocks of every type.

Random blocks are random bytes with the fp16 scale fields replaced by random finite fp16 values
(normal and subnormal, both signs), so every quant bit pattern and scale packing is exercised.
Both sides do the same float32 operations in the same order, so the comparison is exact
(bitwise, NaN == NaN). Q8_1 and Q8_K (activation types gguf-py cannot dequantize) are checked
against the formula x = d * q written here in numpy.

Our side: `build/tests/test_kernels --dequant TYPE < blocks > float32s`.
"""
import os
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf", reason="gguf-py (pip install gguf) is the independent reference")
from gguf import GGMLQuantizationType as QT  # noqa: E402
from gguf.quants import dequantize  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / os.environ.get("L3C_BUILD", "build") / "tests" / "test_kernels"

# type -> (bytes per block, byte offsets of fp16 scale fields)
LAYOUTS = {
    "F32": (4, []),
    "F16": (2, [0]),
    "BF16": (2, []),
    "Q4_0": (18, [0]),
    "Q4_1": (20, [0, 2]),
    "Q5_0": (22, [0]),
    "Q5_1": (24, [0, 2]),
    "Q8_0": (34, [0]),
    "Q2_K": (84, [80, 82]),
    "Q3_K": (110, [108]),
    "Q4_K": (144, [0, 2]),
    "Q5_K": (176, [0, 2]),
    "Q6_K": (210, [208]),
}
N_BLOCKS = 64


def random_fp16(rng, n):
    """random finite fp16 values: all exponents below 31 (no Inf/NaN), so subnormals too"""
    bits = rng.integers(0, 1 << 16, size=n, dtype=np.uint32)
    bits = np.where((bits >> 10) & 0x1F == 0x1F, bits & 0x83FF, bits)  # map Inf/NaN to subnormals
    return bits.astype(np.uint16)


def random_blocks(rng, name):
    size, scale_offsets = LAYOUTS[name]
    raw = rng.integers(0, 256, size=(N_BLOCKS, size), dtype=np.uint8)
    for off in scale_offsets:
        raw[:, off : off + 2] = random_fp16(rng, N_BLOCKS).view(np.uint8).reshape(N_BLOCKS, 2)
    if name == "F32":  # finite floats only
        f = raw.view(np.uint32)
        f[(f >> 23) & 0xFF == 0xFF] &= 0x807FFFFF
    if name == "BF16":
        h = raw.view(np.uint16)
        h[(h >> 7) & 0xFF == 0xFF] &= 0x807F
    return raw


def ours(name, raw):
    if not BIN.exists():
        pytest.skip(f"{BIN} not built (run `make {BIN.relative_to(ROOT)}`)")
    out = subprocess.run(
        [str(BIN), "--dequant", name], input=raw.tobytes(), capture_output=True, check=True
    ).stdout
    return np.frombuffer(out, dtype=np.float32)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_dequant_matches_gguf_py(name):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    raw = random_blocks(rng, name)
    want = dequantize(raw.reshape(-1), QT[name]).astype(np.float32).reshape(-1)
    got = ours(name, raw)
    assert got.shape == want.shape
    bad = ~((got == want) | (np.isnan(got) & np.isnan(want)))
    assert not bad.any(), (
        f"{name}: {bad.sum()} of {got.size} values differ; first at {np.argmax(bad)}: "
        f"ours {got[bad][0]!r} vs gguf-py {want[bad][0]!r}"
    )


def test_dequant_q8_1_and_q8_k():
    rng = np.random.default_rng(7)
    # Q8_1: fp16 d, fp16 s, 32 int8
    raw = rng.integers(0, 256, size=(N_BLOCKS, 36), dtype=np.uint8)
    raw[:, 0:2] = random_fp16(rng, N_BLOCKS).view(np.uint8).reshape(N_BLOCKS, 2)
    d = raw[:, 0:2].copy().view(np.float16).astype(np.float32)
    want = (d * raw[:, 4:].view(np.int8).astype(np.float32)).reshape(-1)
    assert np.array_equal(ours("Q8_1", raw), want)
    # Q8_K: float32 d, 256 int8, 16 int16 bsums
    raw = rng.integers(0, 256, size=(N_BLOCKS, 292), dtype=np.uint8)
    dk = rng.uniform(-1, 1, size=N_BLOCKS).astype(np.float32)
    raw[:, 0:4] = dk.view(np.uint8).reshape(N_BLOCKS, 4)
    want = (dk[:, None] * raw[:, 4:260].view(np.int8).astype(np.float32)).reshape(-1)
    assert np.array_equal(ours("Q8_K", raw), want)


def test_dequant_rejects_partial_block():
    if not BIN.exists():
        pytest.skip(f"{BIN} not built")
    r = subprocess.run([str(BIN), "--dequant", "Q4_K"], input=b"\0" * 100, capture_output=True)
    assert r.returncode != 0
