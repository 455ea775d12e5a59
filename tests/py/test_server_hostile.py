"""`llama3c serve` against hostile clients: a generated, seeded corpus of a few thousand requests.

Kinds: random bytes; garbage request lines and headers; wrong methods on every route; bodies of
random bytes, truncated JSON, invalid UTF-8, NUL escapes, huge numbers, deep nesting; valid
requests with one field replaced by a random JSON value or deleted; bad Content-Length and
chunked encodings; oversized headers and bodies; clients that disconnect mid-request (a body
shorter than announced) and mid-stream. Eight client threads send them at once.

Afterwards the server must be alive, answer /health, free every slot, give the same greedy
answer to a reference request as before the corpus, answer a chat request, keep its RSS bounded, and every JSON error it sent must have
OpenAI's shape. No 5xx answer is allowed (but 505 for an unknown HTTP version). The corpus is deterministic (seeded); its size is
L3C_HOSTILE_N (default 2000; a 300-request sample runs in the fast suite).

Every request also carries the status it must get, computed independently of the server: a
malformed or non-object body, deep nesting, invalid UTF-8: 400; a mutated field: 400 exactly when
the value breaks the documented type / range rules (`expect_field`, written from docs/SERVER.md),
else 200 (both only where the tokenizer alone can tell whether a long prompt fits); unknown route
404, wrong method 405, body too large 413 (or a reset while still sending), wrong Content-Type 415,
huge headers 431 (libmicrohttpd). Only garbage request lines and random bytes (answered by
libmicrohttpd, HTML bodies) are checked against a set of statuses.
"""
import collections
import json
import os
import random
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from server_util import BUILD, Server

ROUTES = ["/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics", "/",
          "/v1/chat/completions/", "/v1//completions", "/nope", "/v1/chat/completions?x=1"]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "FOO", "get", "P\x00ST"]
FIELDS = ["model", "messages", "prompt", "max_tokens", "max_completion_tokens", "temperature", "top_p",
          "stop", "seed", "n", "logit_bias", "stream", "stream_options", "presence_penalty", "top_k"]


def rand_json(r, depth=0):
    k = r.randrange(12 if depth < 3 else 8)
    if k == 0: return None
    if k == 1: return r.choice([True, False])
    if k == 2: return r.choice([0, -1, 1, 2, 2**31, 2**63 - 1, -2**63, 10**18, 7])
    if k == 3: return r.choice([0.5, -0.0, 1e308, -1e308, 1e-320, 3.14, 100.5, 2.0])
    if k == 4: return "".join(chr(r.randrange(1, 0x2FFF)) for _ in range(r.randrange(20)))
    if k == 5: return r.choice(["", "user", "<|im_end|>", "\ud7ff", "x" * 600, "12", "-5", "system"])
    if k == 6: return {str(r.randrange(60000)): r.choice([-100, 100, 0.5, 101, "x"])}
    if k == 7: return [r.choice(["a", "b", "stop", ""]) for _ in range(r.randrange(7))]
    if k in (8, 9): return [rand_json(r, depth + 1) for _ in range(r.randrange(4))]
    return {r.choice(FIELDS + ["role", "content", "type", "text"]): rand_json(r, depth + 1)
            for _ in range(r.randrange(4))}


def base_request(r):
    if r.random() < 0.5:
        return "/v1/completions", {"model": "m", "prompt": r.choice(["Hi", "Once", "1 2 3", "<|im_start|>"]),
                                   "max_tokens": r.choice([1, 2]), "temperature": 0}
    return "/v1/chat/completions", {"model": "m", "max_tokens": 1, "temperature": r.choice([0, 0.7]),
                                    "messages": [{"role": "user", "content": r.choice(["hi", "2+2?", "yo"])}]}


def http(method, path, body=b"", headers=None, content_length=True):
    h = {"Host": "127.0.0.1", "Connection": "close"}
    if body and content_length:
        h["Content-Length"] = str(len(body))
    h.update(headers or {})
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
    return head.encode("latin-1", "replace") + body


def json_http(path, obj, **kw):
    return http("POST", path, json.dumps(obj).encode(), {"Content-Type": "application/json"}, **kw)


