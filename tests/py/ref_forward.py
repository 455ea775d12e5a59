"""ref_forward.py -- float64 numpy reference forward pass of a llama GGUF (the test oracle).

Independent of the C engine: tensors are read with gguf-py's GGUFReader and dequantized with
gguf.quants.dequantize (gguf-py's own numpy dequantizers), then everything is computed in
float64. Deliberately simple and unoptimised, like llm.c's CPU reference.

Conventions (llama.cpp's LLM_ARCH_LLAMA):
  - a GGUF tensor with ne = [n0, n1] is the row-major numpy matrix [n1, n0]; y = W @ x;
  - RoPE "normal" mode: adjacent pairs (x[2i], x[2i+1]) of each head rotated by
    pos * freq_scale * theta^(-2i/n_rot) / rope_freqs[i] (rope_freqs only when the tensor exists;
    freq_scale = 1 / llama.rope.scaling.factor (or the older rope.scale_linear) unless
    llama.rope.scaling.type is "none": linear scaling as llama.cpp reads it);
    dimensions >= n_rot are left alone;
  - RMSNorm y = x / sqrt(mean(x^2) + eps) * w; SwiGLU ffn_down(silu(ffn_gate x) * ffn_up x);
  - output.weight absent: the classifier is token_embd (tied).
"""
import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


class RefModel:
    """Hyperparameters + float64 weights of a llama GGUF."""

    def __init__(self, path):
        r = GGUFReader(path)
        arch = _field(r, "general.architecture", "llama")
        if arch != "llama":
            raise ValueError(f"{path}: architecture {arch!r}, expected 'llama'")
        p = "llama."
        self.n_embd = int(_field(r, p + "embedding_length"))
        self.n_layer = int(_field(r, p + "block_count"))
        self.n_head = int(_field(r, p + "attention.head_count"))
        self.n_head_kv = int(_field(r, p + "attention.head_count_kv", self.n_head))
        self.n_ff = int(_field(r, p + "feed_forward_length"))
        self.head_dim = self.n_embd // self.n_head
        self.n_rot = int(_field(r, p + "rope.dimension_count", self.head_dim))
        self.theta = float(_field(r, p + "rope.freq_base", 10000.0))
        self.eps = float(_field(r, p + "attention.layer_norm_rms_epsilon", 1e-5))
        self.scaling_type = _field(r, p + "rope.scaling.type", "linear")
        if self.scaling_type not in ("none", "linear"):
            raise ValueError(f"{path}: rope scaling {self.scaling_type!r} is not modelled here")
        factor = float(_field(r, p + "rope.scaling.factor", _field(r, p + "rope.scale_linear", 0.0)))
        self.freq_scale = 1.0 / factor if factor > 0 and self.scaling_type != "none" else 1.0
        self.types = {}
        self.w = {}
        for t in r.tensors:
            ne = [int(x) for x in t.shape]
            a = dequantize(np.asarray(t.data), t.tensor_type)
            self.w[t.name] = np.asarray(a, dtype=np.float64).reshape(tuple(reversed(ne)))
            self.types[t.name] = t.tensor_type.name
        self.n_vocab = self.w["token_embd.weight"].shape[0]
        self.out = self.w.get("output.weight", self.w["token_embd.weight"])
        self.rope_freqs = self.w.get("rope_freqs.weight")

    # ------------------------------------------------------------------ pieces

    def rmsnorm(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def rope(self, x, pos):
        """x: [T, H, head_dim], pos: [T]. Rotates adjacent pairs of the first n_rot dims."""
        half = self.n_rot // 2
        inv = self.freq_scale * self.theta ** (-2.0 * np.arange(half) / self.n_rot)
        if self.rope_freqs is not None:
            inv = inv / self.rope_freqs[:half]
        ang = pos[:, None].astype(np.float64) * inv[None, :]  # [T, half]
        c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        y = x.copy()
        x0, x1 = x[..., 0:2 * half:2], x[..., 1:2 * half:2]
        y[..., 0:2 * half:2] = x0 * c - x1 * s
        y[..., 1:2 * half:2] = x0 * s + x1 * c
        return y

    # ------------------------------------------------------------------ forward

    def forward(self, ids, rows=None):
        """Logits [T, n_vocab] (float64) of ids evaluated as one sequence from position 0;
        rows (a list of positions): only those rows' logits, [len(rows), n_vocab]."""
        x = self.hidden(ids)
        if rows is not None:
            x = x[np.asarray(rows, dtype=np.int64)]
        return x @ self.out.T

    def hidden(self, ids):
        """Final-normed hidden state [T, n_embd] (float64): after output_norm, before the classifier
        (what llama.cpp returns as the embeddings of a llama model)."""
        ids = np.asarray(ids, dtype=np.int64)
        T = len(ids)
        hd, H, Hkv = self.head_dim, self.n_head, self.n_head_kv
        pos = np.arange(T)
        x = self.w["token_embd.weight"][ids]  # [T, dim]
        mask = np.triu(np.full((T, T), -np.inf), 1)
        for l in range(self.n_layer):
            g = lambda n: self.w[f"blk.{l}.{n}.weight"]
            h = self.rmsnorm(x, g("attn_norm"))
            q = (h @ g("attn_q").T).reshape(T, H, hd)
            k = (h @ g("attn_k").T).reshape(T, Hkv, hd)
            v = (h @ g("attn_v").T).reshape(T, Hkv, hd)
            q, k = self.rope(q, pos), self.rope(k, pos)
            att = np.empty((T, H, hd))
            for hh in range(H):
                kv = hh // (H // Hkv)
                sc = q[:, hh, :] @ k[:, kv, :].T / np.sqrt(hd) + mask  # [T, T]
                sc = np.exp(sc - sc.max(axis=1, keepdims=True))
                sc /= sc.sum(axis=1, keepdims=True)
                att[:, hh, :] = sc @ v[:, kv, :]
            x = x + att.reshape(T, H * hd) @ g("attn_output").T
            h = self.rmsnorm(x, g("ffn_norm"))
            a = h @ g("ffn_gate").T
            x = x + ((a / (1.0 + np.exp(-a))) * (h @ g("ffn_up").T)) @ g("ffn_down").T
        return self.rmsnorm(x, self.w["output_norm.weight"])

    def greedy(self, ids, n):
        """Greedy continuation: n new ids after the prompt (full recompute per step; tiny models only)."""
        seq = list(ids)
        out = []
        for _ in range(n):
            nxt = int(np.argmax(self.forward(seq)[-1]))
            out.append(nxt)
            seq.append(nxt)
        return out
