#!/usr/bin/env python3
"""The torch + peft side of bench/train_lora.py: LoRA fine-tuning of a GGUF llama on given batches.

Run with the torch interpreter (.venv-torch/bin/python: Debian's CPU torch 1.13, transformers
4.49, peft 0.14, gguf). Not a test; bench/train_lora.py drives it.

    torch_peft_train.py --gguf MODEL.gguf --batches BATCHES.json [--warmup-steps 2] [--threads 2]
        [--rank 8] [--alpha 16] [--targets q,k,v,o,gate,up,down] [--lr 2e-4] [--checkpoint]

The model: the GGUF's tensors read with plain file reads (not mmapped, so the quantized file is
never part of this process's RSS), dequantized to fp32 by gguf-py, Q / K rows permuted back from
GGUF's adjacent-pair rope order to Hugging Face's rotate_half order, assigned into a
`LlamaForCausalLM` built without initialising its weights (transformers 4.49's own
`from_pretrained(gguf_file=...)` needs `torch.device` as a context manager, torch >= 2.0).
So torch + peft train on an fp32 copy of the dequantized base: that is what they can train on.

The batches: BATCHES.json as `build/tests/data_dump --batch B --steps N` writes them (the exact
ids / targets `llama3c train` builds from the same data, seed and sequence length; target -1 is
masked), so both engines process the same B x T positions and the same trained targets.
Packed rows (data_dump --pack: each step also has "pos", restarting at 0 where an example
starts) get position_ids = pos and a 4D additive attention mask that lets a token see only the
earlier tokens of its own example (transformers takes a 4D mask as given), as llama3c's packing.

The loop: peft LoraConfig(r, lora_alpha, target_modules, lora_dropout=0), AdamW (weight decay 0)
over the adapter parameters, loss = cross_entropy(logits, targets, ignore_index=-1) (mean over
trained targets), clip_grad_norm_(1.0). The first --warmup-steps batches are run but not timed.
The last stdout line is a JSON summary like `llama3c train`'s: steps, tokens (B*T*timed steps),
trained_tokens, seconds, tok_per_s, first_loss, train_loss (the last step's, as llama3c's), plus losses (every step),
step_seconds, load_seconds, n_params, n_trainable.
"""
import argparse
import json
import os
import sys
import time

HF_NAMES = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
            "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
            "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm",
            "ffn_norm": "post_attention_layernorm"}
TARGETS = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj", "gate": "gate_proj",
           "up": "up_proj", "down": "down_proj"}


