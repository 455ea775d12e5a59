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
