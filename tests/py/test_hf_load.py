"""Hugging Face Llama folders loaded directly (src/model/hf.c, src/io/safetensors.c).

References: transformers (torch_ref.py, run under the .venv-torch interpreter) builds random tiny
LlamaForCausalLM folders with save_pretrained (single file and sharded, F32 / F16 / BF16, MHA and
GQA, tied and untied, with and without llama3 rope_scaling) and computes float32 logits from the
saved folder; the `tokenizers` library tokenizes text with the folder's tokenizer.json.

Tolerance: max |ours - transformers| / max |transformers| <= 2e-5 over every position, with an F32
KV cache (measured: ~1e-6 for all dtypes; F16 / BF16 weights are the same rounded values on both
sides, and both compute in float32).
"""
import json
import os
import struct

import numpy as np
import pytest

from conftest import BIN, eval_logits, run_cli
from torch_ref import make_hf_model, torch_python  # noqa: F401  (fixture)

IDS = [5, 17, 3, 99, 42, 7, 120, 1, 64, 33, 2, 80, 250, 311]
LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 64}
TEXTS = ["Hello world! 12345 llamas", "The quick brown fox jumps over the lazy dog.",
         "  tokenizers split\ttext, into pieces;  ünïcödé too 42"]
TOL = 2e-5

CASES = {
    #  name: (dtype, tied, kv_heads, rope_scaling, max_shard_size)
    "f32-mha-untied": ("float32", False, 4, None, None),
    "f16-gqa-tied-sharded": ("float16", True, 2, None, "30KB"),
    "bf16-gqa-untied-llama3": ("bfloat16", False, 2, LLAMA3_SCALING, None),
    "f32-gqa-tied-llama3-sharded": ("float32", True, 1, LLAMA3_SCALING, "40KB"),
}

_cache = {}


def hf_model(torch_python, tmp_path_factory, name):
    if name not in _cache:
        if name == "k256":  # rows of 256: llama-quantize's Q4_K / Q6_K apply (no fallback types)
            dtype, tied, kv, rs, shard, hidden, ff, layers = "float32", False, 2, LLAMA3_SCALING, None, 256, 512, 3
        else:
            (dtype, tied, kv, rs, shard), hidden, ff, layers = CASES[name], 64, 160, 2
        spec = dict(vocab=320, hidden=hidden, ff=ff, layers=layers, heads=4, kv_heads=kv, dtype=dtype,
                    tied=tied, rope_scaling=rs, max_shard_size=shard, seed=len(name), ids=IDS,
                    theta=500000.0 if rs else 10000.0, tokenizer=True, texts=TEXTS)
        d = str(tmp_path_factory.mktemp("hf") / name)
        ref = make_hf_model(torch_python, d, spec)
        _cache[name] = (d, ref)
    return _cache[name]


