"""`llama3c train` end to end (apps/cli/cmd_train.c): LoRA on a quantized base learns (the eval
loss falls, and llama.cpp running the saved adapter agrees it fell), outputs are complete and
parse, a run stopped and resumed is bitwise the uninterrupted one, and bad input is refused with a
clear message and nothing half-written.

References: llama-cpp-python (`Llama(lora_path=...)`) recomputes the loss of the held-out text
with the adapter llama3c wrote; the tokenizer and chat masks have their own tests
(test_train_data.py), the adapter formats theirs (test_lora_infer.py), the gradients theirs
(test_train_grad.py).
"""
import json
import os
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from conftest import THREADS, eval_logits, llama_cpp_logits_f32kv, llama_cpp_or_skip, run_cli, \
    write_sums_corpus

STEPS = 40
ARGS = ["--steps", STEPS, "--batch", 4, "--seq", 32, "--lr", 3e-3, "--warmup", 4, "-t", 2, "--seed", 7,
        "--eval-every", 10, "--log-every", 10]


@pytest.fixture(scope="module")
def tiny(tiny_model):
    import gen_models

    return tiny_model("train_cli", gen_models.ModelSpec(), "Q4_0")


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    """A small corpus with structure to learn (sums of digits in a fixed sentence)."""
    return write_sums_corpus(tmp_path_factory.mktemp("train_data"))


def summary(p):
    return json.loads(p.stdout.strip().splitlines()[-1])


def metrics(d):
    with open(os.path.join(d, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_lora_on_q4_0_learns_and_writes_everything(llama3c, tiny, text, tmp_path):
    out = str(tmp_path / "run")
    p = run_cli("train", "-m", tiny, "--data", text, "-o", out, *ARGS, "--eval-frac", 0.1)
    s = summary(p)
    assert s["steps"] == STEPS and s["tokens"] == STEPS * 4 * 32
    assert s["eval_loss"] < 0.5 * s["eval_loss_before"], s
    assert "step 40/40" in p.stderr and "eval loss before training" in p.stderr
    rows = metrics(out)
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == list(range(1, STEPS + 1))
    assert all(k in train_rows[-1] for k in ("lr", "grad_norm", "tokens", "tok_per_s", "elapsed_s"))
    evals = [r["eval_loss"] for r in rows if "eval_loss" in r]
    assert len(evals) == 1 + STEPS // 10 and evals[-1] < evals[0]
    ET.parse(os.path.join(out, "loss.svg"))  # well-formed XML (the plot itself: test_train_data.py)
    for f in ("adapter.gguf", "adapter/adapter_config.json", "adapter/adapter_model.safetensors",
              "train_state.bin"):
        assert os.path.getsize(os.path.join(out, f)) > 0, f
    cfg = json.load(open(os.path.join(out, "adapter", "adapter_config.json")))
    assert cfg["r"] == 8 and cfg["lora_alpha"] == 16 and cfg["peft_type"] == "LORA"
    assert sorted(cfg["target_modules"]) == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                    "up_proj", "down_proj"])
    assert not [f for f in os.listdir(out) if f.endswith(".tmp") or f.startswith(".")]


def nll(logits, ids):
    z = logits[:-1].astype(np.float64)
    lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    return float(np.mean(lse - z[np.arange(len(ids) - 1), ids[1:]]))


