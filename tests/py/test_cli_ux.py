"""The CLI as a new user meets it (issue #24): outputs that never replace their input nor stay
half-written, one strict option parser, chat and embed behaviour, train's Ctrl-C.

Tiny generated models (gen_models.py) everywhere except where a real chat model is needed
(SmolLM2, marked slow). Interactive chat is driven through a pseudo-terminal (Python's pty).
"""
import os
import signal
import subprocess
import time

import pytest

from conftest import BIN, THREADS, run_cli
from gen_models import ModelSpec

SPEC = ModelSpec(n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=128, n_vocab=320, tied=False, seed=11)


@pytest.fixture(scope="module")
def tiny(tiny_model):
    return tiny_model("ux_tiny", SPEC, "F32")


def cli(*args, check=True, timeout=300, input=None):
    """run_cli for random tiny models, whose replies are arbitrary bytes: stdout/stderr decoded with
    replacement characters."""
    cmd = [BIN] + [str(a) for a in args]
    p = subprocess.run(cmd, capture_output=True, timeout=timeout, input=input)
    p.stdout, p.stderr = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    if check and p.returncode != 0:
        pytest.fail(f"{' '.join(cmd)}\nexit {p.returncode}\nstderr:\n{p.stderr[-4000:]}", pytrace=False)
    return p


def leftovers(folder, keep):
    return sorted(set(os.listdir(folder)) - set(keep))


# ---------------------------------------------------------------- row 1: never overwrite the input


def test_convert_refuses_its_own_input_also_through_links(llama3c, tiny, tmp_path):
    src = tmp_path / "m.gguf"
    src.write_bytes(open(tiny, "rb").read())
    before = src.read_bytes()
    os.symlink(src, tmp_path / "sym.gguf")
    os.link(src, tmp_path / "hard.gguf")
    for out in ("m.gguf", "sym.gguf", "hard.gguf", "./m.gguf"):
        p = run_cli("convert", src, "-o", tmp_path / out, "--type", "Q8_0", check=False)
        assert p.returncode == 1, f"convert -o {out}: exit {p.returncode}\n{p.stderr}"
        assert "is the input" in p.stderr, p.stderr
        assert src.read_bytes() == before
    assert leftovers(tmp_path, ["m.gguf", "sym.gguf", "hard.gguf"]) == []
    # an ordinary output still works, and replacing an existing unrelated file is fine
    (tmp_path / "out.gguf").write_bytes(b"old")
    run_cli("convert", src, "-o", tmp_path / "out.gguf", "--type", "Q8_0", "--quiet")
    assert open(tmp_path / "out.gguf", "rb").read(4) == b"GGUF"
    assert leftovers(tmp_path, ["m.gguf", "sym.gguf", "hard.gguf", "out.gguf"]) == []


def test_export_merge_refuses_base_and_adapter_as_output(llama3c, tiny, tmp_path):
    import lora_gen
    shapes, _ = lora_gen.model_shapes(tiny)
    ad = lora_gen.write_gguf_lora(str(tmp_path / "ad.gguf"), lora_gen.random_lora(shapes, 4, ["attn_q"], None, seed=1),
                                  8.0)
    base = tmp_path / "base.gguf"
    base.write_bytes(open(tiny, "rb").read())
    files = {n: (tmp_path / n).read_bytes() for n in ("base.gguf", "ad.gguf")}
    for out in (base, ad):
        p = run_cli("export", "--merge", "-m", base, "--lora", ad, "-o", out, "--quiet", check=False)
        assert p.returncode == 1 and "is the input" in p.stderr, p.stderr
    p = run_cli("export", "--lora-convert", "-m", base, ad, ad, check=False)
    assert p.returncode == 1 and "is the input" in p.stderr, p.stderr
    assert {n: (tmp_path / n).read_bytes() for n in files} == files
    assert leftovers(tmp_path, files) == []


