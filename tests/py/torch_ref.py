"""PyTorch / transformers reference for the Hugging Face folder tests (tests/py/test_hf_load.py).

torch and transformers live in a separate venv made from Debian's CPU-only python3-torch
(scripts/setup.sh --test: `/usr/bin/python3 -m venv --system-site-packages .venv-torch` plus a pinned
transformers), so the pytest side never imports torch: it runs this file under that interpreter.

- torch_python (fixture): the .venv-torch interpreter; skips with the reason when it is missing or
  cannot import torch + transformers.
- make_hf_model(torch_python, outdir, spec): writes a random LlamaForCausalLM folder with
  save_pretrained (spec below) and returns transformers' float32 logits [len(ids), vocab] for
  spec["ids"], computed from the saved folder (so F16 / BF16 weights are the rounded ones).

Command line (under the torch interpreter): python torch_ref.py make SPEC.json OUTDIR LOGITS.npy
spec keys: vocab, hidden, ff, layers, heads, kv_heads, dtype (float32|float16|bfloat16), tied,
rope_scaling (dict or null), max_shard_size (str or null), seed, ids, ctx, theta, tokenizer (bool:
also write a byte-level BPE tokenizer.json + tokenizer_config.json, and LOGITS.npy.tok.json with the
`tokenizers` library's ids of spec["texts"]).
"""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
TORCH_PY = os.environ.get("L3C_TORCH_PYTHON", os.path.join(REPO, ".venv-torch", "bin", "python"))


def _check_torch_python():
    if not os.path.exists(TORCH_PY):
        return f"{TORCH_PY} is missing (scripts/setup.sh --test makes it)"
    p = subprocess.run([TORCH_PY, "-c", "import torch, transformers, safetensors"], capture_output=True,
                       text=True, timeout=300)
    if p.returncode != 0:
        return f"{TORCH_PY} cannot import torch/transformers/safetensors: {p.stderr.strip()[-300:]}"
    return None


try:
    import pytest

    @pytest.fixture(scope="session")
    def torch_python():
        why = _check_torch_python()
        if why:
            pytest.skip(why)
        return TORCH_PY
except ImportError:  # under the torch interpreter, without pytest
    pass


def make_hf_model(torch_python, outdir, spec):
    import numpy as np

    os.makedirs(outdir, exist_ok=True)
    spec_path = os.path.join(outdir, "..", os.path.basename(outdir) + ".spec.json")
    logits_path = os.path.join(outdir, "..", os.path.basename(outdir) + ".logits.npy")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    p = subprocess.run([torch_python, os.path.abspath(__file__), "make", spec_path, outdir, logits_path],
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"torch_ref.py make failed:\n{p.stderr[-4000:]}")
    return np.load(logits_path)


# ---------------------------------------------------------------- under the torch interpreter

def _tokenizer_json(outdir, vocab):
    """A byte-level BPE tokenizer.json (GPT-2 style, as SmolLM's) trained on a small text, with
    <|begin_of_text|> / <|end_of_text|> specials, padded to exactly `vocab` entries."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers, processors

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    text = ("The quick brown fox jumps over the lazy dog. " * 3 +
            "Hello world! 12345 llamas eat grass; tokenizers split text into pieces. ") * 20
    trainer = trainers.BpeTrainer(vocab_size=vocab - 2, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([text], trainer)
    tok.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>"])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                       special_tokens=[("<|begin_of_text|>", bos)])
    tok.save(os.path.join(outdir, "tokenizer.json"))
    with open(os.path.join(outdir, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
                   "chat_template": "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"}, f)
    return tok.get_vocab_size()


def _make(spec_path, outdir, logits_path):
    import numpy as np
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    with open(spec_path) as f:
        s = json.load(f)
    torch.manual_seed(s.get("seed", 0))
    cfg = LlamaConfig(vocab_size=s["vocab"], hidden_size=s["hidden"], intermediate_size=s["ff"],
                      num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
                      num_key_value_heads=s["kv_heads"], max_position_embeddings=s.get("ctx", 256),
                      rms_norm_eps=1e-5, rope_theta=s.get("theta", 10000.0),
                      tie_word_embeddings=s["tied"], rope_scaling=s.get("rope_scaling"),
                      initializer_range=s.get("init", 0.08), bos_token_id=s["vocab"] - 2,
                      eos_token_id=s["vocab"] - 1)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # norms away from 1 so a missing / misplaced norm shows
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    dtype = getattr(torch, s["dtype"])
    model = model.to(dtype)
    kw = {"safe_serialization": True}
    if s.get("max_shard_size"):
        kw["max_shard_size"] = s["max_shard_size"]
    model.save_pretrained(outdir, **kw)
    if s.get("tokenizer"):
        _tokenizer_json(outdir, s["vocab"])
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(os.path.join(outdir, "tokenizer.json"))
        with open(logits_path + ".tok.json", "w") as f:  # the reference tokenization of spec["texts"]
            json.dump([tok.encode(t, add_special_tokens=False).ids for t in s.get("texts", [])], f)
    ref = LlamaForCausalLM.from_pretrained(outdir, torch_dtype=torch.float32, attn_implementation="eager")
    ref.eval()
    with torch.no_grad():
        logits = ref(torch.tensor([s["ids"]])).logits[0].double().numpy()
    np.save(logits_path, logits)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "make":
        _make(*sys.argv[2:])
    else:
        sys.exit("usage: torch_ref.py make SPEC.json OUTDIR LOGITS.npy")