N_VOCAB = 49152  # SmolLM2
POST_ROUTES = {"/v1/chat/completions", "/v1/completions", "/v1/chat/completions?x=1"}
GET_ROUTES = {"/v1/models", "/health", "/metrics", "/"}
HUGE_NUMBER = {"1e99999": 400, "-1e99999": 400, "123456789012345678901234567890": 400, "NaN": 400,
               "Infinity": 400, "0x10": 400, "1.5e308": 400, "-0": 200, "00012": 400,
               "1e-99999": 200}  # jansson: overflow is an error, underflow gives 0 (a valid temperature)
# an unterminated chunked body: the connection closes without an answer (libmicrohttpd)
CHUNKED = {b"zz\r\nabc\r\n0\r\n\r\n": {400}, b"ffffffffffffffff\r\nab": {0}, b"3\r\nabc": {0},
           b"-1\r\n\r\n": {400}, b"5\r\n{\"pr\r\n0\r\n\r\n": {400}}


def expect_method(method, route):
    """The status of `method route` with the body {"a":1} (no Content-Type)."""
    if method == "OPTIONS" and (route in POST_ROUTES or route in GET_ROUTES):
        return 204  # a CORS preflight or a client asking: 204 with Allow
    if route in POST_ROUTES:
        return 400 if method == "POST" else 405  # POST: neither 'messages' nor 'prompt'
    if route in GET_ROUTES:
        return 200 if method in ("GET", "HEAD") else 405
    return 404


def is_num(v, lo, hi):
    return type(v) in (int, float) and lo <= v <= hi


def is_int(v):
    return type(v) is int


ROLES = {"system", "developer", "user", "assistant", "tool", "ipython"}


def messages_ok(v):
    """None: not valid; else the total content bytes (the prompt may still be too long)."""
    if type(v) is not list or not v:
        return None
    total = 0
    for m in v:
        if type(m) is not dict or type(m.get("role")) is not str or m["role"] not in ROLES:
            return None
        c = m.get("content")
        if type(c) is str:
            total += len(c.encode())
        elif type(c) is list:
            for part in c:
                if type(part) is not dict or part.get("type") != "text" or type(part.get("text")) is not str:
                    return None
                total += len(part["text"].encode()) + 1
        elif not (c is None and m["role"] == "assistant"):
            return None
    return total


def expect_field(path, f, obj):
    """The statuses a request with field f mutated (or removed) may get: {400}, {200}, or both
    where only the tokenizer can tell whether the prompt fits the 128-token context."""
    v = obj.get(f)
    chat = "chat" in path
    long_ok = {200, 400}
    if f == "model":
        ok = v is None or type(v) is str
    elif f == "messages":
        if not chat:
            return {200}
        total = messages_ok(v)
        if total is None:
            return {400}
        return {200} if total <= 200 else long_ok
    elif f == "prompt":
        if chat:
            return {200}
        if type(v) is list and len(v) == 1 and type(v[0]) is str:
            v = v[0]
        if type(v) is str:
            return {400} if v == "" else {200} if len(v.encode()) <= 200 else long_ok
        ok = type(v) is list and 0 < len(v) < 128 and all(is_int(t) and 0 <= t < N_VOCAB for t in v)
    elif f in ("max_tokens", "max_completion_tokens"):
        ok = v is None or (is_int(v) and 1 <= v <= 2**31 - 1)
    elif f == "temperature":
        ok = v is None or is_num(v, 0, 2)
    elif f == "top_p":
        ok = v is None or is_num(v, 0, 1)
    elif f == "presence_penalty":
        ok = v is None or is_num(v, -2, 2)
    elif f == "top_k":
        ok = v is None or (is_int(v) and 0 <= v <= N_VOCAB)
    elif f == "seed":
        ok = v is None or is_int(v)
    elif f == "n":
        ok = v is None or (is_int(v) and v == 1)
    elif f == "stream":
        ok = v is None or type(v) is bool
    elif f == "stream_options":
        ok = v is None or (type(v) is dict and (v.get("include_usage") is None or type(v["include_usage"]) is bool))
    elif f == "stop":
        items = v if type(v) is list else [v]
        ok = v is None or ((type(v) is str or (type(v) is list and len(v) <= 4))
                           and all(type(x) is str and len(x.encode()) <= 512 for x in items))
    elif f == "logit_bias":
        ok = v is None or (type(v) is dict and len(v) <= 1024 and all(
            k.isdigit() and k.isascii() and int(k) < N_VOCAB and is_num(b, -100, 100) for k, b in v.items()))
    else:
        raise AssertionError(f)
    return {200} if ok else {400}


