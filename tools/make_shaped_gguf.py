#!/usr/bin/env python3
"""Write a llama GGUF of a real model's shape (Llama-3-8B, Llama-3.2-1B, ...) with made-up weights.

Used by benchmarks (random weights: every byte is read, speed is what matters) and by tests of
`llama3c info` / `explain` (zero weights written as a sparse file: an 8B-shaped file costs no
disk). The vocabulary is Meta's Llama 3 tokenizer when --tokenizer points at its tokenizer.model
(tokens in GPT-2 byte-to-unicode form plus merges derived from the ranks), else a synthetic
byte-level vocabulary of the right size.

    python3 tools/make_shaped_gguf.py --preset llama3.2-1b --type Q4_0 --data random out.gguf
"""
import argparse
import base64
import os
import sys

import numpy as np

try:
    import gguf
except ImportError:  # pragma: no cover
    sys.exit("make_shaped_gguf.py: the 'gguf' Python package is required (pip install gguf)")

PRESETS = {
    # name: dim, layers, heads, kv heads, ffn, vocab, ctx, rope theta, tied, llama3.1 rope scaling
    "llama3-8b": dict(dim=4096, n_layer=32, n_head=32, n_kv=8, n_ff=14336, vocab=128256,
                      ctx=8192, theta=500000.0, tied=False, rope_scaling=False),
    "llama3.1-8b": dict(dim=4096, n_layer=32, n_head=32, n_kv=8, n_ff=14336, vocab=128256,
                        ctx=131072, theta=500000.0, tied=False, rope_scaling=True, factor=8.0),
    "llama3.2-1b": dict(dim=2048, n_layer=16, n_head=32, n_kv=8, n_ff=8192, vocab=128256,
                        ctx=131072, theta=500000.0, tied=True, rope_scaling=True),
    "llama3.2-3b": dict(dim=3072, n_layer=28, n_head=24, n_kv=8, n_ff=8192, vocab=128256,
                        ctx=131072, theta=500000.0, tied=True, rope_scaling=True),
}

Q = gguf.GGMLQuantizationType
TYPES = {"F32": Q.F32, "F16": Q.F16, "BF16": Q.BF16, "Q8_0": Q.Q8_0, "Q4_0": Q.Q4_0,
         "Q4_1": Q.Q4_1, "Q5_0": Q.Q5_0, "Q5_1": Q.Q5_1, "Q2_K": Q.Q2_K, "Q3_K": Q.Q3_K,
         "Q4_K": Q.Q4_K, "Q5_K": Q.Q5_K, "Q6_K": Q.Q6_K}
# Q4_K_M-like mix: attn_v and ffn_down (and output) in Q6_K, the rest Q4_K (close to llama.cpp's;
# its Q3_K_M puts those in Q4_K / Q5_K / Q6_K, here all Q5_K).
MIXES = {"Q3_K_M": ("Q3_K", "Q5_K"), "Q4_K_M": ("Q4_K", "Q6_K"), "Q5_K_M": ("Q5_K", "Q6_K")}

# byte offsets of the fp16 scale fields in each block (they must be finite for real kernels)
SCALE_FIELDS = {Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q8_0: [0],
                Q.Q2_K: [80, 82], Q.Q3_K: [108], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208]}


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable unicode character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                   "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>",
                   "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>",
                   "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]


def llama3_vocab(path):
    """Tokens (GPT-2 form), token types and merges from Meta's tiktoken tokenizer.model."""
    ranks = {}
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                tok, rank = line.split()
                ranks[base64.b64decode(tok)] = int(rank)
    b2u = bytes_to_unicode()
    enc = lambda b: "".join(b2u[x] for x in b)
    by_rank = sorted(ranks.items(), key=lambda kv: kv[1])
    tokens = [enc(b) for b, _ in by_rank]
    merges = []
    for tok, rank in by_rank:  # every split whose halves exist and rank below the merged token
        if len(tok) < 2:
            continue
        cands = []
        for i in range(1, len(tok)):
            a, b = tok[:i], tok[i:]
            if a in ranks and b in ranks and ranks[a] < rank and ranks[b] < rank:
                cands.append((ranks[a], ranks[b], a, b))
        for _, _, a, b in sorted(cands):
            merges.append(enc(a) + " " + enc(b))
    specials = LLAMA3_SPECIALS + ["<|reserved_special_token_%d|>" % i for i in range(3, 248)]
    tokens += specials[:256]
    types = [1] * len(by_rank) + [3] * 256
    return tokens, types, merges


