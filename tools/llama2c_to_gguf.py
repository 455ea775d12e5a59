#!/usr/bin/env python3
"""llama2c_to_gguf.py -- convert a llama2.c checkpoint (+ its tokenizer .bin) into a llama GGUF.

    python3 tools/llama2c_to_gguf.py stories260K.bin tok512.bin out.gguf [--type f32|f16|q8_0]

Checkpoint layout (karpathy/llama2.c run.c, "legacy" version 0 export):
    int32 header[7] = dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
    (vocab_size < 0 means an untied classifier follows the weights), then float32 arrays:
    token_embedding [vocab, dim], rms_att [L, dim], wq [L, dim, dim], wk [L, kv_dim, dim],
    wv [L, kv_dim, dim], wo [L, dim, dim], rms_ffn [L, dim], w1 [L, hidden, dim],
    w2 [L, dim, hidden], w3 [L, hidden, dim], rms_final [dim],
    freq_cis_real [seq_len, head_size/2], freq_cis_imag [same] (unused, skipped),
    wcls [vocab, dim] (only when vocab_size < 0).
Every matrix is row-major [out, in], which is exactly GGUF's ne = [in, out].

RoPE: llama2.c rotates adjacent pairs (x[2i], x[2i+1]), the same as GGUF llama's "normal" rope,
so wq / wk are stored as they are (no permutation; the HF->GGUF converter permutes only
because HF uses rotate_half).

Tokenizer layout (llama2.c tokenizer.bin): int32 max_token_length, then per token
float32 score, int32 len, len bytes. Pieces use ' ' where SentencePiece uses U+2581; id 0 is
<unk>, 1 is "\\n<s>\\n", 2 is "\\n</s>\\n", 3..258 are <0x00>..<0xFF>.
"""
import argparse
import os
import struct
import sys

import numpy as np

try:
    import gguf
except ImportError:  # pragma: no cover
    sys.exit("llama2c_to_gguf: the 'gguf' Python package is required (pip install gguf)")

T = gguf.GGMLQuantizationType
HEADER = struct.Struct("<7i")
SPM_SPACE = "\u2581"

# token_type values of tokenizer.ggml.token_type (llama.cpp llama_token_type)
TT_NORMAL, TT_UNKNOWN, TT_CONTROL, TT_BYTE = 1, 2, 3, 6


class ConvertError(Exception):
    pass


