"""torch_train_ref.py -- the torch autograd reference of the training model (src/train/).

Run by tests/py/test_train_grad.py with an interpreter that has torch (Debian's python3-torch:
/usr/bin/python3), NOT the pytest venv. Reads what build/tests/train_dump wrote to DIR
(config.txt, index.txt, params.f32, rope_freqs.f32) and the same batch, and writes
  ref_logits.f64 [B*T x V], ref_loss.txt, ref_grads.f64 (arena order of index.txt),
  and with --steps K: ref_steps.txt ("step loss lr grad_norm"), ref_params_final.f64.

The llama forward is written here with torch.nn.functional on the GGUF-stored layout (not
transformers): y = x @ W.T, RoPE rotating ADJACENT pairs (x[2i], x[2i+1]) by
pos * theta^(-2i/n_rot) / rope_freqs[i] (the engine's "normal" mode, dims >= n_rot untouched),
GQA query head h reading kv head h // (n_head / n_head_kv), causal softmax(q k^T / sqrt(hd)) v,
RMSNorm, SwiGLU, cross-entropy with ignore_index=-1 averaged over the unmasked targets.
All in float64. AdamW is torch.optim.AdamW (weight decay on the 2-D tensors only), the schedule
linear warmup + cosine, clipping torch.nn.utils.clip_grad_norm_.

LoRA (config.txt has lora_scale): the parameters are the adapters' A [r x in] and B [out x r]
(index names "<matrix>.lora_a" / ".lora_b"); the frozen base weights come from DIR/base.f32 +
DIR/base_index.txt, written by the test from the GGUF with gguf-py's dequantization; each
adapted matrix is W + lora_scale * B @ A (PEFT's merged form), only A and B get gradients.
"""
import argparse
import math
import os

import numpy as np
import torch
import torch.nn.functional as F


def load(d):
    cfg = {}
    with open(os.path.join(d, "config.txt")) as f:
        for line in f:
            k, v = line.split()
            cfg[k] = float(v) if "." in v or "e" in v else int(v)
    index = []
    with open(os.path.join(d, "index.txt")) as f:
        for line in f:
            name, rows, cols, off = line.split()
            index.append((name, int(rows), int(cols), int(off)))
    flat = np.fromfile(os.path.join(d, "params.f32"), dtype="<f4")
    freqs = None
    if cfg["rope_freqs"]:
        freqs = np.fromfile(os.path.join(d, "rope_freqs.f32"), dtype="<f4").astype(np.float64)
    return cfg, index, flat, freqs


def make_params(index, flat):
    P = {}
    for name, rows, cols, off in index:
        a = flat[off:off + rows * cols].astype(np.float64)
        a = a.reshape(cols) if rows == 1 else a.reshape(rows, cols)
        P[name] = torch.tensor(a, dtype=torch.float64, requires_grad=True)
    return P


def load_base(d):
    """The frozen base weights (LoRA), float64, no grad."""
    flat = np.fromfile(os.path.join(d, "base.f32"), dtype="<f4")
    base = {}
    with open(os.path.join(d, "base_index.txt")) as f:
        for line in f:
            name, rows, cols, off = line.split()
            rows, cols, off = int(rows), int(cols), int(off)
            a = flat[off:off + rows * cols].astype(np.float64)
            base[name] = torch.tensor(a.reshape(cols) if rows == 1 else a.reshape(rows, cols))
    return base


def merged(P, base, scale):
    """The weights the forward sees: base, with W + scale * B @ A for every adapted matrix."""
    if base is None:
        return P
    M = dict(base)
    for name in P:
        if name.endswith(".lora_a"):
            w = name[:-len(".lora_a")]
            M[w] = base[w] + scale * (P[w + ".lora_b"] @ P[name])
    return M


TARGETS = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]


def load_dropout(d, P, cfg, B, T):
    """DIR/dropout.f32 (train_dump --lora-dropout): {(layer, matrix): mask [B, T, n_in]}, else None."""
    path = os.path.join(d, "dropout.f32")
    if not os.path.exists(path):
        return None
    flat, off, masks = np.fromfile(path, dtype="<f4").astype(np.float64), 0, {}
    for l in range(cfg["n_layer"]):
        for t in TARGETS:
            a = P.get(f"blk.{l}.{t}.weight.lora_a")
            if a is None:
                continue
            n = B * T * a.shape[1]
            masks[(l, t)] = torch.tensor(flat[off:off + n].reshape(B, T, a.shape[1]))
            off += n
    assert off == flat.size, "dropout.f32 has the wrong size"
    return masks


