"""PEFT reference for the LoRA tests (tests/py/test_lora_infer.py), run under the .venv-torch
interpreter (torch + transformers + peft; see torch_ref.py for why torch lives in its own venv).

  python peft_ref.py make SPEC.json HF_DIR ADAPTER_DIR LOGITS.npy
      peft.get_peft_model on the folder's LlamaForCausalLM with LoraConfig(r, lora_alpha,
      target_modules, use_rslora) from SPEC, every lora_A / lora_B set to N(0, std^2) (seeded; B
      nonzero so the adapter does something), save_pretrained(ADAPTER_DIR); then the logits of
      SPEC["ids"] from a fresh base + PeftModel.from_pretrained(ADAPTER_DIR), float32.
  python peft_ref.py logits HF_DIR ADAPTER_DIR IDS_JSON LOGITS.npy
      the logits of the ids with PeftModel.from_pretrained(base, ADAPTER_DIR) (an adapter that
      llama3c wrote).
"""
import json
import sys


def _logits(hf_dir, adapter_dir, ids):
    import torch
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    base = LlamaForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32, attn_implementation="eager")
    model = PeftModel.from_pretrained(base, adapter_dir)
    model.eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].double().numpy()


def _make(spec_path, hf_dir, adapter_dir, logits_path):
    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    with open(spec_path) as f:
        s = json.load(f)
    torch.manual_seed(s.get("seed", 0))
    base = LlamaForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32)
    cfg = LoraConfig(r=s["r"], lora_alpha=s["alpha"], target_modules=s["targets"], lora_dropout=0.0,
                     use_rslora=s.get("rslora", False), task_type="CAUSAL_LM")
    model = get_peft_model(base, cfg)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_A" in n or "lora_B" in n:
                p.normal_(0.0, s.get("std", 0.1))
    model.save_pretrained(adapter_dir)
    np.save(logits_path, _logits(hf_dir, adapter_dir, s["ids"]))


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "make":
        _make(*sys.argv[2:])
    elif len(sys.argv) == 6 and sys.argv[1] == "logits":
        import numpy as np
        with open(sys.argv[4]) as f:
            ids = json.load(f)
        np.save(sys.argv[5], _logits(sys.argv[2], sys.argv[3], ids))
    else:
        sys.exit("usage: peft_ref.py make SPEC.json HF_DIR ADAPTER_DIR LOGITS.npy | "
                 "logits HF_DIR ADAPTER_DIR IDS.json LOGITS.npy")
