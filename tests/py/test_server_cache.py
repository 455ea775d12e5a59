"""`llama3c serve`'s prompt reuse beyond a slot's own cache (SmolLM2-135M, 2 slots, temperature 0).

- the prompt cache in host memory (--cache-ram): a prompt whose slot has been taken by other
  requests meanwhile is restored (cached_tokens = prompt_tokens - 1, /metrics
  llama3c_prompt_tokens_restored_total) and gives the same text as when it was evaluated whole;
- a prefix held by a busy slot (a shared system message) is copied into the slot of a new
  request (llama3c_prompt_tokens_copied_total) and gives the same text as a fresh evaluation;
- the cache stays within its budget (--cache-ram 1: 1 MiB, evictions), --cache-ram 0 turns it
  off, a bad value is refused at start (exit 2, naming the option).
The default kernels are batch invariant (tests/py/test_batch_invariance.py): a token's logits do
not depend on how its prompt was split, so every path must give exactly the same greedy text.
"""
import json
import socket
import subprocess
import threading

import pytest

from server_util import BIN, Server, wait_until

SYSTEM = ("You are a patient teacher of geography who answers in one short sentence and never uses "
          "lists, tables or markdown of any kind.")


def chat_body(user, max_tokens=8, system=None, **kw):
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return dict({"model": "m", "messages": msgs, "max_tokens": max_tokens, "temperature": 0}, **kw)


def post(server, body, path="/v1/chat/completions"):
    st, r = server.post_json(path, body)
    assert st == 200, r
    return r


def text(r):
    c = r["choices"][0]
    return c["message"]["content"] if "message" in c else c["text"]


@pytest.fixture(scope="module")
def server(llama3c, smollm2_path):
    yield from Server(smollm2_path, "--parallel", 2, "--ctx", 512).serving()


def test_evicted_prompt_restored(server):
    a = chat_body("Name the largest ocean on Earth.")
    first = post(server, a)
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    # two other prompts take both slots (least recently used first): a's slot is overwritten
    post(server, {"model": "m", "prompt": "Zebras live in", "max_tokens": 4, "temperature": 0}, "/v1/completions")
    post(server, {"model": "m", "prompt": "Seven plus", "max_tokens": 4, "temperature": 0}, "/v1/completions")
    m0 = server.metrics()
    assert m0["llama3c_prompt_cache_entries"] >= 1 and m0["llama3c_prompt_cache_bytes"] > 0
    again = post(server, a)
    n = again["usage"]["prompt_tokens"]
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] == n - 1
    m1 = server.metrics()
    assert m1["llama3c_prompt_tokens_restored_total"] - m0["llama3c_prompt_tokens_restored_total"] == n - 1
    assert text(again) == text(first)


def test_prefix_copied_from_busy_slot(server):
    question = chat_body("Which river flows through Cairo?", system=SYSTEM)
    ref = post(server, question)  # evaluated in a slot (whole, or from a cached prefix)
    # refill both slots with unrelated prompts, then keep one busy with a long stream of the
    # shared system message (end-of-generation tokens banned so it cannot stop early)
    post(server, {"model": "m", "prompt": "Quartz is", "max_tokens": 2, "temperature": 0}, "/v1/completions")
    post(server, {"model": "m", "prompt": "Violins are", "max_tokens": 2, "temperature": 0}, "/v1/completions")
    long = chat_body("Describe every country of Europe.", max_tokens=300, system=SYSTEM, stream=True,
                     logit_bias={"0": -100, "1": -100, "2": -100})
    sock = socket.create_connection((server.host, server.port), timeout=120)
    payload = json.dumps(long).encode()
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(payload) + payload)
    try:
        got = b""
        while got.count(b"data: ") < 3:  # generating: its slot holds the system prefix
            chunk = sock.recv(65536)
            assert chunk, got
            got += chunk
        m0 = server.metrics()
        r = post(server, question)
        m1 = server.metrics()
        assert server.health()[1]["slots_processing"] >= 1  # the stream is still running
    finally:
        sock.close()
    copied = m1["llama3c_prompt_tokens_copied_total"] - m0["llama3c_prompt_tokens_copied_total"]
    restored = m1["llama3c_prompt_tokens_restored_total"] - m0["llama3c_prompt_tokens_restored_total"]
    cached = r["usage"]["prompt_tokens_details"]["cached_tokens"]
    # the question's own earlier state may come back from the prompt cache (all but the last
    # token); else at least the system message is copied from the busy slot
    assert cached == copied + restored and cached > 30, (cached, copied, restored)
    assert text(r) == text(ref)
    wait_until(lambda: server.health()[1]["slots_processing"] == 0, timeout=60)


def test_shared_prefix_copied_not_restored(llama3c, smollm2_path):
    """Without a prompt cache, the system message is copied from the busy slot."""
    question = chat_body("Which mountain is the highest in Africa?", system=SYSTEM)
    with Server(smollm2_path, "--parallel", 2, "--ctx", 512, "--cache-ram", 0) as srv:
        ref = post(srv, question)
        post(srv, {"model": "m", "prompt": "Quartz is", "max_tokens": 2, "temperature": 0}, "/v1/completions")
        long = chat_body("Describe every country of Europe.", max_tokens=120, system=SYSTEM,
                         logit_bias={"0": -100, "1": -100, "2": -100})
        g0 = srv.metrics()["llama3c_generated_tokens_total"]
        t = threading.Thread(target=lambda: srv.post_json("/v1/chat/completions", long))
        t.start()
        try:
            assert wait_until(lambda: srv.metrics()["llama3c_generated_tokens_total"] >= g0 + 10, timeout=60)
            r = post(srv, question)
        finally:
            t.join()
        m = srv.metrics()
        assert m["llama3c_prompt_tokens_restored_total"] == 0 and m["llama3c_prompt_cache_entries"] == 0
        assert m["llama3c_prompt_tokens_copied_total"] > 30
        assert r["usage"]["prompt_tokens_details"]["cached_tokens"] > 30
        assert text(r) == text(ref)


def test_budget_and_bad_option(llama3c, smollm2_path):
    with Server(smollm2_path, "--parallel", 1, "--ctx", 512, "--cache-ram", 1) as srv:
        for w in ["apples", "rivers", "castles", "planets", "violins", "glaciers"]:
            post(srv, {"model": "m", "prompt": f"Write one sentence about {w}.", "max_tokens": 6,
                       "temperature": 0}, "/v1/completions")
        m = srv.metrics()
        # each request overwrote the one slot and saved its predecessor (5 saves of ~10-14
        # positions, 23 KiB each at f16): they do not all fit 1 MiB, the oldest were evicted
        assert 0 < m["llama3c_prompt_cache_bytes"] <= 1 << 20
        assert 1 <= m["llama3c_prompt_cache_entries"] < 5, m
    p = subprocess.run([BIN, "serve", "-m", smollm2_path, "--port", "0", "--cache-ram", "-1"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "--cache-ram" in p.stderr, p.stderr  # a usage error