def forward(P, cfg, freqs, ids, lora=None):
    """ids [B, T] -> logits [B, T, V]. lora (base, scale, masks): the adapters unmerged, each
    branch's input times its dropout mask (x W^T + scale ((x * mask) A^T) B^T)."""
    B, T = ids.shape
    D, H, Hkv = cfg["n_embd"], cfg["n_head"], cfg["n_head_kv"]
    hd = D // H
    n_rot, eps = cfg["n_rot"], cfg["norm_eps"]
    half = n_rot // 2
    inv = torch.tensor(cfg["rope_theta"], dtype=torch.float64) ** (
        -2.0 * torch.arange(half, dtype=torch.float64) / n_rot)
    if freqs is not None:
        inv = inv / torch.tensor(freqs[:half])
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]  # [T, half]
    cos, sin = torch.cos(ang)[None, :, None, :], torch.sin(ang)[None, :, None, :]

    def rope(x):  # [B, T, nh, hd]
        x0, x1 = x[..., 0:2 * half:2], x[..., 1:2 * half:2]
        rot = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2)
        return torch.cat([rot, x[..., 2 * half:]], dim=-1)

    def rmsnorm(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w

    mask = torch.triu(torch.full((T, T), float("-inf"), dtype=torch.float64), 1)
    x = F.embedding(ids, P["token_embd.weight"])
    for l in range(cfg["n_layer"]):
        g = lambda n: P[f"blk.{l}.{n}.weight"]  # noqa: E731

        def lin(h, n, l=l):
            if lora is None:
                return h @ g(n).T
            base, scale, masks = lora
            y = h @ base[f"blk.{l}.{n}.weight"].T
            a = P.get(f"blk.{l}.{n}.weight.lora_a")
            if a is not None:
                y = y + scale * (((h * masks[(l, n)]) @ a.T) @ P[f"blk.{l}.{n}.weight.lora_b"].T)
            return y

        h = rmsnorm(x, g("attn_norm"))
        q = rope(lin(h, "attn_q").view(B, T, H, hd))
        k = rope(lin(h, "attn_k").view(B, T, Hkv, hd))
        v = lin(h, "attn_v").view(B, T, Hkv, hd)
        k = k.repeat_interleave(H // Hkv, dim=2)  # query head h -> kv head h // group
        v = v.repeat_interleave(H // Hkv, dim=2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, T, hd]
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + mask, dim=-1)
        o = (att @ v).transpose(1, 2).reshape(B, T, H * hd)
        x = x + lin(o, "attn_output")
        h = rmsnorm(x, g("ffn_norm"))
        x = x + lin(F.silu(lin(h, "ffn_gate")) * lin(h, "ffn_up"), "ffn_down")
    out = P.get("output.weight", P["token_embd.weight"])
    return rmsnorm(x, P["output_norm.weight"]) @ out.T


def loss_of(logits, tgt):
    V = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, V), tgt.reshape(-1), ignore_index=-1)


def lr_at(a, step):
    if step < a.warmup:
        return a.lr * (step + 1) / a.warmup
    if a.total <= a.warmup:
        return a.lr
    r = min(1.0, (step - a.warmup) / (a.total - a.warmup))
    lo = a.lr * a.min_lr_ratio
    return lo + 0.5 * (1.0 + math.cos(math.pi * r)) * (a.lr - lo)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--ids", required=True)
    ap.add_argument("--targets", required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--seq", type=int, required=True)
    ap.add_argument("--steps", type=int, default=0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--wd", type=float, default=0.0)
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--total", type=int, default=0)
    ap.add_argument("--min-lr-ratio", type=float, default=0.1)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--beta1", type=float, default=0.9)
    ap.add_argument("--beta2", type=float, default=0.999)
    ap.add_argument("--adam-eps", type=float, default=1e-8)
    a = ap.parse_args()
    torch.set_num_threads(1)

    cfg, index, flat, freqs = load(a.dir)
    shape = (a.batch, a.seq)
    ids = torch.tensor(np.fromfile(a.ids, dtype="<i4").reshape(shape).astype(np.int64))
    tgt = torch.tensor(np.fromfile(a.targets, dtype="<i4").reshape(shape).astype(np.int64))
    P = make_params(index, flat)
    names = [n for n, *_ in index]
    base = load_base(a.dir) if "lora_scale" in cfg else None
    scale = cfg.get("lora_scale", 1.0)

    masks = load_dropout(a.dir, P, cfg, *shape) if base is not None else None
    if masks is not None:  # dropout: the branches unmerged (the base's norms / embedding from base)
        logits = forward(dict(base, **P), cfg, freqs, ids, lora=(base, scale, masks))
    else:
        logits = forward(merged(P, base, scale), cfg, freqs, ids)
    loss = loss_of(logits, tgt)
    loss.backward()
    logits.detach().numpy().astype("<f8").tofile(os.path.join(a.dir, "ref_logits.f64"))
    with open(os.path.join(a.dir, "ref_loss.txt"), "w") as f:
        f.write(f"{loss.item():.17g}\n")
    np.concatenate([P[n].grad.numpy().reshape(-1) for n in names]).astype("<f8").tofile(
        os.path.join(a.dir, "ref_grads.f64"))

    if a.steps > 0:
        P = make_params(index, flat)
        params = [P[n] for n in names]
        decay = [P[n] for n, rows, *_ in index if rows > 1]
        no_decay = [P[n] for n, rows, *_ in index if rows == 1]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=a.lr, betas=(a.beta1, a.beta2), eps=a.adam_eps)
        with open(os.path.join(a.dir, "ref_steps.txt"), "w") as f:
            for s in range(a.steps):
                opt.zero_grad()
                loss = loss_of(forward(merged(P, base, scale), cfg, freqs, ids), tgt)
                loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(params, a.clip) if a.clip > 0 else torch.tensor(0.0)
                lr = lr_at(a, s)
                for grp in opt.param_groups:
                    grp["lr"] = lr
                opt.step()
                f.write(f"{s} {loss.item():.17g} {lr:.17g} {float(norm):.17g}\n")
        np.concatenate([P[n].detach().numpy().reshape(-1) for n in names]).astype("<f8").tofile(
            os.path.join(a.dir, "ref_params_final.f64"))


if __name__ == "__main__":
    main()