def test_adapter_lowers_loss_in_llama_cpp_too(llama3c, tiny, text, tmp_path):
    """The adapter the trainer saved, run by llama.cpp (lora_path) and by `llama3c eval --lora`,
    lowers the loss of a sentence of the corpus's form; both engines agree on the logits."""
    llama_cpp = llama_cpp_or_skip()
    out = str(tmp_path / "run")
    run_cli("train", "-m", tiny, "--data", text, "-o", out, *ARGS, "--eval-frac", 0)
    adapter = os.path.join(out, "adapter.gguf")
    lm = llama_cpp.Llama(model_path=tiny, n_ctx=64, verbose=False)
    ids = lm.tokenize(b"the cat sat on the mat and 3 plus 4 is 7.", add_bos=True)
    lm.close()
    base = eval_logits(tiny, ids, tmp_path)
    ours = eval_logits(tiny, ids, tmp_path, extra=("--lora", adapter))
    scores = {}
    for name, kw in (("base", {}), ("lora", dict(lora_path=adapter))):
        lm = llama_cpp.Llama(model_path=tiny, logits_all=True, n_ctx=64, n_threads=THREADS, verbose=False, **kw)
        lm.eval(ids)
        scores[name] = np.array(lm.scores[:len(ids)], dtype=np.float64)
        lm.close()
    rms = np.sqrt(np.mean(scores["lora"] ** 2))
    diff = np.abs(ours - scores["lora"]).max() / rms
    assert diff <= 0.30, f"llama3c --lora vs llama.cpp lora_path: max diff {diff:.3f} x rms (Q4_0 tolerance 0.30)"
    before, after, cpp_after = nll(base, ids), nll(ours, ids), nll(scores["lora"], ids)
    print(f"NLL per token: base {before:.3f}, with adapter {after:.3f} (llama.cpp {cpp_after:.3f})")
    assert after < 0.5 * before and cpp_after < 0.5 * nll(scores["base"], ids)


def test_resume_is_bitwise_identical(llama3c, tiny, text, tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    run_cli("train", "-m", tiny, "--data", text, "-o", a, *ARGS)
    p = run_cli("train", "-m", tiny, "--data", text, "-o", b, *ARGS, "--stop-after", 17)
    assert "stopped after step 17" in p.stderr and not p.stdout.strip()
    p = run_cli("train", "-m", tiny, "--data", text, "-o", b, *ARGS, "--resume")
    assert "resuming at step 17" in p.stderr and summary(p)["first_step"] == 17
    for f in ("train_state.bin", "adapter.gguf", "adapter/adapter_model.safetensors"):
        assert open(os.path.join(a, f), "rb").read() == open(os.path.join(b, f), "rb").read(), f
    key = lambda rows: [(r["step"], r.get("loss"), r.get("eval_loss"), r.get("grad_norm")) for r in rows]  # noqa
    assert key(metrics(a)) == key(metrics(b))
    # other options: refused
    p = run_cli("train", "-m", tiny, "--data", text, "-o", b, *ARGS, "--lr", 1e-3, "--resume", check=False)
    assert p.returncode == 1 and "other options" in p.stderr


@pytest.mark.parametrize("name,content,pattern", [
    ("bad.jsonl", '{"messages": [{"role": "user", "content": "hi"}]}\n{"messages": [', r"bad\.jsonl:2"),
    ("empty.txt", "", r"empty\.txt"),
])
def test_bad_data_is_refused_and_nothing_written(llama3c, tiny, tmp_path, name, content, pattern):
    import re

    data = tmp_path / name
    data.write_text(content)
    out = tmp_path / "out"
    p = run_cli("train", "-m", tiny, "--data", data, "-o", out, *ARGS, check=False)
    assert p.returncode == 1 and re.search(pattern, p.stderr), p.stderr
    assert not out.exists() or not os.listdir(out), os.listdir(out)


def test_usage_errors(llama3c, tiny, text, tmp_path):
    for extra, msg in ((["--targets", "q,x"], "unknown matrix 'x'"), (["--rank", 0], "--rank"),
                       (["--lr", "abc"], "--lr")):
        p = run_cli("train", "-m", tiny, "--data", text, "-o", tmp_path / "o", *extra, check=False)
        assert p.returncode == 2 and msg in p.stderr, p.stderr
    p = run_cli("train", "-m", tiny, "--data", text, "-o", tmp_path / "o2", *ARGS, "--resume", check=False)
    assert p.returncode == 1 and "train_state.bin" in p.stderr
    p = run_cli("train", "-m", tmp_path / "missing.gguf", "--data", text, "-o", tmp_path / "o3", check=False)
    assert p.returncode == 1 and "missing.gguf" in p.stderr


@pytest.mark.slow
def test_smollm2_chat_lora_smoke(llama3c, smollm2_path, tmp_path):
    """The default model on the shipped chat examples: a few steps run, the loss is only on the
    assistant turns (trained tokens well below all tokens), the eval loss falls."""
    data = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "examples", "train",
                        "chat_small.jsonl")
    out = str(tmp_path / "smol")
    p = run_cli("train", "-m", smollm2_path, "--data", data, "-o", out, "--steps", 4, "--batch", 2, "--seq", 64,
                "--lr", 1e-3, "-t", 2, "--eval-frac", 0.02, "--rank", 4, "--targets", "q,v", timeout=900)
    s = summary(p)
    assert 0 < s["trained_tokens"] < 0.6 * s["tokens"], s
    assert s["eval_loss"] < s["eval_loss_before"], s


