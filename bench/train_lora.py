#!/usr/bin/env python3
"""LoRA fine-tuning speed and memory: `llama3c train --lora` against torch + peft on the CPU.

Same model file, same data, same batches, same thread count, one engine at a time, in one run
(issue 13). Not a test (nothing in CI runs it): run it by hand.

    python3 bench/train_lora.py                      # SmolLM2-135M-Instruct (the default model)
    python3 bench/train_lora.py --quick              # smoke test: 2 short timed steps
    python3 bench/train_lora.py --model-1b           # also a Llama-3.2-1B-shaped Q4_0 file (slow)

What each engine trains:
- llama3c: `build/llama3c train -m MODEL --data FILE --lora ...` reads the GGUF and the JSONL itself.
- torch + peft (bench/torch_peft_train.py under .venv-torch/bin/python): the same GGUF dequantized
  to an fp32 `LlamaForCausalLM` (what torch trains on), peft LoRA on the same modules with the
  same rank / alpha, AdamW at the same learning rate, fed the exact ids / targets llama3c builds
  from the data: `build/tests/data_dump --batch B --steps N --seed S` (llama3c's own loader,
  chat template, masks and seeded batch order). So B x T positions and the trained (unmasked)
  targets per step are identical; the driver checks the trained-token counts agree.
- torch's BLAS: Debian's python3-torch calls the reference libblas.so.3 (~2.5 GFLOP/s) unless an
  optimized one is the system's alternative; the driver runs torch with OpenBLAS's pthread build
  on LD_LIBRARY_PATH (--blas-dir, found automatically when libopenblas0-pthread is installed or
  unpacked into ~/.cache/llama3c/openblas) and the summary says which BLAS torch loaded.

Measured: tokens/s = B x T x timed steps / their wall time (the first --warmup-steps steps of
each engine are run but not timed; for llama3c from its per-step metrics log when it writes one,
else its summary's seconds over all steps, marked "incl. warm-up"), and peak RSS = ru_maxrss of
the child from os.wait4 (the whole process, model load included, the same method for both).
The machine's load average before each run is printed: on a shared machine the numbers swing.
Writes a JSON file (--json) with both summaries and the settings.
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(REPO, os.environ.get("L3C_BUILD", "build"))
TORCH_PY = os.path.join(REPO, ".venv-torch", "bin", "python")
BLAS_DIRS = ["/usr/lib/x86_64-linux-gnu/openblas-pthread",
             os.path.expanduser("~/.cache/llama3c/openblas/root/usr/lib/x86_64-linux-gnu/openblas-pthread")]


def default_model():
    return subprocess.run(["sh", os.path.join(REPO, "scripts", "default-model.sh")], check=True,
                          capture_output=True, text=True).stdout.strip()


def model_1b(folder):
    """A Llama-3.2-1B-shaped Q4_0 file, random weights, Meta's Llama 3 vocabulary (for the chat data)."""
    path = os.path.join(folder, "llama3.2-1b-Q4_0-vocab.gguf")
    if not os.path.exists(path):
        data = os.environ.get("L3C_DATA", os.path.join(REPO, "..", "shared", "data"))
        if not os.path.isdir(data):
            data = os.path.join(REPO, "shared", "data")
        tok = os.path.join(data, "llama3-tokenizer", "tokenizer.model")
        print("writing %s (~0.7 GB)" % path, file=sys.stderr)
        os.makedirs(folder, exist_ok=True)
        venv = os.path.join(REPO, ".venv", "bin", "python")  # numpy + gguf live there
        py = venv if os.path.exists(venv) else sys.executable
        subprocess.run([py, os.path.join(REPO, "tools", "make_shaped_gguf.py"), path,
                        "--preset", "llama3.2-1b", "--type", "Q4_0", "--data", "random",
                        "--tokenizer", tok], check=True)
    return path


def loadavg():
    return os.getloadavg()[0]


def run_child(cmd, env=None, log=None):
    """Runs cmd to completion; returns (last stdout line, peak RSS bytes, wall seconds)."""
    with tempfile.TemporaryFile("w+") as out:
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=log or sys.stderr, env=env, text=True)
        _, status, ru = os.wait4(p.pid, 0)  # this child's own rusage (ru_maxrss in KiB on Linux)
        p.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t
        out.seek(0)
        lines = [ln for ln in out.read().splitlines() if ln.strip()]
    if p.returncode != 0 or not lines:
        sys.exit("train_lora.py: %s failed (exit %d)" % (" ".join(cmd[:3]), p.returncode))
    return lines[-1], ru.ru_maxrss * 1024, wall