def field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def load_gguf_llama(path):
    """A LlamaForCausalLM (fp32) holding the GGUF's weights dequantized."""
    import gguf
    import numpy as np
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    r = gguf.GGUFReader(path)  # header only: tensor bytes are read below with plain reads
    arch = field(r, "general.architecture")
    if arch != "llama":
        sys.exit("torch_peft_train.py: %s: architecture %r, not llama" % (path, arch))
    kv = lambda k, d=None: field(r, "llama." + k, d)  # noqa: E731
    tensors = {t.name: t for t in r.tensors}
    dim, n_head = int(kv("embedding_length")), int(kv("attention.head_count"))
    n_kv = int(kv("attention.head_count_kv", n_head))
    vocab = int(tensors["token_embd.weight"].shape[1])
    tied = "output.weight" not in tensors
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=dim, intermediate_size=int(kv("feed_forward_length")),
                      num_hidden_layers=int(kv("block_count")), num_attention_heads=n_head,
                      num_key_value_heads=n_kv, max_position_embeddings=int(kv("context_length", 4096)),
                      rms_norm_eps=float(kv("attention.layer_norm_rms_epsilon", 1e-5)),
                      rope_theta=float(kv("rope.freq_base", 10000.0)), tie_word_embeddings=tied,
                      hidden_act="silu", attention_bias=False, mlp_bias=False, torch_dtype="float32",
                      use_cache=False)
    cfg._attn_implementation = "eager"  # torch 1.13 has no scaled_dot_product_attention
    if int(kv("rope.dimension_count", dim // n_head)) != dim // n_head:
        sys.exit("torch_peft_train.py: partial rotary dimensions are not supported")

    # build without initialising: the parameters stay untouched torch.empty pages until assigned
    saved = torch.nn.Linear.reset_parameters, torch.nn.Embedding.reset_parameters
    torch.nn.Linear.reset_parameters = torch.nn.Embedding.reset_parameters = lambda self: None
    try:
        model = LlamaForCausalLM(cfg)
    finally:
        torch.nn.Linear.reset_parameters, torch.nn.Embedding.reset_parameters = saved
    params = dict(model.named_parameters())
    hd = dim // n_head
    rope_freqs = None
    with open(path, "rb") as f:
        for name, t in tensors.items():
            f.seek(t.data_offset)
            raw = np.frombuffer(f.read(int(t.n_bytes)), dtype=np.uint8)
            shape = tuple(int(s) for s in reversed(t.shape))  # numpy order: [rows, per row]
            qt = t.tensor_type
            if qt == gguf.GGMLQuantizationType.F32:
                w = raw.view(np.float32).reshape(shape)
            elif qt == gguf.GGMLQuantizationType.F16:
                w = raw.view(np.float16).astype(np.float32).reshape(shape)
            else:
                w = gguf.quants.dequantize(raw.reshape(shape[0] if len(shape) > 1 else 1, -1), qt)
                w = np.ascontiguousarray(w, dtype=np.float32).reshape(shape)
            if name == "rope_freqs.weight":
                rope_freqs = w
                continue
            parts = name.split(".")
            if parts[0] == "blk":
                layer, kind = int(parts[1]), parts[2]
                if kind in ("attn_q", "attn_k"):  # GGUF row h*hd + 2i + j = HF row h*hd + j*hd/2 + i
                    heads = n_head if kind == "attn_q" else n_kv
                    w = w.reshape(heads, hd // 2, 2, -1).swapaxes(1, 2).reshape(shape)
                hf = "model.layers.%d.%s.weight" % (layer, HF_NAMES[kind])
            else:
                hf = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                      "output.weight": "lm_head.weight"}[name]
            p = params[hf]
            if tuple(p.shape) != w.shape:
                sys.exit("torch_peft_train.py: %s: shape %s, model expects %s" % (name, w.shape, tuple(p.shape)))
            p.data = torch.from_numpy(np.array(w, dtype=np.float32, copy=not w.flags.writeable, order="C"))
    if tied:
        model.tie_weights()
    if rope_freqs is not None:  # llama 3.1 scaling as GGUF stores it: frequencies divided by these
        rot = model.model.rotary_emb
        rot.inv_freq = rot.inv_freq / torch.from_numpy(rope_freqs.astype(np.float32))
        rot.original_inv_freq = rot.inv_freq
    return model


def blas_loaded():
    """The BLAS library this process mapped (torch on Debian calls libblas.so.3, whichever it is)."""
    with open("/proc/self/maps") as f:
        libs = {ln.split()[-1] for ln in f if "blas" in ln.rsplit("/", 1)[-1]}
    return ", ".join(sorted(libs)) or "?"


def rss_mib(key="VmRSS"):
    """VmRSS (now) or VmHWM (peak so far) of this process, MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--batches", required=True, help="data_dump --batch JSON")
    ap.add_argument("--warmup-steps", type=int, default=2, help="untimed steps first (default 2)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16)
    ap.add_argument("--targets", default="q,k,v,o,gate,up,down")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--checkpoint", action="store_true", help="gradient checkpointing (non-reentrant)")
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()

    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, get_peft_model

    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(a.seed)
    with open(a.batches) as f:
        data = json.load(f)
    T, steps = data["seq_len"], data["steps"]
    B = len(steps[0]["ids"]) // T
    if len(steps) <= a.warmup_steps:
        sys.exit("torch_peft_train.py: %d batches, need more than --warmup-steps %d" % (len(steps), a.warmup_steps))

    t0 = time.perf_counter()
    model = load_gguf_llama(a.gguf)
    if a.checkpoint:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lcfg = LoraConfig(r=a.rank, lora_alpha=a.alpha, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules=[TARGETS[t] for t in a.targets.split(",")])
    model = get_peft_model(model, lcfg)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=a.lr, weight_decay=0.0)
    load_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in trainable)
    print("torch+peft: %d params (%d trainable), loaded in %.1f s, RSS %.0f MiB (peak %.0f), B %d T %d, %d threads%s"
          % (n_params, n_train, load_s, rss_mib(), rss_mib("VmHWM"), B, T, torch.get_num_threads(),
             ", checkpointing" if a.checkpoint else ""), file=sys.stderr, flush=True)

    losses, times = [], []
    for i, s in enumerate(steps):
        ids = torch.tensor(s["ids"], dtype=torch.long).view(B, T)
        tgt = torch.tensor(s["targets"], dtype=torch.long).view(B * T)
        t = time.perf_counter()
        extra = {}
        if "pos" in s:  # packed: own positions, attention within each example only
            pos = torch.tensor(s["pos"], dtype=torch.long).view(B, T)
            seg = torch.cumsum((pos == 0).long(), dim=1)
            ok = (seg[:, :, None] == seg[:, None, :]) & torch.ones(T, T, dtype=torch.bool).tril()
            mask = torch.zeros(B, 1, T, T).masked_fill_(~ok[:, None], torch.finfo(torch.float32).min)
            extra = {"position_ids": pos, "attention_mask": mask}
        logits = model(input_ids=ids, use_cache=False, **extra).logits
        loss = F.cross_entropy(logits.view(B * T, -1), tgt, ignore_index=-1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
        losses.append(float(loss))
        print("torch+peft: step %d/%d loss %.4f %.2f s, peak RSS %.0f MiB%s" % (
              i + 1, len(steps), losses[-1], times[-1], rss_mib("VmHWM"),
              " (warm-up, not timed)" if i < a.warmup_steps else ""), file=sys.stderr, flush=True)

    w = a.warmup_steps
    secs = sum(times[w:])
    timed = steps[w:]
    out = {"engine": "torch+peft", "steps": len(timed), "warmup_steps": w, "batch": B, "seq": T,
           "tokens": B * T * len(timed), "trained_tokens": sum(s["n_trained"] for s in timed),
           "packed": "pos" in steps[0],
           "seconds": secs, "tok_per_s": B * T * len(timed) / secs,
           "first_loss": losses[0], "train_loss": losses[-1], "losses": losses, "step_seconds": times,
           "load_seconds": load_s, "n_params": n_params, "n_trainable": n_train,
           "torch": torch.__version__, "blas": blas_loaded(), "threads": torch.get_num_threads(), "checkpoint": a.checkpoint}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
