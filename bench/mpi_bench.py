#!/usr/bin/env python3
"""Distributed inference on one machine: 1 process x 2 threads vs 2 ranks x 1 thread (--split tensor
and --split layers), with each rank's peak RSS and the bytes it sent per generated token against the
formula of docs/DISTRIBUTED.md. Not a CI test (figures depend on the machine and its load).

    python3 bench/mpi_bench.py [-m MODEL.gguf ...] [-p 64] [-n 64] [-r 3]

Needs `make` and `make MPI=1` (build/llama3c, build-mpi/llama3c) and Open MPI's mpirun. The default
model is SmolLM2 (scripts/default-model.sh); a Llama-3.2-1B-shaped Q4_0 file comes from
`tools/make_shaped_gguf.py --preset llama3.2-1b --type Q4_0 --data random OUT.gguf`.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPI_BIN = os.path.join(REPO, "build-mpi", "llama3c")


def model_info(path):
    out = subprocess.run([MPI_BIN, "info", "-m", path], capture_output=True, text=True, check=True).stdout
    get = lambda k: int(re.search(rf"^\s*{k}\s+(\d+)", out, re.M).group(1))  # noqa: E731
    return {k: get(k) for k in ("n_embd", "n_layer", "n_vocab", "n_head_kv")}


def vocab_share(V, N, r):
    return V // N + (r < V % N)


def formula(split, info, N, r):
    """Payload bytes rank r sends per generated token (docs/DISTRIBUTED.md)."""
    E, L, V = info["n_embd"], info["n_layer"], info["n_vocab"]
    head = 4 * vocab_share(V, N, r) + (16 if r == 0 else 0)  # its logits slice; rank 0: the token check
    if split == "tensor":
        return 2 * L * E * 4 + head
    return E * 4 + head  # to the next stage, or (last) the broadcast of the final x


def bench(cmd_prefix, model, a, extra):
    cmd = cmd_prefix + ["bench", "-m", model, "-p", str(a.p), "-n", str(a.n), "-r", str(a.r), "--json"] + extra
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stderr[-2000:]}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    ranks = {int(m.group(1)): (float(m.group(2)), float(m.group(3)), float(m.group(4))) for m in re.finditer(
        r"rank (\d+) of \d+: peak RSS ([0-9.]+) MiB, sent ([0-9.]+) bytes per generated token, ([0-9.]+)%", p.stderr)}
    return res, ranks


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-m", action="append", help="model(s); default SmolLM2")
    ap.add_argument("-p", type=int, default=64)
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("-r", type=int, default=3)
    a = ap.parse_args()
    mpirun = shutil.which("mpirun")
    if not mpirun or not os.path.exists(MPI_BIN):
        sys.exit("needs mpirun (openmpi-bin) and build-mpi/llama3c (make MPI=1)")
    models = a.m or [subprocess.run(["sh", os.path.join(REPO, "scripts", "default-model.sh")], capture_output=True,
                                    text=True, check=True).stdout.strip()]
    mpi = [mpirun, "--oversubscribe", "--bind-to", "none", "-np", "2"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"CPU {cpu}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    for model in models:
        info = model_info(model)
        print(f"\n{os.path.basename(model)}: n_embd {info['n_embd']}, {info['n_layer']} layers, vocab {info['n_vocab']}")
        print(f"{'run':28} {'pp t/s':>8} {'tg t/s':>8} {'RSS MiB/rank':>14} {'sent B/token/rank (formula)':>34} "
              f"{'tg % in MPI':>12}")
        res, _ = bench([MPI_BIN], model, a, ["-t", "2"])
        print(f"{'1 process x 2 threads':28} {res['pp_tokens_per_s']:8.2f} {res['tg_tokens_per_s']:8.2f} "
              f"{res['peak_rss_bytes'] / 2**20:14.1f} {'-':>34}")
        for split in ("tensor", "layers"):
            if split == "tensor" and info["n_head_kv"] < 2:
                continue
            res, ranks = bench(mpi + [MPI_BIN], model, a, ["-t", "1", "--split", split])
            rss = "/".join(f"{ranks[r][0]:.0f}" for r in sorted(ranks))
            sent = "/".join(f"{ranks[r][1]:.0f} ({formula(split, info, 2, r)})" for r in sorted(ranks))
            comm = "/".join(f"{ranks[r][2]:.0f}" for r in sorted(ranks))
            print(f"{'2 ranks x 1 thread, ' + split:28} {res['pp_tokens_per_s']:8.2f} {res['tg_tokens_per_s']:8.2f} "
                  f"{rss:>14} {sent:>34} {comm:>12}")
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
