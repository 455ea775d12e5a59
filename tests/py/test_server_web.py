"""The web chat page of `llama3c serve` in headless Chromium: load /, see the empty-chat hint, type a
question, click Send, watch the answer stream in, see it rendered as Markdown (a code block and a
numbered list), save a screenshot (build/test-artifacts/web_chat.png), reload and find the chat
again (localStorage), open a new chat, delete one; and a stored answer full of HTML and script
shows as text, runs nothing (markdown-it with html: false, CSP without inline script).

The browser is driven through Chromium's own --remote-debugging-pipe (JSON messages on fds 3/4),
so nothing beyond the `chromium` package is needed. (--dump-dom with --virtual-time-budget does
not wait for a streamed fetch body, so it cannot see the answer arrive.) Skipped with the reason
when chromium is not installed.
"""
import base64
import hashlib
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


MARKDOWN_IT_SHA256 = "2fa9f041fad4bf862b0eefcec808de853c8c8d9eddd27d2d8e6f1a0711c49f5f"  # scripts/vendor-markdown-it.sh
STORED = "JSON.parse(localStorage.getItem('llama3c_chats') || '{\"chats\": []}')"


def chromium_or_skip():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("chromium is not installed (apt-get install chromium); web page not tested")
    return chromium


def screenshot(browser, name):
    shot = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
    os.makedirs(ARTIFACTS, exist_ok=True)
    with open(os.path.join(ARTIFACTS, name), "wb") as f:
        f.write(shot)
    assert not png_is_blank(shot), f"the screenshot {name} looks blank"


def load_page(browser, url):
    browser.call("Page.navigate", url=url)
    assert browser.wait("document.readyState === 'complete' && !!document.getElementById('send')"
                        " && !!document.getElementById('chats')")


@pytest.fixture(scope="module")
def web_server(llama3c, smollm2_path):
    yield from Server(smollm2_path, "--parallel", 2, "--ctx", 512).serving()


def test_web_page_files(web_server):
    """The page, its script and the vendored renderer (byte for byte Debian's file), served with
    a policy that allows no inline script and no other origin."""
    st, h, page = web_server.request("GET", "/")
    assert st == 200 and h["content-type"].startswith("text/html")
    csp = h["content-security-policy"]
    assert "script-src 'self';" in csp and "unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    assert "connect-src 'self'" in csp and "default-src 'none'" in csp
    assert b'src="/chat.js"' in page and b'src="/vendor/markdown-it-8.4.2.js"' in page
    assert b"<script>" not in page and b"http://" not in page and b"https://" not in page
    st, h, js = web_server.request("GET", "/chat.js")
    assert st == 200 and h["content-type"].startswith("text/javascript") and b"getReader" in js
    assert b"html: false" in js and b"localStorage" in js
    st, h, lib = web_server.request("GET", "/vendor/markdown-it-8.4.2.js")
    assert st == 200 and h["content-type"].startswith("text/javascript")
    assert hashlib.sha256(lib).hexdigest() == MARKDOWN_IT_SHA256
    assert "max-age" in h["cache-control"]
    st, _, _ = web_server.request("GET", "/vendor/other.js")
    assert st == 404