def test_from_scratch_trains_saves_and_resumes(llama3c, tiny, text, tmp_path):
    """--from-scratch --config: a new fp32 llama with -m's vocabulary learns the corpus (eval loss
    falls), model.gguf loads in llama3c and llama.cpp with the same logits, and a stopped + resumed
    run is bitwise the uninterrupted one."""
    llama_cpp_or_skip()  # the reference is needed: skip before training
    cfg = tmp_path / "small.json"
    cfg.write_text(json.dumps({"n_embd": 32, "n_layer": 2, "n_head": 4, "n_head_kv": 2, "n_ff": 64,
                               "n_ctx": 64}))
    common = ["--from-scratch", "--config", cfg, "-m", tiny, "--data", text, "--steps", 30, "--batch", 4,
              "--seq", 32, "--warmup", 3, "-t", 2, "--eval-frac", 0.05, "--eval-every", 10]
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    s = summary(run_cli("train", *common, "-o", a))
    assert s["eval_loss"] < 0.6 * s["eval_loss_before"], s
    run_cli("train", *common, "-o", b, "--stop-after", 12)
    run_cli("train", *common, "-o", b, "--resume")
    for f in ("model.gguf", "train_state.bin"):
        assert open(os.path.join(a, f), "rb").read() == open(os.path.join(b, f), "rb").read(), f
    model = os.path.join(a, "model.gguf")
    ids, ref = llama_cpp_logits_f32kv(model, "the cat sat on the mat and 2 plus 5 is 7.")
    ours = eval_logits(model, ids, tmp_path, extra=("--kv", "f32"))
    diff = np.abs(ours - ref).max() / np.abs(ref).max()
    assert diff <= 1e-4, f"model.gguf: llama3c vs llama.cpp logits {diff:.2e}"
    # bad config: named
    cfg.write_text('{"n_embd": 30, "n_layer": 1, "n_head": 4, "n_ff": 64}')
    p = run_cli("train", *common, "-o", str(tmp_path / "c"), check=False)
    assert p.returncode == 1 and "small.json" in p.stderr, p.stderr
    p = run_cli("train", "--from-scratch", "-m", tiny, "--data", text, "-o", str(tmp_path / "d"), check=False)
    assert p.returncode == 2 and "--config" in p.stderr


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    """JSONL text documents of varied length (one to three sentences), so packing has gaps to fill."""
    import random

    r = random.Random(1)
    lines = []
    for _ in range(120):
        parts = []
        for _ in range(r.randint(1, 3)):
            a, b = r.randint(1, 9), r.randint(1, 9)
            parts.append(f"{a} plus {b} is {a + b}.")
        lines.append(json.dumps({"text": " ".join(parts)}))
    p = tmp_path_factory.mktemp("train_docs") / "docs.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return str(p)