def metrics_window(folder, n_timed):
    """Training seconds of the last n_timed steps from llama3c's DIR/metrics.jsonl: per step it
    logs the cumulative tokens and tok_per_s = tokens / training seconds so far (elapsed_s, the
    wall time since the loop started, when those are absent)."""
    t = {}
    try:
        with open(os.path.join(folder, "metrics.jsonl")) as fh:
            for line in fh:
                r = json.loads(line)
                if "loss" not in r:  # an eval-only row
                    continue
                if r.get("tokens") and r.get("tok_per_s"):
                    t[int(r["step"])] = r["tokens"] / r["tok_per_s"]
                elif "elapsed_s" in r:
                    t[int(r["step"])] = float(r["elapsed_s"])
    except (OSError, ValueError):
        return None
    last = max(t, default=None)
    if last is None or last - n_timed not in t:
        return None
    return t[last] - t[last - n_timed]


def bench_llama3c(a, model, outdir, n_total):
    cmd = [os.path.join(BUILD, "llama3c"), "train", "-m", model, "--data", a.data, "-o", outdir,
           "--lora", "--rank", str(a.rank), "--alpha", str(a.alpha), "--targets", a.targets,
           "--seq", str(a.seq), "--batch", str(a.batch), "--steps", str(n_total), "--lr", str(a.lr),
           "--warmup", "0", "--min-lr-ratio", "1", "--wd", "0",  # constant lr, as torch here
           "--threads", str(a.threads), "--seed", str(a.seed), "--eval-frac", "0"]
    if a.no_checkpoint:
        cmd.append("--no-checkpoint")
    if a.no_pack:
        cmd.append("--no-pack")
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    line, rss, wall = run_child(cmd)
    s = json.loads(line)
    secs = metrics_window(outdir, a.steps) if a.warmup_steps else None
    if secs is not None:
        s["timed_seconds"], s["timed_note"] = secs, "steps %d..%d (metrics log)" % (a.warmup_steps + 1, n_total)
    else:
        s["timed_seconds"], s["timed_note"] = float(s["seconds"]), "all %d steps (incl. warm-up)" % n_total
        secs = float(s["seconds"])
    n_timed = a.steps if s["timed_note"].endswith("(metrics log)") else n_total
    s["bench_tok_per_s"] = a.batch * a.seq * n_timed / secs
    s["peak_rss_bytes"], s["wall_seconds"] = rss, wall
    return s


