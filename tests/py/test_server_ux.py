"""`llama3c serve` as clients and browsers meet it (issue 24, rows 7-10), on SmolLM2-135M:

- the `model` field: replies carry the served name whatever the request named ("gpt-4o");
  --alias names it; --strict-model answers an unknown name 404 model_not_found as OpenAI does,
  and /v1/models lists exactly the accepted names;
- CORS (--cors ORIGIN): OPTIONS preflight 204 with the Access-Control-Allow-* headers, the
  Allow-Origin header on normal, error and streamed answers for an allowed origin only;
- UTF-8: a generation cut by max_tokens never ends in a cut character, streamed or not; bytes
  that are invalid whatever follows still show as U+FFFD (forced with logit_bias, exact);
- a port in use: the reason ("Address already in use"), exit 1, before the model is loaded;
- a --cors value no browser sends (a path, no scheme) and an empty or long --alias: exit 2.
"""
import json
import socket
import subprocess
import time

import pytest

from server_util import BIN, Server

CTX = 256
ORIGIN = "http://app.example"
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def server(llama3c, smollm2_path):
    yield from Server(smollm2_path, "--parallel", 2, "--ctx", CTX, "--cors", ORIGIN).serving()


@pytest.fixture(scope="module")
def strict(llama3c, smollm2_path):
    yield from Server(smollm2_path, "--parallel", 1, "--ctx", CTX, "--alias", "smol",
                      "-a", "local-model", "--strict-model").serving()


def ask(content, **kw):
    body = {"messages": [{"role": "user", "content": content}], "temperature": 0, "max_tokens": 4}
    body.update(kw)
    return body


def stream_text(server, path, body):
    st, events, _ = server.stream(path, dict(body, stream=True))
    assert st == 200 and events[-1] == "[DONE]", events
    chunks = [e for e in events[:-1] if e.get("choices")]
    key = "delta" if path == CHAT else None
    text = "".join((c["choices"][0][key].get("content") or "") if key else c["choices"][0]["text"]
                   for c in chunks)
    return text, chunks


# ---------------------------------------------------------------------- row 7: model


def test_replies_name_the_served_model(server):
    served = json.loads(server.request("GET", "/v1/models")[2])["data"]
    assert [m["id"] for m in served] == ["SmolLM2-135M-Instruct.Q4_1"]
    name = served[0]["id"]
    for path, body in ((CHAT, ask("Hi")), ("/v1/completions", {"prompt": "Hi", "max_tokens": 2})):
        st, r = server.post_json(path, dict(body, model="gpt-4o"))
        assert st == 200 and r["model"] == name, r
        _, chunks = stream_text(server, path, dict(body, model="gpt-4o"))
        assert chunks and all(c["model"] == name for c in chunks)
    st, r = server.post_json("/v1/embeddings", {"model": "text-embedding-3-small", "input": "hi"})
    assert st == 200 and r["model"] == name, r
    st, r = server.post_json(CHAT, dict(ask("Hi"), model=7))
    assert st == 400 and r["error"]["param"] == "model"


def test_strict_model_and_aliases(strict):
    st, _, data = strict.request("GET", "/v1/models")
    assert st == 200 and [m["id"] for m in json.loads(data)["data"]] == ["smol", "local-model"]
    for path, body in ((CHAT, ask("Hi")), ("/v1/completions", {"prompt": "Hi", "max_tokens": 2}),
                       ("/v1/embeddings", {"input": "hi"})):
        st, r = strict.post_json(path, dict(body, model="gpt-4o"))
        assert st == 404, r
        e = r["error"]
        assert e["code"] == "model_not_found" and e["param"] == "model" and "gpt-4o" in e["message"]
        for model in ("local-model", "smol", "", None):
            b = dict(body) if model is None else dict(body, model=model)
            st, r = strict.post_json(path, b)
            assert st == 200 and r["model"] == "smol", (path, model, r)
        # the file name is not accepted once aliases name the model
        st, _ = strict.post_json(path, dict(body, model="SmolLM2-135M-Instruct.Q4_1"))
        assert st == 404


# ---------------------------------------------------------------------- row 8: CORS


