"""`make install` as a user of the library meets it (docs/INSTALL.md).

Installs into a temporary prefix, then builds examples/simple.c against the installed copy with
`pkg-config --cflags --libs llama3c` (shared library) and `pkg-config --static` (static archive),
runs both on the default model and compares their text with `llama3c run --temp 0` (greedy: the
same engine, so byte-equal). examples/train_lora.c (the public training API) is built the same
way and fine-tunes a LoRA on a generated tiny model: its eval loss falls, and its adapter is
byte-equal to the one `llama3c train` writes with the same options. Also checks what the shared library exports (the public l3c_*
symbols only), its soname, and that `make uninstall` removes every installed file.

Marked slow: it links the library of the build folder under test, and the sanitizer build's
objects need the sanitizer runtime in every program that links them.
"""
import os
import shutil
import subprocess

import pytest

from conftest import BIN, REPO, run_cli, write_sums_corpus

BUILD = os.environ.get("L3C_BUILD", "build")
PROMPT = "The capital of France is"
N = 24


def sh(cmd, env=None, timeout=300):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    assert p.returncode == 0, f"{' '.join(cmd)}\nexit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
    return p.stdout


@pytest.fixture(scope="module")
def prefix(tmp_path_factory, llama3c):
    if shutil.which("pkg-config") is None:
        pytest.fail("pkg-config is not installed (scripts/setup.sh installs it)")
    pre = str(tmp_path_factory.mktemp("prefix"))
    sh(["make", "-C", REPO, "--no-print-directory", f"BUILD={BUILD}", f"PREFIX={pre}", "install"])
    return pre


def pc_env(pre):
    env = dict(os.environ)
    env["PKG_CONFIG_PATH"] = os.path.join(pre, "lib", "pkgconfig")
    return env


def installed_files(pre):
    out = set()
    for root, _, files in os.walk(pre):
        for f in files:
            out.add(os.path.relpath(os.path.join(root, f), pre))
    return out


@pytest.mark.slow
def test_layout_and_exports(prefix):
    files = installed_files(prefix)
    for f in ["bin/llama3c", "include/llama3c.h", "lib/libllama3c.a", "lib/libllama3c.so",
              "lib/pkgconfig/llama3c.pc"]:
        assert f in files, f"{f} not installed; got {sorted(files)}"
    so = os.path.join(prefix, "lib", "libllama3c.so")
    dyn = sh(["readelf", "-d", so])
    assert "Library soname: [libllama3c.so.0]" in dyn, dyn
    syms = sh(["nm", "-D", "--defined-only", so]).split("\n")
    names = [line.split()[-1] for line in syms if line.strip()]
    assert len(names) > 40, names
    bad = [n for n in names if not n.startswith("l3c_")]
    assert not bad, f"non-public symbols exported: {bad[:20]}"
    # every function the public header declares is exported
    header = open(os.path.join(REPO, "include", "llama3c.h")).read()
    import re
    declared = set(re.findall(r"L3C_API[^;(]*?\b(l3c_\w+)\s*\(", header))
    missing = declared - set(names)
    assert not missing, f"declared in llama3c.h but not exported: {sorted(missing)}"
    # the installed program runs
    out = sh([os.path.join(prefix, "bin", "llama3c"), "--version"])
    assert out.strip(), out


@pytest.mark.slow
@pytest.mark.parametrize("static", [False, True], ids=["shared", "static"])
def test_example_builds_with_pkg_config(prefix, tmp_path, smollm2_path, static):
    env = pc_env(prefix)
    flags = sh(["pkg-config", "--cflags", "--libs"] + (["--static"] if static else []) + ["llama3c"],
               env=env).split()
    assert f"-I{prefix}/include" in flags, flags
    exe = str(tmp_path / "simple")
    cmd = ["cc", "-std=c11", "-Wall", "-Werror", os.path.join(REPO, "examples", "simple.c"), "-o", exe]
    if static:
        # the archive, not the .so beside it, and the private dependencies pkg-config lists
        cmd += [f for f in flags if f != "-lllama3c"] + [os.path.join(prefix, "lib", "libllama3c.a")] + \
               [f for f in flags if f.startswith("-l") and f != "-lllama3c"]
    else:
        cmd += flags
    sh(cmd)
    needed = sh(["readelf", "-d", exe])
    assert ("libllama3c.so.0" in needed) == (not static), needed
    run_env = dict(os.environ)
    run_env["LD_LIBRARY_PATH"] = os.path.join(prefix, "lib")
    got = sh([exe, smollm2_path, PROMPT, str(N)], env=run_env)
    want = run_cli("run", "-m", smollm2_path, "-p", PROMPT, "-n", N, "--temp", "0").stdout
    assert got.strip() and got.strip() in want, f"example: {got!r}\nllama3c run: {want!r}"


def build_example(prefix, tmp_path, name):
    flags = sh(["pkg-config", "--cflags", "--libs", "llama3c"], env=pc_env(prefix)).split()
    exe = str(tmp_path / name)
    sh(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", os.path.join(REPO, "examples", f"{name}.c"), "-o", exe]
       + flags)
    run_env = dict(os.environ)
    run_env["LD_LIBRARY_PATH"] = os.path.join(prefix, "lib")
    return exe, run_env


@pytest.mark.slow
def test_train_lora_example_equals_llama3c_train(prefix, tmp_path, tiny_model):
    import gen_models

    tiny = tiny_model("install_train", gen_models.ModelSpec(), "F32")
    data = write_sums_corpus(tmp_path)
    exe, env = build_example(prefix, tmp_path, "train_lora")
    adapter = str(tmp_path / "example.gguf")
    out = sh([exe, tiny, data, adapter, "12"], env=env)
    lines = out.strip().splitlines()
    assert len(lines) == 13 and lines[0].startswith("step 1/12 loss ") and "trained tok/s" in lines[0], out
    before, after = (float(x) for x in lines[-1].split("eval loss ")[1].split(" -> "))
    assert after < before, out
    # the same options through the program: the same bytes (both run the same trainer)
    run_cli("train", "-m", tiny, "--data", data, "-o", tmp_path / "cli", "--steps", 12, "--seq", 32, "--batch", 4,
            "--lr", 3e-3, "--eval-frac", 0.1, "--rank", 8, "-q")
    assert open(adapter, "rb").read() == open(tmp_path / "cli" / "adapter.gguf", "rb").read()
    p = subprocess.run([BIN, "run", "-m", tiny, "--lora", adapter, "-p", "the cat", "-n", "2", "--temp", "0"],
                       capture_output=True, timeout=120)  # a random model's reply: arbitrary bytes
    assert p.returncode == 0 and b"LoRA adapter" in p.stderr, p.stderr[-2000:]


@pytest.mark.slow
def test_uninstall_removes_everything(tmp_path, llama3c):
    pre = str(tmp_path / "p")
    sh(["make", "-C", REPO, "--no-print-directory", f"BUILD={BUILD}", f"PREFIX={pre}", "install"])
    assert installed_files(pre)
    sh(["make", "-C", REPO, "--no-print-directory", f"BUILD={BUILD}", f"PREFIX={pre}", "uninstall"])
    links = [os.path.join(r, f) for r, _, fs in os.walk(pre) for f in fs]
    assert not links, f"left after uninstall: {links}"