def synthetic_vocab(n_vocab):
    """256 byte tokens, then byte pairs (each with its merge), then fillers, then 256 specials."""
    b2u = bytes_to_unicode()
    chars = [b2u[b] for b in range(256)]
    tokens, merges = chars[:], []
    for a in chars:
        for b in chars:
            if len(tokens) >= n_vocab - 256:
                break
            tokens.append(a + b)
            merges.append(a + " " + b)
    tokens += ["<tok%d>" % i for i in range(len(tokens), n_vocab - 256)]
    specials = LLAMA3_SPECIALS + ["<|reserved_special_token_%d|>" % i for i in range(3, 248)]
    tokens += specials[:256]
    return tokens, [1] * (n_vocab - 256) + [3] * 256, merges


def llama3_rope_factors(head_dim, theta, factor=32.0, low=1.0, high=4.0, old_ctx=8192):
    """Meta's apply_scaling, expressed as per-frequency divisors (GGUF rope_freqs)."""
    freqs = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    low_wl, high_wl = old_ctx / low, old_ctx / high
    out = []
    for f in freqs:
        wl = 2 * np.pi / f
        if wl < high_wl:
            out.append(1.0)
        elif wl > low_wl:
            out.append(factor)
        else:
            s = (old_ctx / wl - low) / (high - low)
            out.append(1.0 / ((1 - s) / factor + s))
    return np.array(out, dtype=np.float32)


