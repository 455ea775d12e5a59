"""gen_models.py -- tiny random llama GGUF files for the forward-pass tests.

write_model(path, ModelSpec(...)) writes a deterministic (seeded) random llama GGUF with a small
synthetic SentencePiece vocabulary (<unk>, <s>, </s>, 256 byte tokens, then letter pieces).
The tokenizer matters little: the tests feed ids.

Weight types F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 are encoded with gguf.quants.quantize.
K-quant files (Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K) are made by quantizing an F32 file with
llama.cpp's own quantizer (llama_cpp.llama_model_quantize); llama.cpp picks a mix of types per
tensor (e.g. output -> Q6_K), which is fine: the reference reads whatever types the file holds.
K-quants need rows that are multiples of 256, so those specs use n_embd 256 and n_ff 512/768.

Weights are N(0, gain^2 / fan_in) so that activations stay O(1) and logits are non-trivial
(std ~1-3), which makes the logit comparisons meaningful.

Run as a script to write one file:  python3 tests/py/gen_models.py out.gguf --type Q4_0 --gqa 4
"""
import argparse
import ctypes
import dataclasses
import math
import os

import numpy as np
import gguf

import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import make_shaped_gguf  # noqa: E402  (the shared rope-scaling factors)

T = gguf.GGMLQuantizationType

# Types gguf-py can encode itself (value: GGUF general.file_type).
GGUF_PY_TYPES = {
    "F32": (T.F32, gguf.LlamaFileType.ALL_F32),
    "F16": (T.F16, gguf.LlamaFileType.MOSTLY_F16),
    "BF16": (T.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "Q8_0": (T.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    "Q4_0": (T.Q4_0, gguf.LlamaFileType.MOSTLY_Q4_0),
    "Q4_1": (T.Q4_1, gguf.LlamaFileType.MOSTLY_Q4_1),
    "Q5_0": (T.Q5_0, gguf.LlamaFileType.MOSTLY_Q5_0),
    "Q5_1": (T.Q5_1, gguf.LlamaFileType.MOSTLY_Q5_1),
}
# Types made by llama.cpp's quantizer from an F32 file (value: name of the llama_cpp ftype constant).
LLAMA_CPP_TYPES = {
    "Q2_K": "LLAMA_FTYPE_MOSTLY_Q2_K",
    "Q3_K": "LLAMA_FTYPE_MOSTLY_Q3_K_S",
    "Q3_K_M": "LLAMA_FTYPE_MOSTLY_Q3_K_M",
    "Q4_K": "LLAMA_FTYPE_MOSTLY_Q4_K_S",
    "Q4_K_M": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "Q5_K": "LLAMA_FTYPE_MOSTLY_Q5_K_S",
    "Q5_K_M": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "Q6_K": "LLAMA_FTYPE_MOSTLY_Q6_K",
}
ALL_TYPES = list(GGUF_PY_TYPES) + list(LLAMA_CPP_TYPES)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    n_embd: int = 128
    n_layer: int = 2
    n_head: int = 4
    n_head_kv: int = 4
    n_ff: int = 256
    n_vocab: int = 320
    n_ctx: int = 256
    tied: bool = True
    rope_freqs: bool = False      # Llama 3.1 'llama3' rope scaling factors tensor
    theta: float = 10000.0
    eps: float = 1e-5
    seed: int = 1234
    gain: float = 1.0             # weight std = gain / sqrt(fan_in)
    rope_factor: float = 8.0      # rope_freqs: Meta's scaling factor (Llama 3.1: 8, Llama 3.2: 32)
    llama3_vocab: str = ""        # path of Meta's Llama 3 tokenizer.model: its real vocabulary
    kv: tuple = ()                # extra metadata ((key, value), ...): str / bool / float / int values

    @property
    def head_dim(self):
        return self.n_embd // self.n_head


def llama3_rope_factors(head_dim, theta, factor=8.0):
    """rope_freqs.weight from Meta's apply_scaling (Llama 3.1: factor 8): one implementation,
    shared with tools/make_shaped_gguf.py."""
    return make_shaped_gguf.llama3_rope_factors(head_dim, theta, factor=factor)


def spm_vocab(n_vocab):
    """A small SentencePiece-style vocabulary: tokens, scores, token types."""
    assert n_vocab >= 259 + 27, "vocab too small"
    sp = "\u2581"
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    pieces = [sp] + list(letters) + [sp + c for c in letters]
    pieces += [a + b for a in letters for b in letters] + [sp + a + b for a in letters for b in letters]
    pieces = pieces[:n_vocab - len(tokens)]
    tokens += pieces
    types += [1] * len(pieces)
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))]
    assert len(tokens) == n_vocab
    return tokens, scores, types