def nmax(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("name", list(CASES))
def test_folder_logits_match_transformers(torch_python, tmp_path_factory, tmp_path, name):
    d, ref = hf_model(torch_python, tmp_path_factory, name)
    if CASES[name][4]:
        assert os.path.exists(os.path.join(d, "model.safetensors.index.json")), "expected a sharded folder"
    got = eval_logits(d, IDS, tmp_path, extra=("--kv", "f32"))
    err = nmax(got, ref)
    assert err <= TOL, f"{name}: nmax {err:.3g} > {TOL}"
    # one token at a time goes through the KV cache: the same numbers
    got1 = eval_logits(d, IDS, tmp_path, batch=1, extra=("--kv", "f32"))
    assert nmax(got1, ref) <= TOL


def test_folder_tokenizer_matches_tokenizers(torch_python, tmp_path_factory):
    d, _ = hf_model(torch_python, tmp_path_factory, "f32-mha-untied")
    with open(d + ".logits.npy.tok.json") as f:
        want = json.load(f)
    for text, ids in zip(TEXTS, want):
        p = run_cli("tokenize", "-m", d, "-p", text, "--ids")
        assert [int(x) for x in p.stdout.split()] == ids, text
    info = run_cli("info", "-m", d).stdout
    assert "n_vocab       320" in info


# ---------------------------------------------------------------- llama3c convert

# max |ours - llama.cpp| / max |llama.cpp| on the same converted file (measured: F32 7e-7, F16 2e-3,
# Q8_0 3e-2, Q4_K_M 4e-2; the engines quantize activations differently for the quantized types)
CONVERT_TOL = {"F32": 1e-5, "F16": 1e-2, "Q8_0": 0.08, "Q4_K_M": 0.08}


def convert(folder, out, wtype):
    p = run_cli("convert", folder, "-o", out, "--type", wtype)
    assert "21/21" in p.stderr or "/" in p.stderr  # the progress bar
    assert os.path.exists(out)
    assert not [f for f in os.listdir(os.path.dirname(out) or ".") if f.startswith("." + os.path.basename(out) + ".")]
    return out


def llama_cpp_logits(path, ids):
    from conftest import llama_cpp_or_skip
    llama_cpp = llama_cpp_or_skip()
    lm = llama_cpp.Llama(model_path=path, logits_all=True, n_ctx=64, n_batch=64, n_threads=1, verbose=False,
                         type_k=0, type_v=0)  # F32 KV cache, as ours below
    try:
        lm.eval(ids)
        return np.array(lm.scores[:len(ids)], dtype=np.float64)
    finally:
        lm.close()


@pytest.mark.parametrize("wtype", list(CONVERT_TOL))
def test_convert_loads_in_llama_cpp(torch_python, tmp_path_factory, tmp_path, wtype):
    d, ref = hf_model(torch_python, tmp_path_factory, "k256")
    out = convert(d, str(tmp_path / f"k256-{wtype}.gguf"), wtype)
    ours = eval_logits(out, IDS, tmp_path, extra=("--kv", "f32"))
    peer = llama_cpp_logits(out, IDS)
    err = nmax(ours, peer)
    assert err <= CONVERT_TOL[wtype], f"{wtype}: ours vs llama.cpp nmax {err:.3g} > {CONVERT_TOL[wtype]}"
    assert np.mean(ours.argmax(1) == peer.argmax(1)) >= 0.9
    if wtype == "F32":  # the same weights as the folder: the same numbers, and transformers' within TOL
        assert np.array_equal(ours, eval_logits(d, IDS, tmp_path, extra=("--kv", "f32")))
        assert nmax(ours, ref) <= TOL


def test_convert_metadata(torch_python, tmp_path_factory, tmp_path):
    import gguf
    d, _ = hf_model(torch_python, tmp_path_factory, "k256")
    r = gguf.GGUFReader(convert(d, str(tmp_path / "meta.gguf"), "Q8_0"))

    def val(k):
        f = r.fields[k]
        v = f.parts[f.data[0]]
        return bytes(v).decode() if f.types[0] == gguf.GGUFValueType.STRING else v[0]
    assert val("general.architecture") == "llama" and val("general.file_type") == 7
    assert (val("llama.embedding_length"), val("llama.block_count"), val("llama.feed_forward_length")) == (256, 3, 512)
    assert (val("llama.attention.head_count"), val("llama.attention.head_count_kv")) == (4, 2)
    assert val("llama.rope.freq_base") == 500000.0 and val("llama.context_length") == 256
    assert val("tokenizer.ggml.model") == "gpt2" and val("tokenizer.ggml.pre") == "smollm"
    assert len(r.fields["tokenizer.ggml.tokens"].data) == 320 and len(r.fields["tokenizer.ggml.merges"].data) > 0
    assert val("tokenizer.ggml.bos_token_id") == 318 and val("tokenizer.ggml.eos_token_id") == 319
    assert "messages" in val("tokenizer.chat_template")
    names = {t.name: t for t in r.tensors}
    assert names["rope_freqs.weight"].tensor_type.name == "F32" and names["blk.0.attn_q.weight"].tensor_type.name == "Q8_0"


def test_convert_q8_0_bytes_match_gguf_py(torch_python, tmp_path_factory, tmp_path):
    """Our Q8_0 blocks == gguf-py's quantize (what convert_hf_to_gguf.py --outtype q8_0 calls) of the
    same float weights (our F32 conversion, whose Q/K rows are already permuted): bit for bit."""
    import gguf
    from gguf.quants import quantize
    d, _ = hf_model(torch_python, tmp_path_factory, "k256")
    f32 = {t.name: t for t in gguf.GGUFReader(convert(d, str(tmp_path / "a.gguf"), "F32")).tensors}
    q8 = {t.name: t for t in gguf.GGUFReader(convert(d, str(tmp_path / "b.gguf"), "Q8_0")).tensors}
    n_q8 = 0
    for name, t in q8.items():
        if t.tensor_type.name != "Q8_0":
            assert t.tensor_type.name == "F32" and len(t.shape) == 1, name
            continue
        want = quantize(np.array(f32[name].data, dtype=np.float32), gguf.GGMLQuantizationType.Q8_0)
        assert want.tobytes() == t.data.tobytes(), name
        n_q8 += 1
    assert n_q8 == 3 * 7 + 2


def test_convert_q4_k_m_matches_llama_quantize(torch_python, tmp_path_factory, tmp_path):
    """Our Q4_K_M == llama.cpp's llama_model_quantize(Q4_K_M) of our F32 file: the same type for every
    tensor (Q6_K for output, attn_v / ffn_down of use_more_bits layers) and the same bytes."""
    import ctypes
    import gguf
    from conftest import llama_cpp_or_skip
    llama_cpp = llama_cpp_or_skip()
    d, _ = hf_model(torch_python, tmp_path_factory, "k256")
    src = convert(d, str(tmp_path / "f32.gguf"), "F32")
    ours = convert(d, str(tmp_path / "ours.gguf"), "Q4_K_M")
    theirs = str(tmp_path / "theirs.gguf")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.nthread = 1
    assert llama_cpp.llama_model_quantize(src.encode(), theirs.encode(), ctypes.byref(params)) == 0
    a = {t.name: t for t in gguf.GGUFReader(ours).tensors}
    b = {t.name: t for t in gguf.GGUFReader(theirs).tensors}
    assert sorted(a) == sorted(b)
    types = {}
    for name in a:
        assert a[name].tensor_type == b[name].tensor_type, name
        assert a[name].data.tobytes() == b[name].data.tobytes(), f"{name} ({a[name].tensor_type.name}) bytes differ"
        types[name] = a[name].tensor_type.name
    assert types["output.weight"] == "Q6_K" and types["blk.2.attn_v.weight"] == "Q6_K"
    assert types["blk.0.attn_v.weight"] == "Q4_K" and types["blk.2.ffn_down.weight"] == "Q6_K"


def test_convert_errors(tmp_path):
    p = run_cli("convert", "/nonexistent", "-o", str(tmp_path / "x.gguf"), check=False)
    assert p.returncode == 1 and "nonexistent" in p.stderr
    p = run_cli("convert", "/nonexistent", "-o", str(tmp_path / "x.gguf"), "--type", "Q3_X", check=False)
    assert p.returncode == 1 and "Q3_X" in p.stderr
    p = run_cli("convert", check=False)
    assert p.returncode == 2
    assert not os.path.exists(tmp_path / "x.gguf")


# ---------------------------------------------------------------- hostile folders

def write_st(path, header, data=b""):
    h = json.dumps(header).encode() if not isinstance(header, bytes) else header
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


def small_config(**kw):
    c = {"model_type": "llama", "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
         "num_key_value_heads": 2, "intermediate_size": 16, "max_position_embeddings": 32, "vocab_size": 8,
         "rms_norm_eps": 1e-5}
    c.update(kw)
    return c


def make_folder(tmp_path, config, st_header=None, st_data=b"", files=None):
    d = tmp_path / "hostile"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps(config) if not isinstance(config, str) else config)
    if st_header is not None:
        write_st(d / "model.safetensors", st_header, st_data)
    for k, v in (files or {}).items():
        (d / k).write_text(v)
    return str(d)