def test_web_chat_streams_answer(web_server):
    chromium = chromium_or_skip()
    server = web_server
    browser = None
    try:
        browser = Browser(chromium)
        browser.call("Page.enable")
        load_page(browser, server.base_url + "/#temperature=0&max_tokens=140")
        # the page asked /v1/models for the model's name; an empty chat shows the hint
        assert "SmolLM2" in browser.wait("document.getElementById('model').textContent", timeout=20)
        hint = browser.wait("(document.getElementById('empty') || {}).innerText", timeout=10)
        assert "Start a chat" in hint and "Enter sends" in hint and "SmolLM2" in hint, hint
        assert browser.js("document.querySelectorAll('#chats li').length") == 0
        # the answer the page must show: the same request through the API at temperature 0, asked
        # after a warm-up so that it and the page's request both evaluate from the prefix cache
        text = "Show how to print hello world in Python, with a list of steps."
        question = {"messages": [{"role": "user", "content": text}], "temperature": 0}
        server.post_json("/v1/chat/completions", dict(question, max_tokens=1))
        st, api = server.post_json("/v1/chat/completions", dict(question, max_tokens=140))
        assert st == 200
        want = api["choices"][0]["message"]["content"]
        # SmolLM2 answers with a code fence and a numbered list: the Markdown the page must render
        assert "```python\n" in want and "\n1. " in want and "\n2. " in want, want
        browser.js("document.getElementById('input').focus()")
        browser.call("Input.insertText", text=text)
        browser.click("#send")
        assert browser.wait("document.querySelector('.msg.user') !== null", timeout=10)
        assert browser.js("document.getElementById('empty')") is None
        # streaming: the bubble is marked .streaming until the stream ends; some text shows up
        # before that (typically on the first token)
        seen_partial = browser.wait("(() => { const a = document.querySelector('.msg.assistant');"
                                    " return a && (a.classList.contains('streaming') && a.textContent.length > 0"
                                    " || a.classList.contains('done')) ? a.className : ''; })()", timeout=120)
        assert seen_partial
        assert browser.wait("document.querySelector('.msg.assistant.done') !== null", timeout=180)
        stored = browser.js(STORED)
        assert len(stored["chats"]) == 1 and stored["current"] == stored["chats"][0]["id"]
        msgs = stored["chats"][0]["messages"]
        assert [m["role"] for m in msgs] == ["user", "assistant"] and msgs[0]["content"] == text
        assert msgs[1]["content"] == want, (msgs[1], want)
        assert browser.js("document.querySelectorAll('.msg.error').length") == 0
        meta = browser.js("document.querySelector('.msg.assistant .meta').textContent")
        assert "tokens" in meta  # the usage chunk arrived (stream_options.include_usage)

        def rendered():
            return browser.js("""(() => { const b = document.querySelector('.msg.assistant .body');
                const code = b.querySelector('pre > code.language-python');
                return {code: code ? code.textContent : null, items: b.querySelectorAll('ol > li').length,
                        fences: b.textContent.includes('```'), text: b.innerText}; })()""")
        r = rendered()
        assert r["code"] and "print(" in r["code"] and r["code"] in want, r
        assert r["items"] >= 2 and not r["fences"], r
        assert browser.js("document.querySelector('#chats li.current .title').textContent") == text
        screenshot(browser, "web_chat.png")  # rendered Markdown: a code block and a numbered list
        # a reload finds the chat again, rendered the same
        browser.call("Page.reload")
        assert browser.wait("document.readyState === 'complete' && "
                            "document.querySelectorAll('.msg.assistant .body').length === 1", timeout=20)
        assert rendered() == r and browser.js(STORED) == stored
        assert browser.js("document.querySelectorAll('#chats li').length") == 1
        # a second turn goes out with the history (the server reuses the first turn's cache)
        cached0 = server.metrics()["llama3c_prompt_tokens_cached_total"]
        browser.js("document.getElementById('maxtok').value = 4")
        browser.js("document.getElementById('input').focus()")
        browser.call("Input.insertText", text="Thanks!")
        browser.click("#send")
        assert browser.wait("document.querySelectorAll('.msg.assistant.done').length === 2", timeout=180)
        assert server.metrics()["llama3c_prompt_tokens_cached_total"] > cached0
        assert len(browser.js(STORED)["chats"][0]["messages"]) == 4
        # New chat: the hint again, the old chat still listed; delete it: gone from the list and
        # from the storage
        browser.click("#new")
        assert browser.wait("!!document.getElementById('empty')", timeout=10)
        assert browser.js("document.querySelectorAll('#chats li').length") == 1
        assert browser.js(STORED)["current"] is None
        # a reload in the middle of an answer keeps what had arrived
        browser.js("document.getElementById('maxtok').value = 200")
        browser.js("document.getElementById('input').focus()")
        browser.call("Input.insertText", text="Count from 1 to 100, one number per line.")
        browser.click("#send")
        assert browser.wait("(() => { const a = document.querySelector('.msg.assistant.streaming .body');"
                            " return a && a.textContent.length > 4; })()", timeout=60)
        browser.call("Page.reload")
        assert browser.wait("document.readyState === 'complete' && "
                            "document.querySelectorAll('#chats li').length === 2", timeout=20)
        chats = browser.js(STORED)
        cur = [c for c in chats["chats"] if c["id"] == chats["current"]][0]
        assert [m["role"] for m in cur["messages"]] == ["user", "assistant"], cur
        assert cur["messages"][1]["meta"] == "interrupted" and cur["messages"][1]["content"], cur
        assert browser.wait("document.querySelectorAll('.msg.assistant').length === 1", timeout=10)
        for n in (1, 0):
            browser.click("#chats li .del")
            assert browser.wait(f"document.querySelectorAll('#chats li').length === {n}", timeout=10)
        assert browser.js(STORED)["chats"] == [] and browser.js("!!document.getElementById('empty')")
    finally:
        if browser:
            browser.close()