def corpus(n, seed=20261127):
    """Yields (kind, payload bytes, mode, expected statuses); mode: 'read' | 'half' (send, shut
    write, read) | 'drop' (send, close at once) | 'stream-drop' (read a little of the answer,
    then close). Status 0: no HTTP answer (the connection closed)."""
    r = random.Random(seed)
    for i in range(n):
        k = i % 20
        if k == 0:
            yield "random-bytes", bytes(r.randrange(256) for _ in range(r.randrange(1, 3000))), "half", {0, 400}
        elif k == 1:
            line = r.choice(METHODS) + " " + r.choice(ROUTES + ["*", "", "/" + "a" * 9000, "%00", "/../etc"])
            yield "request-line", (line + r.choice([" HTTP/1.1", " HTTP/0.9", " HTTP/9.9", "", " HTTP/1.1 x"])
                                   + "\r\n\r\n").encode("latin-1", "replace"), "half", {0, 200, 204, 400, 404, 405, 505}
        elif k == 2:
            m, route = r.choice(METHODS), r.choice(ROUTES)
            yield "method", http(m, route, b'{"a":1}'), "read", {expect_method(m, route)}
        elif k == 3:
            path, _ = base_request(r)
            yield "random-body", http("POST", path, bytes(r.randrange(256) for _ in range(r.randrange(1, 500))),
                                      {"Content-Type": "application/json"}), "read", {400}
        elif k == 4:
            path, obj = base_request(r)
            s = json.dumps(obj).encode()
            yield "truncated-json", http("POST", path, s[:r.randrange(len(s))] or b"{",
                                         {"Content-Type": "application/json"}), "read", {400}
        elif k in (5, 6, 7, 8):
            path, obj = base_request(r)
            f = r.choice(FIELDS)
            if r.random() < 0.2:
                obj.pop(f, None)
            else:
                obj[f] = rand_json(r)
            if f in ("max_tokens", "max_completion_tokens") and (obj.get(f) is None or not isinstance(obj[f], int)
                                                                 or obj[f] > 4):
                obj[f] = r.choice([0, -1, "8", 2.5, [1], {"a": 1}])  # invalid only: keep generation short
            if f == "stream" and obj.get("stream") is True:
                obj["stream"] = "true"
            yield "mutated-field:" + f, json_http(path, obj), "read", expect_field(path, f, obj)
        elif k == 9:
            depth = r.choice([100, 3000, 50000, 200000])
            s = (r.choice(["[", '{"a":']) * depth).encode()
            yield "deep-nesting", http("POST", "/v1/chat/completions", s, {"Content-Type": "application/json"}), "read", {400}
        elif k == 10:
            lit = r.choice(["1e99999", "-1e99999", "123456789012345678901234567890", "NaN", "Infinity",
                            "0x10", "1.5e308", "-0", "00012", "1e-99999"])
            body = ('{"messages":[{"role":"user","content":"hi"}],"max_tokens":1,"temperature":%s}' % lit).encode()
            yield "huge-number", http("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"}), "read", \
                {HUGE_NUMBER[lit]}
        elif k == 11:
            bad = r.choice([b'{"messages":[{"role":"user","content":"\xff\xfe"}],"max_tokens":1}',
                            b'{"messages":[{"role":"user","content":"a\\u0000b"}],"max_tokens":1}',
                            b'{"messages":[{"role":"user","content":"\\ud800"}],"max_tokens":1}',
                            b'{"prompt":"x","max_tokens":1,"prompt":"y"}',
                            b'\xef\xbb\xbf{"prompt":"bom","max_tokens":1}'])
            # invalid UTF-8, NUL, a lone surrogate and a BOM are refused by jansson; a repeated key: the last wins
            yield "bad-utf8", http("POST", "/v1/completions", bad, {"Content-Type": "application/json"}), "read", \
                {200 if b'"prompt":"y"' in bad else 400}
        elif k == 12:
            cl = r.choice(["abc", "-1", "99999999999999999999", "1 2", "", "0x10", "5000000"])
            yield "content-length", http("POST", "/v1/completions", b'{"prompt":"x"}',
                                         {"Content-Length": cl, "Content-Type": "application/json"},
                                         content_length=False), "half", {413 if cl.isdigit() and int(cl) > (1 << 20) else 400}
        elif k == 13:
            chunks = r.choice([b"zz\r\nabc\r\n0\r\n\r\n", b"ffffffffffffffff\r\nab", b"3\r\nabc", b"-1\r\n\r\n",
                               b"5\r\n{\"pr\r\n0\r\n\r\n"])
            yield "chunked", http("POST", "/v1/completions", chunks,
                                  {"Transfer-Encoding": "chunked", "Content-Type": "application/json"},
                                  content_length=False), "half", CHUNKED[chunks]
        elif k == 14:
            big = "x" * r.choice([8000, 70000, 300000])
            yield "big-header", http("GET", "/health", b"", {"X-Big": big}), "half", {200 if len(big) < 32768 else 431}
        elif k == 15:
            path, obj = base_request(r)
            s = json.dumps(obj).encode()
            payload = http("POST", path, b"", {"Content-Type": "application/json",
                                               "Content-Length": str(len(s) + 100)}, content_length=False)
            yield "drop-mid-request", payload + s[:r.randrange(len(s))], "drop", {0}
        elif k == 16:
            path, obj = base_request(r)
            obj.update(stream=True, max_tokens=r.choice([3, 6]))
            yield "drop-mid-stream", json_http(path, obj), "stream-drop", {200}
        elif k == 17:
            body = b"x" * r.choice([(1 << 20) + 1, 3 << 20])
            # 413, or the connection reset while the client was still sending the rest of the body
            yield "oversized-body", http("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"}), "read", \
                {413, 0}
        elif k == 18:
            path, obj = base_request(r)
            yield "content-type", http("POST", path, json.dumps(obj).encode(),
                                       {"Content-Type": r.choice(["text/plain", "multipart/form-data; boundary=x",
                                                                  "application/jsonx", "application/x-www-form-urlencoded"])}), "read", \
                {415}
        else:
            path, obj = base_request(r)
            obj["stream"] = r.random() < 0.5
            yield "valid", json_http(path, obj), "read", {200}


