#!/usr/bin/env python3
"""CPU time per token, llama3c vs llama.cpp, alternated: the measure a shared machine disturbs least.

For each file and round: `llama3c bench --json` (its pp/tg_cpu_ms_per_token: process CPU time of
all threads over the timed decodes) then llama.cpp through llama-cpp-python (time.process_time()
around the same evals, all threads). Prints per file the best (lowest) CPU ms/token of each engine
over the rounds and the ratio llama.cpp / ours (> 1: we use less CPU per token).

    python3 bench/cpu_compare.py --threads 1 --rounds 3 -p 512 -n 32 FILE...
"""
import argparse
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(REPO, os.environ.get("L3C_BUILD", "build"), "llama3c")

LLAMACPP = r"""
import json, sys, time
from llama_cpp import Llama
path, threads, p, n, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
llm = Llama(model_path=path, n_ctx=max(p, n) + 16, n_batch=512, n_ubatch=512, n_threads=threads,
            n_threads_batch=threads, verbose=False, logits_all=False)
import random
random.seed(1)
toks = [random.randrange(llm.n_vocab()) for _ in range(max(p, n))]
llm.reset(); llm.eval(toks[:16])
pp, tg = [], []
for _ in range(reps):
    if p:
        llm.reset(); c = time.process_time(); llm.eval(toks[:p]); pp.append(1e3 * (time.process_time() - c) / p)
    if n:
        llm.reset(); c = time.process_time()
        for i in range(n): llm.eval([toks[i]])
        tg.append(1e3 * (time.process_time() - c) / n)
print(json.dumps({"pp": min(pp) if pp else 0, "tg": min(tg) if tg else 0}))
"""


def run(cmd):
    out = subprocess.run(cmd, check=True, text=True, capture_output=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def ours(path, a):
    r = run([BIN, "bench", "-m", path, "-t", str(a.threads), "-p", str(a.p), "-n", str(a.n),
             "-r", str(a.reps), "--json"])
    return {"pp": r["pp_cpu_ms_per_token"], "tg": r["tg_cpu_ms_per_token"]}


def theirs(path, a):
    return run([sys.executable, "-c", LLAMACPP, path, str(a.threads), str(a.p), str(a.n), str(a.reps)])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("-p", type=int, default=512)
    ap.add_argument("-n", type=int, default=32)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only-ours", action="store_true")
    a = ap.parse_args()
    print(f"threads {a.threads}, pp{a.p}, tg{a.n}, CPU ms/token (best of {a.rounds} alternated rounds x {a.reps} reps)")
    print(f"{'file':40s} {'ours pp':>8s} {'lcpp pp':>8s} {'pp x':>6s} {'ours tg':>8s} {'lcpp tg':>8s} {'tg x':>6s}")
    for f in a.files:
        o, t = [], []
        for _ in range(a.rounds):
            o.append(ours(f, a))
            if not a.only_ours:
                t.append(theirs(f, a))
        ob = {k: min(x[k] for x in o) for k in ("pp", "tg")}
        tb = {k: min(x[k] for x in t) for k in ("pp", "tg")} if t else {"pp": 0, "tg": 0}
        rp = tb["pp"] / ob["pp"] if ob["pp"] else 0
        rt = tb["tg"] / ob["tg"] if ob["tg"] else 0
        print(f"{os.path.basename(f):40s} {ob['pp']:8.2f} {tb['pp']:8.2f} {rp:6.2f} {ob['tg']:8.2f} {tb['tg']:8.2f} {rt:6.2f}",
              flush=True)


if __name__ == "__main__":
    main()
