#!/usr/bin/env python3
"""Generation speed of `llama3c serve` with and without a draft model (or --lookup).

    python3 bench/serve_draft.py -m TARGET.gguf --spec "--draft D.gguf" [--spec "--lookup 8"] \
        [--rounds 5] [--max-tokens 128] [--threads 2]

One server per configuration (the first without speculation), all running at once; each round
sends the same streamed greedy completion to each server in turn (A B C A B C ...), so the
configurations see the same machine load. A request's generation rate is (tokens - 1) / (time of
its last text event - time of its first): model load, the prompt and the first token are left out.
Prints each configuration's median rate, the median of the per-round ratios to the first, the
draft tokens decoded / accepted (/metrics), and checks that every answer's text equals the first
configuration's (greedy answers must not change).
"""
import argparse
import http.client
import json
import os
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "py"))
from server_util import Server  # noqa: E402

PROMPT = ("<|im_start|>user\nWrite a short story about a robot who learns to paint.<|im_end|>\n"
          "<|im_start|>assistant\n")


def timed_stream(srv, body):
    """(text, completion tokens, seconds from the first text event to the last)."""
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=600)
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200, r.read()
    text, n, t_first, t_last, buf = "", None, None, None, b""
    while True:
        line = r.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        ev = json.loads(line[6:])
        if ev.get("usage"):
            n = ev["usage"]["completion_tokens"]
        for c in ev.get("choices", []):
            if c.get("text"):
                now = time.perf_counter()
                t_first = t_first or now
                t_last = now
                text += c["text"]
    conn.close()
    return text, n, (t_last - t_first) if t_first else 0.0


def draft_counts(srv):
    m = srv.metrics()
    return int(m["llama3c_draft_tokens_total"]), int(m["llama3c_draft_tokens_accepted_total"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--spec", action="append", default=[], help='server options, e.g. "--draft D.gguf"')
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", default=PROMPT)
    a = ap.parse_args()
    configs = [""] + a.spec
    body = {"prompt": a.prompt, "max_tokens": a.max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    servers = []
    try:
        for c in configs:
            servers.append(Server(a.model, "--parallel", 1, "--ctx", 1024, *c.split(), threads=a.threads).start())
        for s in servers:  # warm-up: page in the weights, fill the slot
            timed_stream(s, body)
        before = [draft_counts(s) for s in servers]
        rates = [[] for _ in configs]
        base_text = None
        for _ in range(a.rounds):
            for i, s in enumerate(servers):
                text, n, dt = timed_stream(s, body)
                if base_text is None:
                    base_text = text
                if text != base_text:
                    sys.exit(f"answer of '{configs[i]}' differs from the one without speculation:\n"
                             f"{text!r}\n{base_text!r}")
                rates[i].append((n - 1) / dt)
        after = [draft_counts(s) for s in servers]
    finally:
        for s in servers:
            s.stop()
    print(f"{a.model}: {a.rounds} rounds, {a.max_tokens} tokens, -t {a.threads}, greedy; answers identical")
    for i, c in enumerate(configs):
        ratio = statistics.median(r / b for r, b in zip(rates[i], rates[0]))
        d, acc = after[i][0] - before[i][0], after[i][1] - before[i][1]
        extra = f", drafted {d}, accepted {acc} ({100.0 * acc / d:.0f}%)" if d else ""
        print(f"  {c or 'no speculation':40s} {statistics.median(rates[i]):7.2f} tok/s "
              f"(min {min(rates[i]):.2f}, max {max(rates[i]):.2f})  x{ratio:.2f}{extra}")


if __name__ == "__main__":
    main()