def test_train_refuses_an_input_among_its_outputs(llama3c, tiny, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.gguf").write_bytes(open(tiny, "rb").read())
    (tmp_path / "t.txt").write_text("some text to train on\n" * 20)
    before = (out / "model.gguf").read_bytes()
    p = cli("train", "--from-scratch", "--config", tmp_path / "t.txt", "-m", out / "model.gguf",
            "--data", tmp_path / "t.txt", "-o", out, check=False)
    assert p.returncode == 2 and "is the input" in p.stderr, p.stderr
    assert (out / "model.gguf").read_bytes() == before and os.listdir(out) == ["model.gguf"]


def blocked_stderr_pipe():
    """A pipe whose buffer is already full: the child's first write to stderr blocks."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        while True:
            os.write(w, b"x" * 4096)
    except BlockingIOError:
        pass
    os.set_blocking(w, True)
    return r, w


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_convert_interrupted_leaves_no_partial_file(llama3c, tiny, tmp_path, sig):
    r, w = blocked_stderr_pipe()
    out = tmp_path / "out.gguf"
    p = subprocess.Popen([BIN, "convert", tiny, "-o", out, "--type", "F16"], stdout=subprocess.DEVNULL, stderr=w)
    os.close(w)
    try:
        deadline = time.time() + 30
        while not os.listdir(tmp_path) and time.time() < deadline:
            time.sleep(0.02)
        # blocked in its first progress line, after the first tensor: the temporary file exists
        time.sleep(0.2)
        tmp = os.listdir(tmp_path)
        assert len(tmp) == 1 and tmp[0] != "out.gguf", tmp
        p.send_signal(sig)
        os.set_blocking(r, False)
        deadline = time.time() + 30
        while p.poll() is None and time.time() < deadline:
            try:
                os.read(r, 1 << 16)
            except BlockingIOError:
                time.sleep(0.02)
        assert p.wait(timeout=5) == -sig
    finally:
        if p.poll() is None:
            p.kill()
        os.close(r)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- rows 4-6: one strict option parser

BAD_VALUES = [  # (args after -m MODEL, the option and value the message names)
    (["bench", "-t", "abc"], "-t: 'abc'"),
    (["bench", "-t", "0"], "-t: '0'"),
    (["bench", "-p", "16abc"], "-p: '16abc'"),
    (["eval", "--ctx", "abc", "--ids", "1", "-o", "/dev/null"], "--ctx: 'abc'"),
    (["explain", "-t", "0"], "-t: '0'"),
    (["explain", "--values", "-1"], "--values: '-1'"),
    (["explain", "--kv-lengths", "0,-5"], "--kv-lengths: '0,-5'"),
    (["embed", "-p", "x", "-c", "12x"], "-c: '12x'"),
    (["run", "-p", "x", "--repeat_penalty", "x"], "--repeat_penalty: 'x'"),
    (["run", "-p", "x", "-ngl", "lots"], "-ngl: 'lots'"),
]


@pytest.mark.parametrize("args,named", BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_bad_values_are_usage_errors_naming_option_and_value(llama3c, tiny, args, named):
    p = cli(args[0], "-m", tiny, *args[1:], check=False, timeout=120)
    assert p.returncode == 2, f"exit {p.returncode}\n{p.stderr}"
    assert named in p.stderr, p.stderr


def test_context_aliases_everywhere(llama3c, tiny, tmp_path):
    for flag in ("-c", "--ctx-size", "--ctx"):
        cli("run", "-m", tiny, "-p", "a b", "-n", 2, flag, 32, "--no-timings", "-t", THREADS)
        cli("eval", "-m", tiny, "--ids", "1 2 3", "-o", tmp_path / "l.f32", flag, 32, "-t", THREADS)
        cli("bench", "-m", tiny, "-p", 8, "-n", 4, "-r", 1, flag, 32, "-t", THREADS)
        cli("chat", "-m", tiny, "-p", "hi", "-n", 2, flag, 64, "--no-timings", "-t", THREADS)
        # embed's -c bounds the tokens of an input: 3 tokens do not fit 2
        cli("embed", "-m", tiny, "-p", "a b c d", flag, 64, "-t", THREADS)
        p = cli("embed", "-m", tiny, "-p", "a b c d", flag, 2, "-t", THREADS, check=False)
        assert p.returncode == 1 and "the context holds 2" in p.stderr, p.stderr
        p = cli("serve", "-m", tiny, flag, "abc", check=False)
        assert p.returncode != 0 and f"{flag} expects an integer" in p.stderr, p.stderr


def test_llama_cpp_flags_accepted_with_a_note(llama3c, tiny):
    p = cli("run", "-m", tiny, "-p", "a b", "-n", 2, "-ngl", 0, "--mlock", "--color", "-cnv", "--keep", 4,
                "--repeat_penalty", "1.1", "--repeat_last_n", 16, "--no-timings", "-t", THREADS)
    for flag in ("--mlock", "--color", "-cnv", "--keep"):
        assert f"note: {flag}" in p.stderr, p.stderr
    assert "-ngl" not in p.stderr  # -ngl 0 asks for nothing this build lacks
    p = cli("bench", "-m", tiny, "-p", 8, "-n", 4, "-r", 1, "--n-gpu-layers", 99, "-t", THREADS)
    assert "CPU only" in p.stderr, p.stderr


def test_escape_flag_processes_the_prompt(llama3c, tiny):
    raw = r"a\nb\t\x41\\"
    p = cli("run", "-m", tiny, "-p", raw, "-e", "--echo", "-n", 1, "--temp", 0, "--no-timings", "-t", THREADS)
    assert p.stdout.startswith("a\nb\tA\\"), repr(p.stdout)
    p = cli("run", "-m", tiny, "-p", raw, "--echo", "-n", 1, "--temp", 0, "--no-timings", "-t", THREADS)
    assert p.stdout.startswith(raw), repr(p.stdout)


# ---------------------------------------------------------------- row 14: progress in a log file


def test_convert_and_export_progress_is_plain_lines_when_not_a_terminal(llama3c, tiny, tmp_path):
    import lora_gen
    shapes, _ = lora_gen.model_shapes(tiny)
    ad = lora_gen.write_gguf_lora(str(tmp_path / "ad.gguf"), lora_gen.random_lora(shapes, 4, ["attn_q"], None, seed=1),
                                  8.0)
    for args in (["convert", tiny, "-o", tmp_path / "c.gguf", "--type", "Q8_0"],
                 ["export", "--merge", "-m", tiny, "--lora", ad, "-o", tmp_path / "m.gguf"]):
        err = cli(*args).stderr
        assert "\r" not in err, repr(err[:300])
        lines = [ln for ln in err.splitlines() if "tensors (" in ln]
        assert 5 <= len(lines) <= 12 and lines[-1].split(": ")[1].startswith("21/21 tensors (100%)"), err


# ---------------------------------------------------------------- row 11: embed and blank lines


def test_embed_skips_blank_lines_with_a_note(llama3c, tiny):
    import json
    p = cli("embed", "-m", tiny, "-t", THREADS, input=b"a\nb\n\nc\n\n")
    vecs = json.loads(p.stdout)
    assert len(vecs) == 3, p.stdout[:200]
    assert "skipped 2 blank lines (line 3, 5)" in p.stderr, p.stderr
    # the same vectors as the inputs without the blank lines
    q = cli("embed", "-m", tiny, "-t", THREADS, input=b"a\nb\nc\n")
    assert q.stdout == p.stdout


# ---------------------------------------------------------------- row 12: rag index leaves nothing behind


def notes_dir(tmp_path, n=6):
    d = tmp_path / "notes"
    d.mkdir()
    for i in range(n):
        (d / f"n{i}.md").write_text(f"note {i} about things and stuff\n")
    return d


def test_rag_index_failure_leaves_no_new_db(llama3c, tmp_path):
    notes = notes_dir(tmp_path)
    (tmp_path / "empty.gguf").write_bytes(b"")
    p = cli("rag", "index", "-m", tmp_path / "empty.gguf", "--db", tmp_path / "new.db", notes, check=False)
    assert p.returncode == 1 and "file is empty" in p.stderr, p.stderr
    assert leftovers(tmp_path, ["notes", "empty.gguf"]) == []


def test_rag_index_interrupted_removes_a_new_db_keeps_an_old_one(llama3c, tiny, tmp_path):
    notes = notes_dir(tmp_path)
    db = tmp_path / "new.db"

    def interrupted_run():
        p = subprocess.Popen([BIN, "rag", "index", "-m", tiny, "--db", db, "-t", str(THREADS), notes],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env=dict(os.environ, L3C_RAG_TEST_DELAY_MS="300"))
        deadline = time.time() + 30
        while not db.exists() and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)  # inside a file's transaction
        assert p.poll() is None
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
        assert p.returncode == 130, err
        return err.decode()

    err = interrupted_run()
    assert "nothing is kept" in err and leftovers(tmp_path, ["notes"]) == [], err
    cli("rag", "index", "-m", tiny, "--db", db, "-t", THREADS, notes / "n0.md")
    err = interrupted_run()
    assert "kept" in err and db.exists(), err


# ---------------------------------------------------------------- row 3: chat history keeps room for -n


def test_chat_trims_history_to_leave_room_for_the_reply(llama3c, tiny):
    turns = "".join(f"tell me more about turn {i} please\n" for i in range(5)).encode()
    p = cli("chat", "-m", tiny, "--template", "chatml", "-c", 160, "-n", 48, "--ignore-eos", "--temp", 0,
            "-t", THREADS, input=turns)
    gens = [ln for ln in p.stderr.splitlines() if ln.startswith("prompt:")]
    assert len(gens) == 5 and all("generation: 48 tokens" in g for g in gens), p.stderr
    assert "context full" not in p.stderr
    drops = [ln for ln in p.stderr.splitlines() if "dropped the" in ln]
    assert drops and all("to leave 48 positions of the 160-position context" in d for d in drops), p.stderr


# ---------------------------------------------------------------- row 15: train and Ctrl-C


def test_train_sigint_saves_state_and_adapters_and_resumes(llama3c, tiny, tmp_path):
    import json
    text = tmp_path / "t.txt"
    text.write_text("".join(f"the cat sat on the mat and {i % 9} plus 1 is {i % 9 + 1}.\n" for i in range(200)))
    out = tmp_path / "run"
    args = ["train", "-m", tiny, "--data", text, "-o", out, "--steps", 400, "--batch", 2, "--seq", 16,
            "--seed", 3, "-t", str(THREADS), "--log-every", 1000]
    p = subprocess.Popen([BIN] + [str(a) for a in args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = out / "metrics.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and p.poll() is None and \
            not (log.exists() and log.read_text().count("\n") >= 3):
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    err = err.decode()
    assert p.returncode == 130, err
    steps = [json.loads(ln)["step"] for ln in log.read_text().splitlines()]
    assert "interrupted after step" in err and f"step {steps[-1]};" in err, err
    assert 3 <= steps[-1] < 400
    for f in ("train_state.bin", "adapter.gguf", "adapter/adapter_model.safetensors", "adapter/adapter_config.json"):
        assert (out / f).stat().st_size > 0, f
    assert not [f for f in os.listdir(out) if f.startswith(".")]
    p = cli(*args, "--resume")
    assert f"resuming at step {steps[-1]} of 400" in p.stderr, p.stderr
    assert json.loads(p.stdout.splitlines()[-1])["steps"] == 400


# ---------------------------------------------------------------- rows 2, 13: interactive chat (pty)

LONG_CTX = ModelSpec(n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=128, n_vocab=320, n_ctx=65536, tied=False,
                     seed=5)


class Pty:
    """`llama3c args` on a pseudo-terminal: what it wrote so far, and keys typed to it."""

    def __init__(self, args):
        import pty
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: stdin/stdout/stderr are the terminal
            os.execv(BIN, [BIN] + [str(a) for a in args])
        self.out = b""

    def expect(self, needle, timeout=30):
        """Reads until needle (bytes) appears after what earlier calls consumed; returns the text read."""
        import select
        deadline = time.time() + timeout
        while needle not in self.out:
            left = deadline - time.time()
            assert left > 0, f"no {needle!r} in {self.out[-600:]!r}"
            if select.select([self.fd], [], [], left)[0]:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:
                    chunk = b""
                assert chunk, f"the program ended before {needle!r}: {self.out[-600:]!r}"
                self.out += chunk
        i = self.out.index(needle) + len(needle)
        got, self.out = self.out[:i], self.out[i:]
        return got

    def send(self, keys):
        os.write(self.fd, keys)

    def wait(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            try:
                os.read(self.fd, 4096)
            except OSError:
                time.sleep(0.02)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError("the program did not end")


def test_interactive_chat_ctrl_c_history_slash_commands_multiline(llama3c, tiny_model):
    model = tiny_model("ux_long_ctx", LONG_CTX, "F32")
    t = Pty(["chat", "-m", model, "--template", "chatml", "-c", 65536, "-n", -1, "--ignore-eos", "-t", 1])
    t.expect(b"> ")
    t.send(b"hello\r")
    t.expect(b"hello")
    time.sleep(0.3)  # the reply streams (65536 positions: it would run for minutes)
    t.send(b"\x03")  # Ctrl-C: stops the reply, the conversation goes on
    t.expect(b"(reply stopped)")
    t.expect(b"> ")
    t.send(b"/help\r")  # a slash command, not a message
    assert b"/clear" in t.expect(b"Ctrl-C")
    t.expect(b"> ")
    t.send(b"\x1b[A")  # Up arrow: the history holds "/help", then "hello"
    t.send(b"\x1b[A")
    t.expect(b"hello")
    t.send(b"\x15/clear\r")  # Ctrl-U clears the recalled line
    t.expect(b"(conversation cleared)")
    t.send("half typed é".encode())  # Ctrl-C with text on the line drops the line, sends nothing
    t.expect("é".encode())
    t.send(b"\x03")
    assert b"again to quit" not in t.expect(b"> ")
    t.send(b"first line\\\r")  # a line ending in \ continues
    t.expect(b"... ")
    t.send(b"second line\r")
    time.sleep(0.3)
    t.send(b"\x03")
    t.expect(b"(reply stopped)")
    t.expect(b"> ")
    t.send(b"\x03")  # Ctrl-C on an empty line: a hint; twice: quit
    t.expect(b"Ctrl-C again to quit")
    t.expect(b"> ")
    t.send(b"\x03")
    assert t.wait() == 0