def send(host, port, payload, mode, timeout=60):
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        try:
            s.sendall(payload)
        except OSError:
            return b"", "send-failed"
        if mode == "drop":
            return b"", "dropped"
        if mode == "half":
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        out = b""
        limit = 200 if mode == "stream-drop" else 1 << 22
        while len(out) < limit:
            try:
                b = s.recv(65536)
            except socket.timeout:
                return out, "timeout"
            except OSError:
                break
            if not b:
                break
            out += b
        return out, "ok"
    finally:
        s.close()


def check_response(kind, payload, out, errors):
    """Returns the status (0: no HTTP answer); records malformed error bodies."""
    if not out.startswith(b"HTTP/1."):
        return 0
    try:
        status = int(out[9:12])
    except ValueError:
        errors.append((kind, out[:120]))
        return -1
    head, _, body = out.partition(b"\r\n\r\n")
    if payload.startswith(b"HEAD "):
        return status  # headers only
    if status >= 400 and b"application/json" in head.lower() and b"content-length" in head.lower():
        try:
            err = json.loads(body)["error"]
            assert set(err) == {"message", "type", "param", "code"} and err["message"]
        except Exception:
            errors.append((kind, out[:300]))
    return status


# A one-token prompt is evaluated the same way whatever the slots' caches hold (at least the last
# prompt token is always evaluated, and then one token per step), so its greedy answer must not
# change. (A longer prompt may reuse a cached prefix, and the engine's logits may differ in the
# last bits between a prompt evaluated in one batch and in pieces, so its text is not compared.)
REFERENCE = {"model": "m", "prompt": "Hello", "max_tokens": 12, "temperature": 0}
CHAT = {"model": "m", "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 12, "temperature": 0}


def run_corpus(server, n):
    st, ref = server.post_json("/v1/completions", REFERENCE)
    assert st == 200 and ref["usage"]["prompt_tokens"] == 1
    rss0 = server.rss_kb()
    statuses = collections.Counter()
    by_kind = collections.defaultdict(collections.Counter)
    outcomes = collections.Counter()
    errors = []
    lock = threading.Lock()

    wrong = []

    def one(item):
        kind, payload, mode, expect = item
        out, how = send(server.host, server.port, payload, mode)
        st = check_response(kind, payload, out, errors)
        with lock:
            if st not in expect:
                wrong.append((kind, sorted(expect), st, payload[:160], out[:300]))
            statuses[st] += 1
            by_kind[kind.split(":")[0]][st] += 1
            outcomes[how] += 1

    t0 = time.time()
    with ThreadPoolExecutor(8) as ex:
        for i, _ in enumerate(ex.map(one, corpus(n))):
            if i % 250 == 0:
                assert server.alive(), f"server died during the corpus:\n{server.log()[-3000:]}"
    took = time.time() - t0
    assert server.alive(), server.log()[-3000:]
    st, h = server.health()
    assert st == 200 and h["status"] == "ok"
    # every slot comes back, nothing stays queued
    deadline = time.time() + 10
    while time.time() < deadline and (h["slots_processing"] or h["queue"]):
        time.sleep(0.1)
        h = server.health()[1]
    assert h["slots_processing"] == 0 and h["queue"] == 0, h
    st, after = server.post_json("/v1/completions", REFERENCE)
    assert st == 200 and after["choices"][0]["text"] == ref["choices"][0]["text"]
    st, chat = server.post_json("/v1/chat/completions", CHAT)
    assert st == 200 and chat["choices"][0]["message"]["content"] and chat["usage"]["completion_tokens"] > 0
    rss1 = server.rss_kb()
    print(f"\nhostile corpus: {n} requests in {took:.1f} s; statuses {dict(statuses)}; outcomes {dict(outcomes)}; "
          f"RSS {rss0} -> {rss1} KiB")
    assert not errors, errors[:5]
    assert not wrong, f"{len(wrong)} answers with an unexpected status, e.g. {wrong[:4]}"
    # 505 is libmicrohttpd's answer to "HTTP/9.9"; any other 5xx is a server fault
    assert not [s for s in statuses if s >= 500 and s != 505], {k: dict(v) for k, v in by_kind.items()}
    assert outcomes["timeout"] == 0, outcomes
    # the prompt cache (--cache-ram) holds KV of earlier prompts on purpose, within its budget
    cache_kib = server.metrics().get("llama3c_prompt_cache_bytes", 0) / 1024
    if "asan" not in BUILD:  # ASan keeps freed memory in quarantine: RSS says nothing there
        assert rss1 < rss0 + 96 * 1024 + cache_kib, (rss0, rss1, cache_kib)
    return statuses, by_kind


@pytest.fixture(scope="module")
def server(llama3c, smollm2_path):
    yield from Server(smollm2_path, "--parallel", 4, "--ctx", 128, "--queue", 256, "--max-body", 1 << 20,
               "--timeout", 10).serving()


def test_hostile_sample(server):
    statuses, by_kind = run_corpus(server, 300)
    assert statuses[200] > 0 and statuses[400] > 0


@pytest.mark.slow
def test_hostile_corpus(server):
    n = int(os.environ.get("L3C_HOSTILE_N", "2000"))
    statuses, by_kind = run_corpus(server, n)
    assert by_kind["valid"][200] == sum(by_kind["valid"].values())
    # 413, or the connection reset while the client was still sending the rest of the body
    assert set(by_kind["oversized-body"]) <= {413, 0} and by_kind["oversized-body"][413] > 0
    assert set(by_kind["content-type"]) == {415}