def test_packing_and_accumulation_are_exact(llama3c, tiny, docs, tmp_path):
    """Packed rows (the default for JSONL) give the held-out loss of the unpacked examples within
    1e-6 on a Q4_0 base, with fewer positions computed; --grad-accum 2 --batch 2 trains like
    --batch 4 (losses of 5 steps within 1e-5: the gradients agree within 1e-6 per step, then AdamW);
    metrics and the summary report trained tokens/s beside all tokens/s."""
    common = ["-m", tiny, "--data", docs, "--seq", 48, "--lr", 3e-3, "-t", 2, "--seed", 3, "--eval-frac", 0.2,
              "--eval-every", 0]
    s = {}
    for name, extra in (("packed", ["--batch", 4]), ("unpacked", ["--no-pack", "--batch", 4]),
                        ("accum", ["--no-pack", "--batch", 2, "--grad-accum", 2])):
        p = run_cli("train", *common, *extra, "--steps", 5, "-o", tmp_path / name)
        s[name] = summary(p)
        s[name]["rows"] = metrics(tmp_path / name)
        s[name]["stderr"] = p.stderr
    pk, up, ac = s["packed"], s["unpacked"], s["accum"]
    assert pk["packed"] == 1 and up["packed"] == 0 and "data: packed" in pk["stderr"]
    e0 = {k: [r["eval_loss"] for r in v["rows"] if r["step"] == 0][0] for k, v in s.items()}  # 9 digits
    rel = abs(e0["packed"] - e0["unpacked"]) / e0["unpacked"]
    print(f"held-out loss packed {e0['packed']:.9g} unpacked {e0['unpacked']:.9g} (rel {rel:.1e}); "
          f"trained share {pk['trained_tokens'] / pk['tokens']:.2f} vs {up['trained_tokens'] / up['tokens']:.2f}")
    assert rel <= 1e-6, f"packed held-out loss {e0['packed']} vs unpacked {e0['unpacked']}"
    # packing puts more trained tokens into each step's positions
    assert pk["trained_tokens"] / pk["tokens"] > 1.3 * up["trained_tokens"] / up["tokens"], (pk, up)
    la = [r["loss"] for r in ac["rows"] if "loss" in r]
    lu = [r["loss"] for r in up["rows"] if "loss" in r]
    assert len(la) == len(lu) == 5
    assert np.allclose(la, lu, rtol=1e-5, atol=0), (la, lu)
    assert ac["trained_tokens"] == up["trained_tokens"] and ac["tokens"] == up["tokens"]
    last = [r for r in up["rows"] if "loss" in r][-1]
    assert last["trained_tokens"] == up["trained_tokens"] and last["trained_tok_per_s"] > 0
    assert up["trained_tok_per_s"] < up["tok_per_s"]
    p = run_cli("train", *common, "--grad-accum", 0, "-o", tmp_path / "bad", check=False)
    assert p.returncode == 2 and "--grad-accum" in p.stderr


def test_lora_dropout_in_training_only(llama3c, tiny, text, tmp_path):
    """--lora-dropout: training losses change (a mask per step), evaluation is without dropout
    (the held-out loss before training is the plain run's, bit for bit), the PEFT config records
    it, and a stopped + resumed run is bitwise the uninterrupted one (masks from seed and step)."""
    common = ["-m", tiny, "--data", text, "--steps", 12, *ARGS[2:], "--eval-frac", 0.1]
    a, b, c = (str(tmp_path / x) for x in "abc")
    sa = summary(run_cli("train", *common, "-o", a, "--lora-dropout", 0.2))
    sb = summary(run_cli("train", *common, "-o", b))
    assert sa["eval_loss_before"] == sb["eval_loss_before"]
    la = [r["loss"] for r in metrics(a) if "loss" in r]
    lb = [r["loss"] for r in metrics(b) if "loss" in r]
    assert la[0] == lb[0] and la[1] != lb[1]  # B starts at 0: the branch (and its dropout) adds nothing yet
    cfg = json.load(open(os.path.join(a, "adapter", "adapter_config.json")))
    assert abs(cfg["lora_dropout"] - 0.2) < 1e-6
    run_cli("train", *common, "-o", c, "--lora-dropout", 0.2, "--stop-after", 5)
    run_cli("train", *common, "-o", c, "--lora-dropout", 0.2, "--resume")
    assert open(os.path.join(a, "adapter.gguf"), "rb").read() == open(os.path.join(c, "adapter.gguf"), "rb").read()