def random_weights(spec):
    """Dict name -> float32 numpy array (row-major [out, in]) of a random llama."""
    rng = np.random.default_rng(spec.seed)
    d, hd = spec.n_embd, spec.head_dim
    kv = spec.n_head_kv * hd

    def mat(n_out, n_in):
        return (rng.standard_normal((n_out, n_in)) * (spec.gain / math.sqrt(n_in))).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    w = {"token_embd.weight": (rng.standard_normal((spec.n_vocab, d)) * 0.5).astype(np.float32)}
    for l in range(spec.n_layer):
        b = f"blk.{l}."
        w[b + "attn_norm.weight"] = norm(d)
        # Q/K get a larger gain so attention is not uniform.
        w[b + "attn_q.weight"] = mat(d, d) * 2.0
        w[b + "attn_k.weight"] = mat(kv, d) * 2.0
        w[b + "attn_v.weight"] = mat(kv, d)
        w[b + "attn_output.weight"] = mat(d, d)
        w[b + "ffn_norm.weight"] = norm(d)
        w[b + "ffn_gate.weight"] = mat(spec.n_ff, d)
        w[b + "ffn_up.weight"] = mat(spec.n_ff, d)
        w[b + "ffn_down.weight"] = mat(d, spec.n_ff)
    w["output_norm.weight"] = norm(d)
    if not spec.tied:
        w["output.weight"] = (rng.standard_normal((spec.n_vocab, d)) * (2.0 / math.sqrt(d))).astype(np.float32)
    if spec.rope_freqs:
        w["rope_freqs.weight"] = llama3_rope_factors(hd, spec.theta, spec.rope_factor)
    return w


def write_model(path, spec, wtype="F32", name=None):
    """Writes a random llama GGUF with matrices of type wtype (gguf-py types, or K types via llama.cpp)."""
    if wtype in LLAMA_CPP_TYPES:
        tmp = path + ".f32.gguf"
        write_model(tmp, spec, "F32", name)
        try:
            llama_cpp_quantize(tmp, path, LLAMA_CPP_TYPES[wtype])
        finally:
            os.remove(tmp)
        return path
    if wtype not in GGUF_PY_TYPES:
        raise ValueError(f"unknown weight type {wtype}; known: {ALL_TYPES}")
    qtype, ftype = GGUF_PY_TYPES[wtype]
    wr = gguf.GGUFWriter(path, "llama")
    wr.add_name(name or f"tiny-{wtype}")
    wr.add_file_type(int(ftype))
    wr.add_context_length(spec.n_ctx)
    wr.add_embedding_length(spec.n_embd)
    wr.add_block_count(spec.n_layer)
    wr.add_feed_forward_length(spec.n_ff)
    wr.add_head_count(spec.n_head)
    wr.add_head_count_kv(spec.n_head_kv)
    wr.add_rope_dimension_count(spec.head_dim)
    wr.add_rope_freq_base(spec.theta)
    wr.add_layer_norm_rms_eps(spec.eps)
    wr.add_vocab_size(spec.n_vocab)
    if spec.llama3_vocab:
        tokens, types, merges = make_shaped_gguf.llama3_vocab(spec.llama3_vocab)
        assert len(tokens) == spec.n_vocab, f"the Llama 3 vocabulary has {len(tokens)} tokens"
        wr.add_tokenizer_model("gpt2")
        wr.add_tokenizer_pre("llama-bpe")
        wr.add_token_list(tokens)
        wr.add_token_types(types)
        wr.add_token_merges(merges)
        wr.add_bos_token_id(128000)
        wr.add_eos_token_id(128009)
    else:
        tokens, scores, types = spm_vocab(spec.n_vocab)
        wr.add_tokenizer_model("llama")
        wr.add_token_list(tokens)
        wr.add_token_scores(scores)
        wr.add_token_types(types)
        wr.add_bos_token_id(1)
        wr.add_eos_token_id(2)
        wr.add_unk_token_id(0)
        wr.add_add_bos_token(True)
        wr.add_add_space_prefix(True)
    for key, val in spec.kv:
        if isinstance(val, str):
            wr.add_string(key, val)
        elif isinstance(val, bool):
            wr.add_bool(key, val)
        elif isinstance(val, float):
            wr.add_float32(key, val)
        else:
            wr.add_uint32(key, int(val))
    for tname, a in random_weights(spec).items():
        if a.ndim == 1 or qtype == T.F32:
            wr.add_tensor(tname, a)
        elif qtype == T.F16:
            wr.add_tensor(tname, a.astype(np.float16))
        else:
            wr.add_tensor(tname, gguf.quants.quantize(a, qtype), raw_dtype=qtype)
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    return path


def llama_cpp_quantize(src, dst, ftype_name, nthread=1):
    """Quantizes src to dst with llama.cpp (raises ImportError when llama_cpp is missing)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, ftype_name)
    params.nthread = nthread
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({src} -> {dst}, {ftype_name}) returned {rc}")


def main():
    ap = argparse.ArgumentParser(description="Write a tiny random llama GGUF.")
    ap.add_argument("output")
    ap.add_argument("--type", default="F32", choices=ALL_TYPES)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--gqa", type=int, default=1, help="query heads per kv head")
    ap.add_argument("--ff", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=320)
    ap.add_argument("--untied", action="store_true")
    ap.add_argument("--rope-freqs", action="store_true")
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args()
    spec = ModelSpec(n_embd=a.dim, n_layer=a.layers, n_head=a.heads, n_head_kv=a.heads // a.gqa, n_ff=a.ff,
                     n_vocab=a.vocab, tied=not a.untied, rope_freqs=a.rope_freqs, seed=a.seed)
    write_model(a.output, spec, a.type)


if __name__ == "__main__":
    main()