def test_web_markdown_escapes_html(web_server):
    """A stored chat whose answer holds HTML, script and a javascript: link: after a reload the
    page shows them as text and runs nothing; the Markdown around them is rendered."""
    chromium = chromium_or_skip()
    evil = ("Run this:\n\n```js\nalert(1)\n```\n\n- one <b>bold?</b>\n- two\n\n"
            "<img src=x onerror=\"window.__xss = 1\"> <script>window.__xss = 2</script>\n\n"
            "[click](javascript:window.__xss=3) <iframe src=\"/\"></iframe>\n\n"
            "| a | b |\n|---|---|\n| 1 | 2 |\n")
    store = {"chats": [{"id": "x1", "title": "<i>t</i>", "updated": 1, "messages": [
        {"role": "user", "content": "<img src=x onerror=\"window.__xss = 4\">"},
        {"role": "assistant", "content": evil, "meta": "stored"}]}], "current": "x1"}
    browser = None
    try:
        browser = Browser(chromium)
        browser.call("Page.enable")
        load_page(browser, web_server.base_url + "/")
        browser.js(f"localStorage.setItem('llama3c_chats', {json.dumps(json.dumps(store))})")
        browser.call("Page.reload")
        assert browser.wait("document.readyState === 'complete' && "
                            "document.querySelectorAll('.msg.assistant .body.md').length === 1", timeout=20)
        time.sleep(0.3)  # an onerror would fire by now
        got = browser.js("""(() => { const b = document.querySelector('.msg.assistant .body');
            const u = document.querySelector('.msg.user .body');
            return {xss: window.__xss === undefined ? null : window.__xss,
                    tags: document.querySelectorAll('.msg img, .msg script, .msg iframe, .msg b, #chats i').length,
                    links: Array.from(b.querySelectorAll('a')).map(a => a.getAttribute('href')),
                    code: (b.querySelector('pre code') || {}).textContent, li: b.querySelectorAll('ul li').length,
                    td: b.querySelectorAll('table td').length, text: b.textContent, user: u.textContent,
                    title: document.querySelector('#chats .title').textContent}; })()""")
        assert got["xss"] is None and got["tags"] == 0, got
        assert got["links"] == [], got  # markdown-it refuses javascript: links
        assert got["code"] == "alert(1)\n" and got["li"] == 2 and got["td"] == 2, got
        assert '<img src=x onerror="window.__xss = 1">' in got["text"] and "<script>" in got["text"]
        assert "<b>bold?</b>" in got["text"] and got["user"] == store["chats"][0]["messages"][0]["content"]
        assert got["title"] == "<i>t</i>"
        screenshot(browser, "web_chat_escaped.png")
    finally:
        if browser:
            browser.close()