def test_cors_preflight_and_headers(server):
    pre = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os"}
    st, h, body = server.request("OPTIONS", CHAT, headers=pre)
    assert st == 204 and body == b"", (st, h)
    assert h["access-control-allow-origin"] == ORIGIN
    assert "POST" in h["access-control-allow-methods"]
    assert h["access-control-allow-headers"] == "authorization, content-type, x-stainless-os"
    assert int(h["access-control-max-age"]) > 0 and "POST" in h["allow"]
    st, h, _ = server.request("OPTIONS", "/v1/models", headers={"Origin": ORIGIN})
    assert st == 204 and h["access-control-allow-origin"] == ORIGIN and "GET" in h["allow"]
    # normal, error and streamed answers carry it for the allowed origin
    st, h, _ = server.request("POST", CHAT, ask("Hi"), headers={"Origin": ORIGIN})
    assert st == 200 and h["access-control-allow-origin"] == ORIGIN and "Origin" in h["vary"]
    st, h, _ = server.request("POST", CHAT, {"messages": 1}, headers={"Origin": ORIGIN})
    assert st == 400 and h["access-control-allow-origin"] == ORIGIN
    st, h, data = server.request("POST", CHAT, dict(ask("Hi"), stream=True), headers={"Origin": ORIGIN})
    assert st == 200 and h["content-type"].startswith("text/event-stream")
    assert h["access-control-allow-origin"] == ORIGIN and data.endswith(b"data: [DONE]\n\n")
    # another origin, or no Origin (not a browser): no CORS headers, the browser refuses
    for hdr in ({"Origin": "http://evil.example"}, {}):
        st, h, _ = server.request("OPTIONS", CHAT, headers=dict(pre, **hdr) if hdr else {})
        assert st == 204 and "access-control-allow-origin" not in h
        st, h, _ = server.request("POST", CHAT, ask("Hi"), headers=hdr)
        assert st == 200 and "access-control-allow-origin" not in h


def test_cors_off_by_default(strict):
    st, h, _ = strict.request("OPTIONS", CHAT, headers={"Origin": ORIGIN,
                                                       "Access-Control-Request-Method": "POST"})
    assert st == 204 and h["allow"] == "POST, OPTIONS"
    assert not [k for k in h if k.startswith("access-control-")], h


# ---------------------------------------------------------------------- row 9: UTF-8


def byte_token(model, raw):
    """The id of the token that is exactly these bytes (SmolLM2's byte-level vocabulary)."""
    p = subprocess.run([BIN, "tokenize", "-m", model, "--ids", "-p", raw], capture_output=True,
                       timeout=60, check=True)
    ids = p.stdout.split()
    assert len(ids) == 1, (raw, ids)
    return int(ids[0])


def test_utf8_forced_bytes(server, smollm2_path):
    """logit_bias forces the lone lead byte 0xF0 at every step. One token: the text is a cut
    4-byte sequence, held back ("" rather than U+FFFD). Two: the first 0xF0 is followed by
    another lead byte, so it is invalid whatever comes next (one U+FFFD), the second is cut."""
    f0 = byte_token(smollm2_path, b"\xf0")
    for path, body in ((CHAT, ask("Hi")), ("/v1/completions", {"prompt": "Hi"})):
        for n, want in ((1, ""), (2, "\ufffd"), (3, "\ufffd\ufffd")):
            b = dict(body, max_tokens=n, temperature=0, logit_bias={str(f0): 100})
            st, r = server.post_json(path, b)
            assert st == 200, r
            c = r["choices"][0]
            text = c["message"]["content"] if path == CHAT else c["text"]
            assert (text, c["finish_reason"], r["usage"]["completion_tokens"]) == (want, "length", n)
            assert stream_text(server, path, b)[0] == want


def test_utf8_emoji_cut_by_max_tokens(server):
    """SmolLM2 answers this with emoji of 3 tokens each; every max_tokens gives whole characters,
    a prefix of the longer answer, streamed and not."""
    q = "Reply with only emojis: happy moon"
    st, r = server.post_json(CHAT, ask(q, max_tokens=9))
    full = r["choices"][0]["message"]["content"]
    assert st == 200 and full and all(ord(ch) > 0xFFFF for ch in full[:2]), full  # emoji
    for n in range(1, 6):
        st, r = server.post_json(CHAT, ask(q, max_tokens=n))
        text = r["choices"][0]["message"]["content"]
        assert "\ufffd" not in text and full.startswith(text), (n, text, full)
        assert stream_text(server, CHAT, ask(q, max_tokens=n))[0] == text


# ---------------------------------------------------------------------- row 10: listen errors


def test_port_in_use(llama3c, smollm2_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        t0 = time.time()
        p = subprocess.run([BIN, "serve", "-m", smollm2_path, "--port", str(port)],
                           capture_output=True, text=True, timeout=120)
        took = time.time() - t0
    assert p.returncode == 1, p
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in p.stderr, p.stderr
    assert "--port" in p.stderr and "listening" not in p.stderr
    assert took < 10  # the port is taken before the model is loaded


def test_bad_cors_and_alias_options(llama3c, smollm2_path):
    for args, needle in ((["--cors", "http://localhost:3000/"], "--cors expects an origin"),
                         (["--cors", "localhost:3000"], "--cors expects an origin"),
                         (["--alias", ""], "--alias needs a non-empty value"),
                         (["-a", "x" * 300], "a name of at most 255 bytes")):
        p = subprocess.run([BIN, "serve", "-m", smollm2_path, "--port", "0", *args],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and needle in p.stderr, (args, p.stderr)
