"""Regressions for bugs found by the libFuzzer harnesses (tests/fuzz/, `make fuzz-ci`).

Each test replays what the harness found through the real program and checks the fixed behaviour
against an independent expectation (Python's own UTF-8 codec and JSON parser).
"""
import json
import os

import pytest

from server_util import Server


@pytest.fixture(scope="module")
def server(llama3c, smollm2_path):
    yield from Server(smollm2_path, "--parallel", 1, "--ctx", 256).serving()


# fuzz_server_request: a "model" longer than 256 bytes was cut inside a UTF-8 sequence; every
# response writer then failed on the invalid string (after the generation had run), so a valid
# request got no valid answer. Replies now carry the served name (docs/SERVER.md, "model"), so the
# request's name never reaches a writer; the request must still get a valid answer.
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("endpoint", ["/v1/chat/completions", "/v1/completions"])
def test_long_multibyte_model_name(server, endpoint, stream):
    name = "a" + "\u00e9" * 200  # 401 bytes: byte 256 falls inside the 128th "é"
    body = {"model": name, "max_tokens": 2, "temperature": 0, "stream": stream}
    if endpoint.endswith("chat/completions"):
        body["messages"] = [{"role": "user", "content": "Hi"}]
    else:
        body["prompt"] = "Hi"
    want = "SmolLM2-135M-Instruct.Q4_1"
    if not stream:
        st, r = server.post_json(endpoint, body)
        assert st == 200, r
        assert r["model"] == want
        return
    st, events, _ = server.stream(endpoint, body)
    assert st == 200 and events[-1] == "[DONE]", events
    assert all(e["model"] == want for e in events[:-1]) and len(events) >= 2


# The same writers with the server's own model id, taken from the file name, which may hold any
# bytes: GET /v1/models and the default "model" of a response must still be valid JSON (invalid
# bytes become U+FFFD).
def test_model_file_name_not_utf8(llama3c, smollm2_path, tmp_path):
    link = os.path.join(os.fsencode(str(tmp_path)), b"smol\xff.gguf")
    os.symlink(os.fsencode(smollm2_path), link)
    s = Server(os.fsdecode(link), "--parallel", 1, "--ctx", 128)
    s.start()
    try:
        st, _, data = s.request("GET", "/v1/models")
        assert st == 200, data
        assert json.loads(data)["data"][0]["id"] == "smol\ufffd"
        st, r = s.post_json("/v1/completions", {"prompt": "Hi", "max_tokens": 1})
        assert st == 200 and r["model"] == "smol\ufffd", r
    finally:
        s.kill()