def read_checkpoint(path):
    """Returns (hparams dict, dict of float32 arrays in llama2.c naming)."""
    size = os.path.getsize(path)
    if size < HEADER.size:
        raise ConvertError(f"{path}: {size} bytes, too small for the 28-byte llama2.c header")
    with open(path, "rb") as f:
        dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len = HEADER.unpack(f.read(HEADER.size))
    shared = vocab > 0
    vocab = abs(vocab)
    for name, v in (("dim", dim), ("hidden_dim", hidden), ("n_layers", n_layers), ("n_heads", n_heads),
                    ("n_kv_heads", n_kv_heads), ("vocab_size", vocab), ("seq_len", seq_len)):
        if v <= 0 or v > 1 << 24:
            raise ConvertError(f"{path}: header field {name} = {v} is out of range (not a llama2.c checkpoint?)")
    if dim % n_heads or n_heads % n_kv_heads:
        raise ConvertError(f"{path}: dim {dim} / n_heads {n_heads} / n_kv_heads {n_kv_heads} are inconsistent")
    head = dim // n_heads
    kv_dim = n_kv_heads * head
    L = n_layers
    shapes = [
        ("token_embedding", (vocab, dim)),
        ("rms_att", (L, dim)),
        ("wq", (L, dim, dim)),
        ("wk", (L, kv_dim, dim)),
        ("wv", (L, kv_dim, dim)),
        ("wo", (L, dim, dim)),
        ("rms_ffn", (L, dim)),
        ("w1", (L, hidden, dim)),
        ("w2", (L, dim, hidden)),
        ("w3", (L, hidden, dim)),
        ("rms_final", (dim,)),
        ("freq_cis_real", (seq_len, head // 2)),
        ("freq_cis_imag", (seq_len, head // 2)),
    ]
    if not shared:
        shapes.append(("wcls", (vocab, dim)))
    n_floats = sum(int(np.prod(s)) for _, s in shapes)
    expected = HEADER.size + 4 * n_floats
    if size != expected:
        raise ConvertError(
            f"{path}: file is {size} bytes but the header (dim={dim} hidden={hidden} layers={L} heads={n_heads} "
            f"kv_heads={n_kv_heads} vocab={vocab} seq_len={seq_len} {'tied' if shared else 'untied'}) "
            f"implies {expected} bytes (28 + 4 x {n_floats} floats)")
    data = np.memmap(path, dtype="<f4", mode="r", offset=HEADER.size, shape=(n_floats,))
    w, off = {}, 0
    for name, shape in shapes:
        n = int(np.prod(shape))
        w[name] = np.asarray(data[off:off + n], dtype=np.float32).reshape(shape)
        off += n
    hp = dict(dim=dim, hidden=hidden, n_layers=L, n_heads=n_heads, n_kv_heads=n_kv_heads, vocab=vocab,
              seq_len=seq_len, head=head, shared=shared)
    return hp, w


def read_tokenizer(path, vocab):
    """Returns (tokens as str, scores, token types) of a llama2.c tokenizer.bin."""
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 4:
        raise ConvertError(f"{path}: {len(buf)} bytes, too small for a llama2.c tokenizer")
    off = 4
    tokens, scores, types = [], [], []
    for i in range(vocab):
        if off + 8 > len(buf):
            raise ConvertError(f"{path}: ends at token {i} (byte {off}), but the model has {vocab} tokens")
        score, n = struct.unpack_from("<fi", buf, off)
        off += 8
        if n < 0 or off + n > len(buf):
            raise ConvertError(f"{path}: token {i} has length {n} at byte {off}, past the end ({len(buf)} bytes)")
        piece = buf[off:off + n].decode("utf-8", errors="replace")
        off += n
        if i == 0:
            piece, tt = "<unk>", TT_UNKNOWN
        elif i == 1:
            piece, tt = "<s>", TT_CONTROL
        elif i == 2:
            piece, tt = "</s>", TT_CONTROL
        elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            tt = TT_BYTE
        else:
            piece, tt = piece.replace(" ", SPM_SPACE), TT_NORMAL
        tokens.append(piece)
        scores.append(score)
        types.append(tt)
    if off != len(buf):
        raise ConvertError(f"{path}: {len(buf) - off} bytes left after {vocab} tokens (vocab size mismatch?)")
    return tokens, scores, types


def encode_matrix(a, out_type):
    """Returns (data, raw_dtype) for GGUFWriter.add_tensor; rows that do not fit the block size fall back."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    if out_type == "f32" or a.ndim == 1:
        return a, T.F32
    if out_type == "f16":
        return a.astype(np.float16), T.F16
    block = gguf.GGML_QUANT_SIZES[T.Q8_0][0]
    if a.shape[-1] % block:
        return a.astype(np.float16), T.F16
    return gguf.quants.quantize(a, T.Q8_0), T.Q8_0


def convert(ckpt, tok_path, out_path, out_type="f32", name=None, log=print):
    hp, w = read_checkpoint(ckpt)
    log(f"checkpoint: dim={hp['dim']} hidden={hp['hidden']} layers={hp['n_layers']} heads={hp['n_heads']} "
        f"kv_heads={hp['n_kv_heads']} vocab={hp['vocab']} seq_len={hp['seq_len']} "
        f"classifier={'tied' if hp['shared'] else 'untied'}")
    tokens, scores, types = read_tokenizer(tok_path, hp["vocab"])
    log(f"tokenizer: {len(tokens)} tokens")

    ftype = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
             "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[out_type]
    wr = gguf.GGUFWriter(out_path, "llama")
    wr.add_name(name or os.path.splitext(os.path.basename(ckpt))[0])
    wr.add_file_type(int(ftype))
    wr.add_context_length(hp["seq_len"])
    wr.add_embedding_length(hp["dim"])
    wr.add_block_count(hp["n_layers"])
    wr.add_feed_forward_length(hp["hidden"])
    wr.add_head_count(hp["n_heads"])
    wr.add_head_count_kv(hp["n_kv_heads"])
    wr.add_rope_dimension_count(hp["head"])
    wr.add_rope_freq_base(10000.0)
    wr.add_layer_norm_rms_eps(1e-5)
    wr.add_vocab_size(hp["vocab"])

    wr.add_tokenizer_model("llama")
    wr.add_token_list(tokens)
    wr.add_token_scores(scores)
    wr.add_token_types(types)
    wr.add_bos_token_id(1)
    wr.add_eos_token_id(2)
    wr.add_unk_token_id(0)
    wr.add_add_bos_token(True)
    wr.add_add_eos_token(False)
    wr.add_add_space_prefix(True)

    tensors = [("token_embd.weight", w["token_embedding"])]
    for l in range(hp["n_layers"]):
        tensors += [
            (f"blk.{l}.attn_norm.weight", w["rms_att"][l]),
            (f"blk.{l}.attn_q.weight", w["wq"][l]),
            (f"blk.{l}.attn_k.weight", w["wk"][l]),
            (f"blk.{l}.attn_v.weight", w["wv"][l]),
            (f"blk.{l}.attn_output.weight", w["wo"][l]),
            (f"blk.{l}.ffn_norm.weight", w["rms_ffn"][l]),
            (f"blk.{l}.ffn_gate.weight", w["w1"][l]),
            (f"blk.{l}.ffn_down.weight", w["w2"][l]),
            (f"blk.{l}.ffn_up.weight", w["w3"][l]),
        ]
    tensors.append(("output_norm.weight", w["rms_final"]))
    if not hp["shared"]:
        tensors.append(("output.weight", w["wcls"]))

    fallback = []
    for name, a in tensors:
        data, dt = encode_matrix(a, out_type)
        if out_type == "q8_0" and a.ndim == 2 and dt != T.Q8_0:
            fallback.append(name)
        wr.add_tensor(name, data, raw_dtype=dt)
    if fallback:
        log(f"note: {len(fallback)} tensors have rows not divisible by 32 and were written as F16 "
            f"(e.g. {fallback[0]})")
    log(f"writing {out_path} ({len(tensors)} tensors, type {out_type})")
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    log(f"done: {os.path.getsize(out_path)} bytes")


def main(argv=None):
    ap = argparse.ArgumentParser(description="Convert a llama2.c checkpoint and tokenizer to a llama GGUF.")
    ap.add_argument("checkpoint", help="llama2.c model .bin (e.g. stories260K.bin)")
    ap.add_argument("tokenizer", help="llama2.c tokenizer .bin (e.g. tok512.bin)")
    ap.add_argument("output", help="output .gguf path")
    ap.add_argument("--type", choices=("f32", "f16", "q8_0"), default="f32",
                    help="type of the matrices (norm vectors stay F32); default f32")
    ap.add_argument("--name", help="general.name (default: checkpoint file name)")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    log = (lambda *_: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
    try:
        convert(args.checkpoint, args.tokenizer, args.output, args.type, args.name, log)
    except (ConvertError, OSError) as e:
        print(f"llama2c_to_gguf: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