def expect_fail(folder, *words):
    p = run_cli("eval", "-m", folder, "--ids", "1 2", "--logits-out", os.devnull, check=False)
    assert p.returncode != 0 and p.returncode < 128, f"exit {p.returncode} (crash?)\n{p.stderr}"
    for w in words:
        assert w in p.stderr, f"'{w}' not in: {p.stderr}"
    return p.stderr


def w(shape, begin):
    n = 4 * int(np.prod(shape))
    return {"dtype": "F32", "shape": shape, "data_offsets": [begin, begin + n]}


@pytest.mark.parametrize("case", ["huge_len", "overlap", "bad_dtype", "shape_bytes", "bomb", "truncated",
                                  "dup", "gap"])
def test_hostile_safetensors(tmp_path, case):
    good = {"model.embed_tokens.weight": w([8, 8], 0)}
    if case == "huge_len":
        d = make_folder(tmp_path, small_config())
        with open(os.path.join(d, "model.safetensors"), "wb") as f:
            f.write(struct.pack("<Q", 1 << 62) + b"{}")
        expect_fail(d, "model.safetensors", "header length")
    elif case == "overlap":
        hdr = {"a": w([4], 0), "b": w([4], 8)}
        d = make_folder(tmp_path, small_config(), hdr, bytes(24))
        expect_fail(d, "model.safetensors", "'b'", "overlaps")
    elif case == "bad_dtype":
        d = make_folder(tmp_path, small_config(), {"a": {"dtype": "F33", "shape": [1], "data_offsets": [0, 4]}},
                        bytes(4))
        expect_fail(d, "model.safetensors", "'a'", "unknown dtype")
    elif case == "shape_bytes":
        d = make_folder(tmp_path, small_config(), {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 4]}},
                        bytes(4))
        expect_fail(d, "'a'", "span")
    elif case == "bomb":
        d = make_folder(tmp_path, small_config(), b'{"a":' + b"[" * 100000 + b"]" * 100000 + b"}")
        expect_fail(d, "model.safetensors", "JSON")
    elif case == "truncated":
        d = make_folder(tmp_path, small_config(), good, bytes(100))
        expect_fail(d, "model.safetensors", "trailing" if False else "256")
    elif case == "dup":
        raw = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}'
        d = make_folder(tmp_path, small_config(), raw, bytes(8))
        expect_fail(d, "model.safetensors", "duplicate")
    elif case == "gap":
        d = make_folder(tmp_path, small_config(), {"a": w([1], 0), "b": w([1], 8)}, bytes(12))
        expect_fail(d, "'b'", "gap")


