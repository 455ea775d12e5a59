#!/usr/bin/env python3
"""Distributed inference on one machine: 1 process x 2 threads vs 2 ranks x 1 thread (--split tensor
and --split layers), with each rank's peak RSS, the KiB of the model file still resident on it at the
end, and the bytes it sent per generated token against the formula of docs/DISTRIBUTED.md; with --build-rpc, llama.cpp's RPC backend on the same files (its
llama-bench x 1 thread with the last half of the layers on one rpc-server x 1 thread on localhost,
the pipeline llama.cpp offers), and llama.cpp's llama-bench x 2 threads in one process. Not a CI
test (figures depend on the machine and its load).

    python3 bench/mpi_bench.py [-m MODEL.gguf ...] [-p 64] [-n 64] [-r 3] [--build-rpc DIR]
    python3 bench/mpi_bench.py --pipe ROUNDS [--ubatch U] [-m ...] [-p 64] [-n 16]

--pipe ROUNDS: the layer split's pipelining, before / after: ROUNDS alternations (A B C C B A ..., as
the machine's load drifts) of 1 process x 2 threads, 2 ranks x 1 thread --split layers with one
micro-batch per batch (--ubatch P: the stages one after another, as before pipelining) and 2 ranks
pipelined (--ubatch U; default the automatic size), then each one's median and the ratios.

Needs `make MPI=1` (build-mpi/llama3c) and Open MPI's mpirun. The default model is SmolLM2
(scripts/default-model.sh); a Llama-3.2-1B-shaped Q4_0 file comes from
`tools/make_shaped_gguf.py --preset llama3.2-1b --type Q4_0 --data random OUT.gguf`.
--build-rpc DIR: llama.cpp from the llama-cpp-python sdist's vendor/llama.cpp, built once into DIR
with GGML_RPC=ON (native Release, the flags of bench/compare_llamacpp.py), reused when it is there.
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

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
    # its logits slice, gathered on rank 0 (which sends none); rank 0: the batch check
    head = 4 * vocab_share(V, N, r) if r != 0 else 16
    if split == "tensor":
        return 2 * L * E * 4 + head
    return E * 4 + head  # to the next stage, or (last) the broadcast of the final x


def bench(cmd_prefix, model, a, extra):
    cmd = cmd_prefix + ["bench", "-m", model, "-p", str(a.p), "-n", str(a.n), "-r", str(a.r), "--json"] + extra
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stderr[-2000:]}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    ranks = {int(m.group(1)): (float(m.group(2)), float(m.group(3)), float(m.group(4)), float(m.group(5)), m.group(6))
             for m in re.finditer(r"rank (\d+) of \d+: peak RSS ([0-9.]+) MiB, sent ([0-9.]+) bytes per generated "
                                  r"token, ([0-9.]+)% of tg in message passing, ([0-9.]+)% of pp"
                                  r"(?:, (-?[0-9.]+) KiB of the model file resident)?", p.stderr)}
    return res, ranks


def build_rpc_peer(dest):
    """rpc-server and llama-bench with GGML_RPC=ON, as bench/compare_llamacpp.py builds its peer;
    returns (rpc-server, llama-bench), reused when they exist."""
    bindir = os.path.join(dest, "build", "bin")
    server, lbench = os.path.join(bindir, "ggml-rpc-server"), os.path.join(bindir, "llama-bench")
    if os.path.exists(server) and os.path.exists(lbench):
        return server, lbench
    import glob
    import tarfile
    src = os.path.join(dest, "sdist")
    os.makedirs(src, exist_ok=True)
    tgz = sorted(glob.glob(os.path.join(src, "llama_cpp_python-*.tar.gz")))
    if not tgz:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        "llama-cpp-python", "-d", src], check=True)
        tgz = sorted(glob.glob(os.path.join(src, "llama_cpp_python-*.tar.gz")))
    vendor = os.path.join(tgz[-1][:-len(".tar.gz")], "vendor", "llama.cpp")
    if not os.path.isdir(vendor):
        with tarfile.open(tgz[-1]) as t:
            t.extractall(src)
    flags = "-fno-tree-dse -fno-dse"
    subprocess.run(["cmake", "-S", vendor, "-B", os.path.join(dest, "build"), "-DGGML_NATIVE=ON",
                    "-DCMAKE_BUILD_TYPE=Release", "-DCMAKE_C_FLAGS=" + flags, "-DCMAKE_CXX_FLAGS=" + flags,
                    "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DGGML_RPC=ON"], check=True)
    subprocess.run(["cmake", "--build", os.path.join(dest, "build"), "--target", "ggml-rpc-server",
                    "llama-bench", "-j2"], check=True)
    return server, lbench


def llama_bench(binary, model, a, extra):
    """llama.cpp's llama-bench: mean tokens/s over its reps, pp and tg"""
    cmd = [binary, "-m", model, "-p", str(a.p), "-n", str(a.n), "-r", str(a.r), "-o", "json"] + extra
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stderr[-2000:]}")
    res = {"pp_tokens_per_s": 0.0, "tg_tokens_per_s": 0.0}
    for e in json.loads(p.stdout[p.stdout.index("["):]):
        res["pp_tokens_per_s" if e.get("n_gen", 0) == 0 else "tg_tokens_per_s"] = float(e["avg_ts"])
    return res


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rpc_bench(server, lbench, model, a, n_layer):
    """llama-bench x 1 thread with the last n_layer/2 layers on one rpc-server x 1 thread"""
    port = free_port()
    srv = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port), "-t", "1"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if srv.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"{server} did not start listening on port {port}")
                time.sleep(0.2)
        return llama_bench(lbench, model, a, ["-t", "1", "--rpc", f"127.0.0.1:{port}", "-ngl", str(n_layer // 2)])
    finally:
        srv.terminate()
        srv.wait(timeout=30)


def pipe_rounds(mpi, model, a):
    """--pipe: 1 process, the unpipelined layer split and the pipelined one, alternated"""
    import statistics

    runs = [("1 process x 2 threads", [MPI_BIN], ["-t", "2"]),
            ("layers, 1 micro-batch", mpi + [MPI_BIN], ["-t", "1", "--split", "layers", "--ubatch", str(a.p)]),
            (f"layers, --ubatch {a.ubatch or 'auto'}", mpi + [MPI_BIN],
             ["-t", "1", "--split", "layers", "--ubatch", str(a.ubatch)])]
    got = {name: [] for name, _, _ in runs}
    print(f"\n{os.path.basename(model)}, -p {a.p} -n {a.n} -r {a.r}, {a.pipe} rounds")
    # "pp % in MPI": each rank's share of the pp time inside MPI calls, mostly waiting for the
    # previous stage (2 stages one after another: ~50% each; pipelined: the fill and drain)
    print(f"{'round':>5} {'run':32} {'pp t/s':>8} {'tg t/s':>8} {'pp % in MPI':>12} {'load':>5}")
    for k in range(a.pipe):
        for name, prefix, extra in runs if k % 2 == 0 else runs[::-1]:  # A B C, C B A: no slot favoured
            res, ranks = bench(prefix, model, a, extra)
            got[name].append((res["pp_tokens_per_s"], res["tg_tokens_per_s"]))
            comm = "/".join(f"{ranks[r][3]:.0f}" for r in sorted(ranks)) or "-"
            print(f"{k + 1:5} {name:32} {res['pp_tokens_per_s']:8.2f} {res['tg_tokens_per_s']:8.2f} {comm:>12} "
                  f"{os.getloadavg()[0]:5.1f}", flush=True)
    med = {n: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for n, v in got.items()}
    for n, (pp, tg) in med.items():
        print(f"median {n:32} pp {pp:8.2f} tg {tg:8.2f}")
    one, before, after = (med[n][0] for n, _, _ in runs)
    # per round, as the load drifts: pipelined / unpipelined pp of the same round
    per = [got[runs[2][0]][k][0] / got[runs[1][0]][k][0] for k in range(a.pipe)]
    print(f"pp pipelined / unpipelined {after / before:.2f} (per round {', '.join(f'{r:.2f}' for r in per)}); "
          f"pipelined / 1 process {after / one:.2f}; unpipelined / 1 process {before / one:.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-m", action="append", help="model(s); default SmolLM2")
    ap.add_argument("-p", type=int, default=64)
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("-r", type=int, default=3)
    ap.add_argument("--build-rpc", metavar="DIR", help="also llama.cpp's RPC backend, built into DIR (once)")
    ap.add_argument("--pipe", type=int, metavar="ROUNDS", help="layer split pipelined vs not (see above)")
    ap.add_argument("--ubatch", type=int, default=0, help="--pipe: micro-batch tokens (default automatic)")
    a = ap.parse_args()
    mpirun = shutil.which("mpirun")
    if not mpirun or not os.path.exists(MPI_BIN):
        sys.exit("needs mpirun (openmpi-bin) and build-mpi/llama3c (make MPI=1)")
    models = a.m or [subprocess.run(["sh", os.path.join(REPO, "scripts", "default-model.sh")], capture_output=True,
                                    text=True, check=True).stdout.strip()]
    mpi = [mpirun, "--oversubscribe", "--bind-to", "none", "-np", "2"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    rpc = build_rpc_peer(a.build_rpc) if a.build_rpc else None
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"CPU {cpu}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    if a.pipe:
        for model in models:
            pipe_rounds(mpi, model, a)
        print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
        return
    for model in models:
        info = model_info(model)
        print(f"\n{os.path.basename(model)}: n_embd {info['n_embd']}, {info['n_layer']} layers, vocab {info['n_vocab']}")
        print(f"{'run':28} {'pp t/s':>8} {'tg t/s':>8} {'RSS MiB/rank':>14} {'sent B/token/rank (formula)':>34} "
              f"{'tg % in MPI (ms/token)':>24} {'file KiB/rank':>14}")
        res, _ = bench([MPI_BIN], model, a, ["-t", "2"])
        print(f"{'1 process x 2 threads':28} {res['pp_tokens_per_s']:8.2f} {res['tg_tokens_per_s']:8.2f} "
              f"{res['peak_rss_bytes'] / 2**20:14.1f} {'-':>34}")
        for split in ("tensor", "layers"):
            if split == "tensor" and info["n_head_kv"] < 2:
                continue
            res, ranks = bench(mpi + [MPI_BIN], model, a, ["-t", "1", "--split", split])
            rss = "/".join(f"{ranks[r][0]:.0f}" for r in sorted(ranks))
            sent = "/".join(f"{ranks[r][1]:.0f} ({formula(split, info, 2, r)})" for r in sorted(ranks))
            # each rank's share of the tg time inside MPI calls, and that time per token
            comm = "/".join(f"{ranks[r][2]:.0f}" for r in sorted(ranks)) + " (" + "/".join(
                f"{ranks[r][2] * 10 / res['tg_tokens_per_s']:.1f}" for r in sorted(ranks)) + ")"
            # KiB of the model file still resident on each rank at the end (docs/DISTRIBUTED.md)
            files = "/".join(ranks[r][4] or "?" for r in sorted(ranks))
            print(f"{'2 ranks x 1 thread, ' + split:28} {res['pp_tokens_per_s']:8.2f} {res['tg_tokens_per_s']:8.2f} "
                  f"{rss:>14} {sent:>34} {comm:>24} {files:>14}")
        if rpc:
            res = llama_bench(rpc[1], model, a, ["-t", "2"])
            print(f"{'llama.cpp 1 process x 2 thr':28} {res['pp_tokens_per_s']:8.2f} {res['tg_tokens_per_s']:8.2f}")
            res = rpc_bench(*rpc, model, a, info["n_layer"])
            print(f"{'llama.cpp RPC 1+1 x 1 thread':28} {res['pp_tokens_per_s']:8.2f} {res['tg_tokens_per_s']:8.2f}")
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
