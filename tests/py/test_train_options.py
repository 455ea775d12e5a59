"""`llama3c train` options PEFT users expect (apps/cli/cmd_train.c): --rslora and --full.

- --rslora: the adapter is trained with scale alpha / sqrt(r); PEFT (peft_ref.py under .venv-torch)
  loads the saved folder (use_rslora true, lora_alpha the user's) on the Hugging Face original and
  gives the logits `llama3c eval --lora adapter.gguf` gives on the GGUF conversion (whose
  adapter.lora.alpha = alpha sqrt(r) makes llama.cpp's alpha / r the same scale), within the F32
  tolerance of test_lora_infer.py (2e-5 of max).
- --full: every weight of an F32 base trained (AdamW), written as an F32 GGUF with the base's
  tokenizer and metadata: the eval loss falls, llama.cpp (llama-cpp-python) loads model.gguf and
  its logits equal `llama3c eval --kv f32` on it within 1e-4 of max (F32, as test_train_cli's
  --from-scratch); a quantized base is refused with a message pointing to LoRA.
"""
import json
import os

import numpy as np
import pytest

from conftest import eval_logits, llama_cpp_logits_f32kv, llama_cpp_or_skip, run_cli
from test_lora_infer import HF_TOL, IDS, hf_nmax, peft_logits, peft_python  # noqa: F401 (fixture)
from torch_ref import make_hf_model, torch_python  # noqa: F401  (fixture)


def summary(p):
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    import random

    r = random.Random(0)
    lines = [f"Hello world! {r.randint(1, 9)} llamas eat grass; {r.randint(10, 99)} pieces." for _ in range(200)]
    p = tmp_path_factory.mktemp("train_opts") / "text.txt"
    p.write_text("\n".join(lines) + "\n")
    return str(p)


@pytest.mark.slow
def test_rslora_adapter_loads_in_peft_with_equal_logits(llama3c, peft_python, tmp_path, text):
    hf_dir = str(tmp_path / "hf")
    spec = dict(vocab=320, hidden=64, ff=160, layers=2, heads=4, kv_heads=2, dtype="float32", tied=False,
                rope_scaling=None, max_shard_size=None, seed=5, ids=IDS, tokenizer=True)
    plain = make_hf_model(peft_python, hf_dir, spec)
    g = str(tmp_path / "base.gguf")
    run_cli("convert", hf_dir, "-o", g, "--type", "F32", "--quiet")
    out = str(tmp_path / "run")
    p = run_cli("train", "-m", g, "--data", text, "-o", out, "--rslora", "--rank", 16, "--alpha", 4, "--steps", 6,
                "--batch", 4, "--seq", 32, "--lr", 1e-2, "-t", 2, "--eval-frac", 0, "-q")
    assert "rsLoRA rank 16 alpha 4" in p.stderr
    cfg = json.load(open(os.path.join(out, "adapter", "adapter_config.json")))
    assert cfg["use_rslora"] is True and cfg["lora_alpha"] == 4 and cfg["r"] == 16, cfg
    want = peft_logits(peft_python, hf_dir, os.path.join(out, "adapter"))
    assert hf_nmax(plain, want) >= 100 * HF_TOL, "the trained adapter changes too little"
    got = eval_logits(g, IDS, tmp_path, extra=("--kv", "f32", "--lora", os.path.join(out, "adapter.gguf")))
    assert hf_nmax(got, want) <= HF_TOL, f"llama3c (GGUF rsLoRA) vs peft (use_rslora): {hf_nmax(got, want):.3g}"
    # a plain-LoRA reading of the same weights (alpha / r) is another model: the scale matters
    cfg["use_rslora"] = False
    json.dump(cfg, open(os.path.join(out, "adapter", "adapter_config.json"), "w"))
    other = peft_logits(peft_python, hf_dir, os.path.join(out, "adapter"))
    assert hf_nmax(other, want) > 100 * HF_TOL


@pytest.fixture(scope="module")
def tiny_f32(tiny_model):
    import gen_models

    return tiny_model("train_full", gen_models.ModelSpec(), "F32")


def test_full_finetune_lowers_loss_and_loads_in_llama_cpp(llama3c, tiny_f32, tiny_model, text, tmp_path):
    llama_cpp_or_skip()  # the reference is needed: skip before training
    out = str(tmp_path / "full")
    p = run_cli("train", "-m", tiny_f32, "--data", text, "-o", out, "--full", "--steps", 20, "--batch", 4,
                "--seq", 32, "--lr", 3e-3, "--warmup", 2, "-t", 2, "--eval-frac", 0.1, "--eval-every", 10)
    s = summary(p)
    assert "full fine-tuning" in p.stderr and s["eval_loss"] < 0.7 * s["eval_loss_before"], s
    model = os.path.join(out, "model.gguf")
    assert not os.path.exists(os.path.join(out, "adapter.gguf"))
    ids, ref = llama_cpp_logits_f32kv(model, "Hello world! 3 llamas eat grass; 42 pieces.")
    ours = eval_logits(model, ids, tmp_path, extra=("--kv", "f32"))
    diff = np.abs(ours - ref).max() / np.abs(ref).max()
    assert diff <= 1e-4, f"model.gguf: llama3c vs llama.cpp logits {diff:.2e}"
    base = eval_logits(tiny_f32, ids, tmp_path, extra=("--kv", "f32"))
    assert np.abs(ours - base).max() > 1e-2  # the weights did change
    # the base's tokenizer and metadata came along
    import gguf

    r0, r1 = gguf.GGUFReader(tiny_f32), gguf.GGUFReader(model)
    for k, f in r0.fields.items():
        if k.startswith("tokenizer.") or k.startswith("llama."):
            assert k in r1.fields, k
            assert [bytes(x).hex() for x in f.parts[-1:]] == [bytes(x).hex() for x in r1.fields[k].parts[-1:]], k
    # a quantized base is refused, pointing to LoRA
    import gen_models

    q4 = tiny_model("train_full", gen_models.ModelSpec(), "Q4_0")
    p = run_cli("train", "-m", q4, "--data", text, "-o", str(tmp_path / "q"), "--full", "--steps", 1, check=False)
    assert p.returncode == 1 and "Q4_0" in p.stderr and "LoRA" in p.stderr, p.stderr
