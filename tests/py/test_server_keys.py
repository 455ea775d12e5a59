"""`llama3c serve --api-keys FILE`: named keys with requests/minute and tokens/day limits.

- a wrong or missing key gets 401; each key's usage is in /metrics;
- over requests/minute or tokens/day: 429 with Retry-After (the bucket refill time; the seconds to
  00:00 UTC), while another key goes on unaffected under concurrent load;
- SIGHUP re-reads the file: a streaming request admitted before it completes normally, a removed
  key gets 401 and an added one works; a malformed file is refused (at start: exit with file:line;
  on reload: the old keys stay).
A tiny random model keeps it fast: the answers do not matter, only the accounting.
"""
import http.client
import json
import signal
import threading
import time

import pytest

import gen_models
from server_util import Server

SPEC = gen_models.ModelSpec(n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=128, n_vocab=320, n_ctx=256)
KEYS = """# name key [requests/minute [tokens/day]]
alice  alice-key-0001   3
bob    bob-key-000002   -     0
tina   tina-key-00003   0     5
"""


def auth(key):
    return {"Authorization": f"Bearer {key}"}


def complete(server, key, max_tokens=2, prompt="abc"):
    return server.request("POST", "/v1/completions", {"prompt": prompt, "max_tokens": max_tokens,
                                                      "temperature": 0}, headers=auth(key))


@pytest.fixture
def keyed(llama3c, tiny_model, tmp_path):
    f = tmp_path / "keys.txt"
    f.write_text(KEYS)
    s = Server(tiny_model("keys", SPEC, "F32"), "--parallel", 4, "--ctx", 256, "--api-keys", f)
    s.keys_file = f
    yield from s.serving()


def test_wrong_key_401_and_usage_metrics(keyed):
    for headers in ({}, auth("nope-nope-nope"), auth("alice-key-000"), {"Authorization": "alice-key-0001"}):
        st, h, body = keyed.request("POST", "/v1/completions", {"prompt": "a", "max_tokens": 1}, headers=headers)
        assert st == 401 and h.get("www-authenticate") == "Bearer", (headers, body)
    st, _, _ = keyed.request("GET", "/metrics")
    assert st == 401
    st, _, body = complete(keyed, "bob-key-000002")
    assert st == 200, body
    m = keyed.metrics(headers=auth("bob-key-000002"))
    assert m['llama3c_key_requests_total{key="bob"}'] == 1
    assert m['llama3c_key_tokens_total{key="bob",kind="completion"}'] >= 1
    assert m['llama3c_key_tokens_total{key="bob",kind="prompt"}'] >= 1
    assert m['llama3c_key_requests_total{key="alice"}'] == 0


def test_limits_per_key_independent_under_load(keyed):
    """alice: 3 requests/minute; bob: unlimited; both send 8 requests at once."""
    res = {"alice": [], "bob": []}
    lock = threading.Lock()

    def worker(name, key):
        st, h, _ = complete(keyed, key)
        with lock:
            res[name].append((st, h.get("retry-after")))

    t0 = time.time()
    threads = [threading.Thread(target=worker, args=(n, k)) for _ in range(8)
               for n, k in (("alice", "alice-key-0001"), ("bob", "bob-key-000002"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - t0
    assert [st for st, _ in res["bob"]] == [200] * 8
    ok = sum(st == 200 for st, _ in res["alice"])
    assert 3 <= ok <= 3 + int(elapsed * 3 / 60), (res["alice"], elapsed)  # the bucket refills 3/min
    limited = [ra for st, ra in res["alice"] if st == 429]
    assert len(limited) == 8 - ok and all(1 <= int(ra) <= 20 for ra in limited), limited
    m = keyed.metrics(headers=auth("bob-key-000002"))
    assert m['llama3c_key_limited_total{key="alice"}'] == 8 - ok
    assert m['llama3c_key_requests_total{key="alice"}'] == ok
    assert m['llama3c_key_limited_total{key="bob"}'] == 0


def test_tokens_per_day(keyed):
    st, _, body = complete(keyed, "tina-key-00003", max_tokens=4, prompt="abc abc")
    assert st == 200, body
    used = json.loads(body)["usage"]["total_tokens"]
    assert used >= 5
    st, h, body = complete(keyed, "tina-key-00003")
    assert st == 429 and json.loads(body)["error"]["code"] == "rate_limit_exceeded", body
    to_midnight = 86400 - int(time.time()) % 86400
    assert abs(int(h["retry-after"]) - to_midnight) <= 5, (h["retry-after"], to_midnight)
    assert b"tokens per day" in body
    st, _, _ = complete(keyed, "bob-key-000002")  # another key is not affected
    assert st == 200


def reload(server, text, expect):
    """Writes the keys file, sends SIGHUP and waits for the log line saying expect."""
    server.keys_file.write_text(text)
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 20
    while expect not in server.log():
        assert time.time() < deadline, server.log()[-2000:]
        time.sleep(0.05)


def test_reload_keeps_in_flight(keyed):
    # a streaming request admitted with alice's key, read slowly across the reload
    c = http.client.HTTPConnection(keyed.host, keyed.port, timeout=60)
    c.request("POST", "/v1/completions", json.dumps({"prompt": "abc", "max_tokens": 120, "temperature": 0,
                                                     "stream": True}),
              {"Content-Type": "application/json", **auth("alice-key-0001")})
    r = c.getresponse()
    assert r.status == 200
    first = r.readline()
    assert first.startswith(b"data: ")
    reload(keyed, "carol  carol-key-0004\nbob bob-key-000002\n", "2 API keys reloaded")
    rest = r.read().decode()
    c.close()
    assert rest.rstrip().endswith("data: [DONE]") and '"finish_reason":"length"' in rest, rest[-500:]
    assert complete(keyed, "alice-key-0001")[0] == 401
    assert complete(keyed, "carol-key-0004")[0] == 200
    assert complete(keyed, "bob-key-000002")[0] == 200
    m = keyed.metrics(headers=auth("carol-key-0004"))
    assert m['llama3c_key_tokens_total{key="alice",kind="completion"}'] == 120  # counted after the reload
    # a malformed file: the keys stay as they are
    reload(keyed, "carol\n", "not reloaded")
    assert "keys.txt:1:" in keyed.log()
    assert complete(keyed, "carol-key-0004")[0] == 200


@pytest.mark.parametrize("text,what", [
    ("alice short\n", "keys.txt:1: the key of 'alice'"),
    ("alice alice-key-0001\nalice other-key-0002\n", "keys.txt:2: the name 'alice' appears twice"),
    ("a alice-key-0001\nb alice-key-0001\n", "keys.txt:2: the key of 'b'"),
    ("al/ce alice-key-0001\n", "keys.txt:1: the name"),
    ("alice alice-key-0001 x\n", "keys.txt:1: limits"),
    ("# nothing\n", "no accounts"),
])
def test_bad_keys_file_refused(llama3c, tiny_model, tmp_path, text, what):
    import subprocess
    f = tmp_path / "keys.txt"
    f.write_text(text)
    p = subprocess.run([llama3c, "serve", "-m", tiny_model("keys", SPEC, "F32"), "--port", "0", "--api-keys", f],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and what in p.stderr, p.stderr