def bench_torch(a, model, batches):
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), OPENBLAS_NUM_THREADS=str(a.threads),
               MKL_NUM_THREADS=str(a.threads))
    blas = a.blas_dir or next((d for d in BLAS_DIRS if os.path.exists(os.path.join(d, "libblas.so.3"))), None)
    if blas:
        env["LD_LIBRARY_PATH"] = blas + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    cmd = [TORCH_PY, os.path.join(REPO, "bench", "torch_peft_train.py"), "--gguf", model,
           "--batches", batches, "--warmup-steps", str(a.warmup_steps), "--threads", str(a.threads),
           "--rank", str(a.rank), "--alpha", str(a.alpha), "--targets", a.targets, "--lr", str(a.lr),
           "--seed", str(a.seed)]
    if not a.no_checkpoint:
        cmd.append("--checkpoint")
    print("$ %s%s" % ("LD_LIBRARY_PATH=%s " % blas if blas else "", " ".join(cmd)), file=sys.stderr, flush=True)
    line, rss, wall = run_child(cmd, env=env)
    s = json.loads(line)
    s["timed_seconds"], s["timed_note"] = s["seconds"], "steps %d..%d" % (a.warmup_steps + 1, a.warmup_steps + a.steps)
    s["bench_tok_per_s"] = s["tok_per_s"]
    s["peak_rss_bytes"], s["wall_seconds"] = rss, wall
    return s


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="GGUF file (default: scripts/default-model.sh, SmolLM2-135M Q4_1)")
    ap.add_argument("--model-1b", action="store_true", help="also a Llama-3.2-1B-shaped Q4_0 file (slow)")
    ap.add_argument("--dir", default="/tmp/l3c-bench", help="where the 1B file is written / kept")
    ap.add_argument("--data", default=os.path.join(REPO, "examples", "train", "chat_small.jsonl"))
    ap.add_argument("--seq", type=int, default=64, help="T (the chat examples are <= 55 tokens)")
    ap.add_argument("--batch", type=int, default=16, help="B")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per engine")
    ap.add_argument("--warmup-steps", type=int, default=2, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=int, default=16)
    ap.add_argument("--targets", default="q,k,v,o,gate,up,down")
    ap.add_argument("--lr", default="2e-4")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--no-checkpoint", action="store_true",
                    help="both engines keep every activation (default: both recompute per layer)")
    ap.add_argument("--no-pack", action="store_true",
                    help="one example per padded row in both engines (default: both pack rows as "
                         "llama3c train does; torch gets positions and a per-example attention mask)")
    ap.add_argument("--engines", default="llama3c,torch", help="comma list: llama3c, torch")
    ap.add_argument("--blas-dir", help="folder with an optimized libblas.so.3 for torch (default: OpenBLAS, found)")
    ap.add_argument("--quick", action="store_true", help="smoke test: B 4, 2 timed steps after 1 warm-up")
    ap.add_argument("--json", default="/tmp/l3c-train-lora.json", help="result file")
    a = ap.parse_args()
    if a.quick:
        a.batch, a.steps, a.warmup_steps = 4, 2, 1
    engines = [e.strip() for e in a.engines.split(",") if e.strip()]
    models = [("SmolLM2-135M", a.model or default_model())]
    if a.model_1b:
        models.append(("1B Q4_0", model_1b(a.dir)))
    n_total = a.warmup_steps + a.steps

    results = []
    for label, model in models:
        with tempfile.TemporaryDirectory(prefix="l3c-train-bench-") as tmp:
            batches = os.path.join(tmp, "batches.json")
            with open(batches, "w") as f:
                subprocess.run([os.path.join(BUILD, "tests", "data_dump"), "-m", model, "--data", a.data,
                                "--seq", str(a.seq), "--batch", str(a.batch), "--steps", str(n_total),
                                "--seed", str(a.seed), "--split", "0"] + ([] if a.no_pack else ["--pack"]),
                               check=True, stdout=f)
            with open(batches) as f:
                steps = json.load(f)["steps"]
            trained = [s["n_trained"] for s in steps]
            row = {"model": label, "file": model, "trained_per_step": trained}
            for e in engines:
                la = loadavg()
                print("== %s, %s (load average %.2f)" % (label, e, la), file=sys.stderr, flush=True)
                if e == "llama3c":
                    s = bench_llama3c(a, model, os.path.join(tmp, "out"), n_total)
                    if int(s.get("trained_tokens", -1)) != sum(trained):
                        print("WARNING: llama3c trained %s targets, the batches given to torch hold %d: "
                              "the batches differ" % (s.get("trained_tokens"), sum(trained)), file=sys.stderr)
                elif e == "torch":
                    s = bench_torch(a, model, batches)
                else:
                    sys.exit("train_lora.py: unknown engine %r" % e)
                s["load_average"] = la
                row[e] = s
            results.append(row)

    ck = "no checkpointing" if a.no_checkpoint else "checkpointing"
    print("\nLoRA r %d alpha %d on %s; B %d x T %d, %d timed steps after %d warm-up; %d threads; %s; %s"
          % (a.rank, a.alpha, a.targets, a.batch, a.seq, a.steps, a.warmup_steps, a.threads, ck,
             time.strftime("%Y-%m-%d %H:%M")))
    print("rows %s; trained tok/s = tok/s x the timed steps' trained targets / positions (the same batches)"
          % ("one example per padded row" if a.no_pack else "packed (both engines)"))
    print("| model | engine | tok/s | trained tok/s | s/step | peak RSS MiB | first-step loss | last-step loss | tok/s vs torch+peft | RSS vs torch+peft | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        ref = r.get("torch")
        share = sum(r["trained_per_step"][a.warmup_steps:]) / float(a.batch * a.seq * a.steps)
        for e in engines:
            s = r[e]
            name = "llama3c" if e == "llama3c" else "torch+peft (fp32)"
            tps = s["bench_tok_per_s"]
            ratio = "%.2fx" % (tps / ref["bench_tok_per_s"]) if ref else "-"
            rss = "%.2fx" % (s["peak_rss_bytes"] / ref["peak_rss_bytes"]) if ref else "-"
            first = s["first_loss"]
            print("| %s | %s | %.1f | %.1f | %.2f | %.0f | %.4f | %.4f | %s | %s | %.2f |" % (
                r["model"], name, tps, tps * share, a.batch * a.seq / tps, s["peak_rss_bytes"] / 2**20, first,
                float(s.get("train_loss", float("nan"))), ratio, rss, s["load_average"]))
        for e in engines:
            print("%s: %s timed: %s" % (r["model"], e, r[e]["timed_note"]))
    if "torch" in engines:
        t = results[0]["torch"]
        print("torch %s, %d threads, BLAS %s" % (t.get("torch"), t.get("threads"), t.get("blas", "?")))
    with open(a.json, "w") as f:
        json.dump({"settings": vars(a), "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "results": results}, f, indent=1)
    print("wrote " + a.json)


if __name__ == "__main__":
    main()
