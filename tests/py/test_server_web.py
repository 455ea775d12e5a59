"""The web chat page of `llama3c serve` in headless Chromium: load /, type a question, click Send,
watch the answer stream in, save a screenshot (build/test-artifacts/web_chat.png) and check it is
not blank.

The browser is driven through Chromium's own --remote-debugging-pipe (JSON messages on fds 3/4),
so nothing beyond the `chromium` package is needed. (--dump-dom with --virtual-time-budget does
not wait for a streamed fetch body, so it cannot see the answer arrive.) Skipped with the reason
when chromium is not installed.
"""
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import zlib

import pytest

from server_util import ARTIFACTS, Server

pytestmark = pytest.mark.slow


class Browser:
    """Minimal DevTools client over the pipe transport (one page, flattened session)."""

    def __init__(self, chromium, width=1000, height=760):
        self.profile = tempfile.mkdtemp(prefix="l3c_chromium_")
        cmd_r, self.cmd_w = os.pipe()   # we write commands, chromium reads fd 3
        self.res_r, res_w = os.pipe()   # chromium writes fd 4, we read

        def fds():
            os.dup2(cmd_r, 3)
            os.dup2(res_w, 4)
            os.set_inheritable(3, True)  # dup2(3, 3) (pipes on fds 3/4) would keep close-on-exec
            os.set_inheritable(4, True)

        self.proc = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
             f"--window-size={width},{height}", f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=fds, close_fds=False)
        os.close(cmd_r)
        os.close(res_w)
        self.buf = b""
        self.next_id = 0
        self.session = None
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def call(self, method, timeout=60, **params):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if self.session:
            msg["sessionId"] = self.session
        os.write(self.cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + timeout
        while time.time() < deadline:
            while b"\0" not in self.buf:
                chunk = os.read(self.res_r, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the pipe")
                self.buf += chunk
            raw, self.buf = self.buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
        raise TimeoutError(method)

    def js(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(r["exceptionDetails"])
        return r["result"].get("value")

    def wait(self, expr, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = self.js(expr)
            if v:
                return v
            time.sleep(0.1)
        return self.js(expr)

    def click(self, selector):
        rect = self.js(f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                       f".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()")
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=rect[0], y=rect[1], button="left",
                      clickCount=1)

    def close(self):
        try:
            self.session = None
            self.call("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.cmd_w)
        os.close(self.res_r)
        shutil.rmtree(self.profile, ignore_errors=True)


def png_is_blank(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, i = b"", 8
    while i < len(data):
        n = int.from_bytes(data[i:i + 4], "big")
        if data[i + 4:i + 8] == b"IDAT":
            chunks += data[i + 8:i + 8 + n]
        i += 12 + n
    raw = zlib.decompress(chunks)
    return len(set(raw[::97])) <= 8


def test_web_chat_streams_answer(llama3c, smollm2_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("chromium is not installed (apt-get install chromium); web page not tested")
    server = Server(smollm2_path, "--parallel", 2, "--ctx", 512)
    server.start()
    browser = None
    try:
        browser = Browser(chromium)
        browser.call("Page.enable")
        browser.call("Page.navigate", url=server.base_url + "/#temperature=0&max_tokens=48")
        assert browser.wait("document.readyState === 'complete' && !!document.getElementById('send')")
        # the page asked /v1/models for the model's name
        assert "SmolLM2" in browser.wait("document.getElementById('model').textContent", timeout=20)
        # the answer the page must show: the same request through the API at temperature 0, asked
        # after a warm-up so that it and the page's request both evaluate from the prefix cache
        text = "What is the capital of France? Answer in one sentence."  # a clear-margin answer
        question = {"messages": [{"role": "user", "content": text}],
                    "temperature": 0}
        server.post_json("/v1/chat/completions", dict(question, max_tokens=1))
        st, api = server.post_json("/v1/chat/completions", dict(question, max_tokens=48))
        assert st == 200
        browser.js("document.getElementById('input').focus()")
        browser.call("Input.insertText", text=text)
        browser.click("#send")
        assert browser.wait("document.querySelector('.msg.user') !== null", timeout=10)
        # streaming: the bubble is marked .streaming until the stream ends; some text shows up
        # before that (typically on the first token)
        seen_partial = browser.wait("(() => { const a = document.querySelector('.msg.assistant');"
                                    " return a && (a.classList.contains('streaming') && a.textContent.length > 0"
                                    " || a.classList.contains('done')) ? a.className : ''; })()", timeout=120)
        assert seen_partial
        answer = browser.wait("(() => { const a = document.querySelector('.msg.assistant.done');"
                              " return a ? a.firstChild.textContent : ''; })()", timeout=180)
        assert answer == api["choices"][0]["message"]["content"], (answer, api)
        assert browser.js("document.querySelectorAll('.msg.error').length") == 0
        meta = browser.js("document.querySelector('.msg.assistant .meta').textContent")
        assert "tokens" in meta  # the usage chunk arrived (stream_options.include_usage)
        shot = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
        os.makedirs(ARTIFACTS, exist_ok=True)
        with open(os.path.join(ARTIFACTS, "web_chat.png"), "wb") as f:
            f.write(shot)
        assert not png_is_blank(shot), "the screenshot looks blank"
        # a second turn goes out with the history (the server reuses the first turn's cache)
        cached0 = server.metrics()["llama3c_prompt_tokens_cached_total"]
        browser.js("document.getElementById('input').focus()")
        browser.call("Input.insertText", text="And of Germany?")
        browser.click("#send")
        assert browser.wait("document.querySelectorAll('.msg.assistant.done').length === 2", timeout=180)
        assert server.metrics()["llama3c_prompt_tokens_cached_total"] > cached0
    finally:
        if browser:
            browser.close()
        server.stop()
        server.kill()
