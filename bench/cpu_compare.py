#!/usr/bin/env python3
"""CPU time per token, llama3c vs llama.cpp, alternated: the measure a shared machine disturbs least.

For each file and round: `llama3c bench --json` (its pp/tg_cpu_ms_per_token: process CPU time of
all threads over the timed decodes) then llama.cpp through llama-cpp-python (time.process_time()
around the same evals, all threads). Prints per file the best (lowest) CPU ms/token of each engine
over the rounds and the ratio llama.cpp / ours (> 1: we use less CPU per token).

    python3 bench/cpu_compare.py --threads 1 --rounds 3 -p 512 -n 32 FILE...
"""
import argparse
import os
import sys


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare_llamacpp as cmp  # noqa: E402  (both engines' runners live there)


def ours(path, a):
    r = cmp.ours(path, a.threads, a.p, a.n, a.reps)
    return {"pp": r["pp_cpu_ms_per_token"], "tg": r["tg_cpu_ms_per_token"]}


def theirs(path, a):
    r = cmp.llamacpp(path, a.threads, a.p, a.n, a.reps)
    return {"pp": r["pp_cpu_ms_per_token"], "tg": r["tg_cpu_ms_per_token"]}


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