def random_blocks(qtype, n_rows, n_cols, rng, scale=0.001):
    """Random rows: quantized types get uniform random quants with every block scale = `scale`
    (Q8_0: weights uniform in +-128 * scale, std ~74 * scale); float types N(0, 0.02^2)."""
    bs, ts = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = n_rows * n_cols // bs
    if qtype == Q.F32:
        return (rng.standard_normal(n_rows * n_cols, dtype=np.float32) * 0.02).reshape(n_rows, n_cols)
    if qtype == Q.F16:
        return (rng.standard_normal(n_rows * n_cols, dtype=np.float32) * 0.02).astype(
            np.float16).reshape(n_rows, n_cols)
    raw = rng.integers(0, 256, size=(n_blocks, ts), dtype=np.uint8)
    if qtype == Q.BF16:
        v = (rng.standard_normal(n_rows * n_cols, dtype=np.float32) * 0.02).view(np.uint32)
        return (v >> 16).astype(np.uint16).view(np.uint8).reshape(n_rows, n_cols * 2)
    scale = np.full(n_blocks, scale, dtype=np.float16).view(np.uint8).reshape(n_blocks, 2)
    for off in SCALE_FIELDS.get(qtype, []):
        raw[:, off:off + 2] = scale
    return raw.reshape(n_rows, n_cols // bs * ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="llama3-8b")
    ap.add_argument("--type", default="Q4_0", choices=sorted(TYPES) + sorted(MIXES))
    ap.add_argument("--data", choices=["zeros", "random"], default="zeros",
                    help="zeros: sparse file (no disk used); random: every byte written")
    ap.add_argument("--tokenizer", help="Meta's Llama 3 tokenizer.model for a real vocabulary")
    ap.add_argument("--layers", type=int, help="override the number of blocks")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--block-scale", type=float, default=0.001,
                    help="--data random: the scale of every quantized block (default 0.001)")
    a = ap.parse_args()
    p = dict(PRESETS[a.preset])
    if a.layers:
        p["n_layer"] = a.layers
    hd = p["dim"] // p["n_head"]
    base, strong = MIXES.get(a.type, (a.type, a.type))

    w = gguf.GGUFWriter(a.out, "llama")
    w.add_name("%s-shaped %s (%s weights)" % (a.preset, a.type, a.data))
    w.add_context_length(p["ctx"])
    w.add_embedding_length(p["dim"])
    w.add_block_count(p["n_layer"])
    w.add_feed_forward_length(p["n_ff"])
    w.add_head_count(p["n_head"])
    w.add_head_count_kv(p["n_kv"])
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(p["theta"])
    w.add_rope_dimension_count(hd)
    w.add_vocab_size(p["vocab"])
    w.add_file_type(1 if a.type == "F16" else 0)
    if a.tokenizer:
        print("make_shaped_gguf: deriving merges from %s ..." % a.tokenizer, file=sys.stderr)
        tokens, types, merges = llama3_vocab(a.tokenizer)
    else:
        tokens, types, merges = synthetic_vocab(p["vocab"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(128000)
    w.add_eos_token_id(128009)

    tensors = []  # (name, qtype, rows, cols)
    tensors.append(("token_embd.weight", TYPES[base if not p["tied"] else strong], p["vocab"], p["dim"]))
    if p["rope_scaling"]:
        tensors.append(("rope_freqs.weight", Q.F32, 1, hd // 2))
    for i in range(p["n_layer"]):
        b = "blk.%d." % i
        tensors += [(b + "attn_norm.weight", Q.F32, 1, p["dim"]),
                    (b + "attn_q.weight", TYPES[base], p["n_head"] * hd, p["dim"]),
                    (b + "attn_k.weight", TYPES[base], p["n_kv"] * hd, p["dim"]),
                    (b + "attn_v.weight", TYPES[strong], p["n_kv"] * hd, p["dim"]),
                    (b + "attn_output.weight", TYPES[base], p["dim"], p["n_head"] * hd),
                    (b + "ffn_norm.weight", Q.F32, 1, p["dim"]),
                    (b + "ffn_gate.weight", TYPES[base], p["n_ff"], p["dim"]),
                    (b + "ffn_up.weight", TYPES[base], p["n_ff"], p["dim"]),
                    (b + "ffn_down.weight", TYPES[strong], p["dim"], p["n_ff"])]
    tensors.append(("output_norm.weight", Q.F32, 1, p["dim"]))
    if not p["tied"]:
        tensors.append(("output.weight", TYPES[strong], p["vocab"], p["dim"]))

    def nbytes(qt, rows, cols):
        bs, ts = gguf.GGML_QUANT_SIZES[qt]
        return rows * cols // bs * ts

    for name, qt, rows, cols in tensors:
        if qt in (Q.F32, Q.F16):  # element shape
            shape = (rows, cols) if rows > 1 else (cols,)
            dt = np.dtype(np.float32 if qt == Q.F32 else np.float16)
        else:  # byte shape: rows x bytes per row
            shape = (rows, nbytes(qt, 1, cols))
            dt = np.dtype(np.uint8)
        w.add_tensor_info(name, shape, dt, nbytes(qt, rows, cols), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    f = w.fout[0]
    align = 32
    pos = f.tell()
    f.write(b"\0" * ((align - pos % align) % align))
    data_start = f.tell()
    rng = np.random.default_rng(a.seed)
    total = sum(nbytes(qt, r, c) for _, qt, r, c in tensors)
    done = 0
    for name, qt, rows, cols in tensors:
        nb = nbytes(qt, rows, cols)
        pad = (align - nb % align) % align
        if name.endswith("_norm.weight"):
            f.write(np.ones(cols, dtype=np.float32).tobytes())
        elif name == "rope_freqs.weight":
            f.write(llama3_rope_factors(hd, p["theta"], p.get("factor", 32.0)).tobytes())
        elif a.data == "zeros":
            f.seek(nb, os.SEEK_CUR)
        else:
            for r0 in range(0, rows, 4096):
                f.write(random_blocks(qt, min(4096, rows - r0), cols, rng, a.block_scale).tobytes())
        if pad:
            f.seek(pad, os.SEEK_CUR)
        done += nb
        if a.data == "random" and not name.endswith("norm.weight"):
            print("\rmake_shaped_gguf: %5.1f%% of %.2f GB" % (100.0 * done / total, total / 1e9),
                  end="", file=sys.stderr)
    f.truncate(f.tell())
    f.close()
    n_params = sum(r * c for _, _, r, c in tensors)
    print("\nmake_shaped_gguf: wrote %s: %d tensors, %d parameters, data %.2f GB from offset %d"
          % (a.out, len(tensors), n_params, total / 1e9, data_start), file=sys.stderr)


if __name__ == "__main__":
    main()