def test_hostile_folders(tmp_path):
    good = {"model.embed_tokens.weight": w([8, 8], 0)}
    data = bytes(256)
    d = make_folder(tmp_path, "{not json", good, data)
    expect_fail(d, "config.json", "JSON")
    d = make_folder(tmp_path, small_config(rope_scaling={"rope_type": "yarn", "factor": 4.0}), good, data)
    expect_fail(d, "rope_scaling", "yarn", "not supported")
    d = make_folder(tmp_path, small_config(model_type="mistral"), good, data)
    expect_fail(d, "model_type", "mistral")
    cfg = small_config()
    del cfg["hidden_size"]
    d = make_folder(tmp_path, cfg, good, data)
    expect_fail(d, "config.json", "hidden_size")
    d = make_folder(tmp_path, small_config(), {"model.embed_tokens.weight": {"dtype": "I64", "shape": [8, 8],
                                                                              "data_offsets": [0, 512]}}, bytes(512))
    expect_fail(d, "model.embed_tokens.weight", "I64")
    d = make_folder(tmp_path, small_config(), {"model.layers.0.foo.weight": w([8, 8], 0)}, data)
    expect_fail(d, "model.layers.0.foo.weight")
    # only the embedding: the binder names the first missing tensor
    d = make_folder(tmp_path, small_config(), good, data)
    expect_fail(d, "missing tensor", "blk.0.attn_norm.weight")
    # wrong shape
    d = make_folder(tmp_path, small_config(), {"model.embed_tokens.weight": w([8, 4], 0)}, bytes(128))
    expect_fail(d, "token_embd.weight", "shape")
    # a sharded index pointing outside the folder
    os.remove(os.path.join(d, "model.safetensors"))
    (tmp_path / "hostile" / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"model.embed_tokens.weight": "../evil.safetensors"}}))
    expect_fail(d, "index.json", "not a file name")
    (tmp_path / "hostile" / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"model.embed_tokens.weight": "missing.safetensors"}}))
    expect_fail(d, "missing.safetensors", "cannot open")
