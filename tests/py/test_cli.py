"""CLI behaviour of `llama3c run`, `chat` and `info`.

- --help exits 0 for each command; usage errors exit 2 with a message; a bad model path exits 1
  and names the path;
- `info` on SmolLM2 against gguf-py's GGUFReader of the same file (independent parser): the
  hyperparameters, tensor count, the parameter count (sum of the tensors' element counts), bytes
  per tensor type, and `--tensors` / `--json` listings;
- `run`: greedy is deterministic, --ids and the same text tokenized give the same continuation,
  a fixed --seed reproduces a sampled continuation, -n bounds the token count with --ignore-eos,
  the stderr timings line is present, and streamed text is valid UTF-8 byte for byte the
  detokenized ids;
- `run --lookup N` (prompt-lookup speculative decoding): greedy and seeded-sampled ids identical
  to decoding without it, on SmolLM2 and stories260K, with drafts decoded and some accepted on a
  repetitive prompt (the stderr line counts them);
- `chat`: stdin lines are turns (multi-turn) and the second turn reuses the KV cache (fewer prompt
  tokens evaluated than the whole conversation).
"""
import codecs
import json
import re
import subprocess

import numpy as np
import pytest

from conftest import BIN, THREADS, run_cli

gguf = pytest.importorskip("gguf", reason="gguf-py is not installed")

COMMANDS = ["run", "chat", "info"]


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_exits_0(llama3c, cmd):
    for flag in ("--help", "-h"):
        p = run_cli(cmd, flag, check=False)
        assert p.returncode == 0, p.stderr
        assert "usage: llama3c " + cmd in p.stdout


@pytest.mark.parametrize("cmd", COMMANDS)
def test_bad_model_path_exits_1_naming_it(llama3c, cmd, tmp_path):
    bad = str(tmp_path / "no_such_model.gguf")
    args = [cmd, "-m", bad] + (["-p", "hi"] if cmd != "info" else [])
    p = run_cli(*args, check=False)
    assert p.returncode == 1, p.stderr
    assert bad in p.stderr


@pytest.mark.parametrize("args", [
    ["run", "-p", "hi"],                                   # no model
    ["run", "-m", "x.gguf"],                               # no prompt
    ["run", "-m", "x.gguf", "-p", "a", "--ids", "1"],      # two prompts
    ["run", "-m", "x.gguf", "-p", "a", "--temp", "abc"],
    ["run", "-m", "x.gguf", "-p", "a", "-n"],              # missing value
    ["run", "-m", "x.gguf", "--ids", "1 two"],
    ["run", "-m", "x.gguf", "-p", "a", "--bogus"],
    ["run", "-m", "x.gguf", "-p", "a", "--lookup", "0"],
    ["run", "-m", "x.gguf", "-p", "a", "--lookup", "17"],
    ["run", "-m", "x.gguf", "-p", "a", "--lookup", "3x"],
    ["chat", "-m", "x.gguf", "--template", "nope"],
    ["chat", "-m", "x.gguf", "--top-p", "1.5"],
    ["info"],
    ["info", "-m", "x.gguf", "--bogus"],
])
def test_usage_errors_exit_2(llama3c, args):
    p = run_cli(*args, check=False)
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("llama3c " + args[0] + ": ")


@pytest.fixture(scope="module")
def reader(smollm2_path):
    return gguf.GGUFReader(smollm2_path)


def field(r, key):
    return r.fields[key].contents()


def info_values(text):
    """'key value' lines of `llama3c info` -> dict of the first token after the key."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            out.setdefault(parts[0], parts[1])
    return out


def test_info_matches_gguf_reader(llama3c, smollm2_path, reader):
    p = run_cli("info", "-m", smollm2_path)
    v = info_values(p.stdout)
    arch = field(reader, "general.architecture")
    assert v["architecture"] == arch
    expect = {
        "n_layer": field(reader, f"{arch}.block_count"),
        "n_embd": field(reader, f"{arch}.embedding_length"),
        "n_head": field(reader, f"{arch}.attention.head_count"),
        "n_head_kv": field(reader, f"{arch}.attention.head_count_kv"),
        "n_ff": field(reader, f"{arch}.feed_forward_length"),
        "n_ctx_train": field(reader, f"{arch}.context_length"),
        "n_vocab": len(reader.fields["tokenizer.ggml.tokens"].data),
    }
    for k, want in expect.items():
        assert int(v[k]) == int(want), k
    assert int(v["head_dim"]) == expect["n_embd"] // expect["n_head"]
    assert v["chat_template"] == "chatml"
    assert int(v["tensors"]) == len(reader.tensors)
    n_params = sum(int(np.prod(t.shape)) for t in reader.tensors)
    assert int(v["parameters"]) == n_params
    assert int(v["weight_bytes"]) == sum(int(t.n_bytes) for t in reader.tensors)
    # KV cache, F16: 2 (K and V) x n_layer x n_head_kv x head_dim x 2 bytes per position
    kv = 2 * expect["n_layer"] * expect["n_head_kv"] * (expect["n_embd"] // expect["n_head"]) * 2
    assert int(v["kv_bytes_per_pos"]) == kv
    assert int(v["kv_bytes_full_ctx"]) == kv * expect["n_ctx_train"]


def test_info_type_table_and_tensor_list(llama3c, smollm2_path, reader):
    by_type = {}
    for t in reader.tensors:
        c, b = by_type.get(t.tensor_type.name, (0, 0))
        by_type[t.tensor_type.name] = (c + 1, b + int(t.n_bytes))
    out = run_cli("info", "-m", smollm2_path, "--tensors").stdout
    for name, (count, nbytes) in by_type.items():
        assert re.search(rf"^\s+{name}\s+{count}\s+\d+\s+{nbytes}\s", out, re.M), (name, count, nbytes)
    for t in reader.tensors:
        shape = " x ".join(str(int(d)) for d in t.shape)
        assert re.search(rf"^\s+{re.escape(t.name)}\s+{t.tensor_type.name}\s+{shape}\s+{int(t.n_bytes)}$", out,
                         re.M), t.name


def test_info_json(llama3c, smollm2_path, reader):
    j = json.loads(run_cli("info", "-m", smollm2_path, "--json", "--tensors").stdout)
    assert j["n_layer"] == int(field(reader, "llama.block_count"))
    assert j["n_params"] == sum(int(np.prod(t.shape)) for t in reader.tensors)
    assert j["n_tensors"] == len(j["tensors"]) == len(reader.tensors)
    names = {t["name"]: t for t in j["tensors"]}
    for t in reader.tensors:
        assert names[t.name]["shape"] == [int(d) for d in t.shape]
        assert names[t.name]["type"] == t.tensor_type.name
    assert sum(r["count"] for r in j["tensor_types"]) == len(reader.tensors)


def run_ids(model, *args):
    p = run_cli("run", "-m", model, "-t", THREADS, "--print-ids", *args)
    return [int(x) for x in p.stdout.split()], p


PROMPT = "The capital of France is"


def test_run_greedy_deterministic_and_ids_equal_text(llama3c, smollm2_path):
    a, p = run_ids(smollm2_path, "-p", PROMPT, "--no-bos", "--temp", "0", "-n", "12", "--ignore-eos")
    assert len(a) == 12
    assert re.search(r"prompt: \d+ tokens, [\d.]+ tok/s \| generation: 12 tokens, [\d.]+ tok/s", p.stderr)
    b, _ = run_ids(smollm2_path, "-p", PROMPT, "--no-bos", "--temp", "0", "-n", "12", "--ignore-eos")
    assert a == b
    toks = run_cli("tokenize", "-m", smollm2_path, "--ids", "-p", PROMPT).stdout.split()
    c, _ = run_ids(smollm2_path, "--ids", " ".join(toks), "--temp", "0", "-n", "12", "--ignore-eos")
    assert c == a


def test_run_seeded_sampling_reproducible(llama3c, smollm2_path):
    args = ("-p", "Once upon a time", "--temp", "1.0", "--top-k", "0", "--top-p", "1", "--min-p", "0",
            "-n", "16", "--ignore-eos")
    a, _ = run_ids(smollm2_path, *args, "--seed", "7")
    b, _ = run_ids(smollm2_path, *args, "--seed", "7")
    c, _ = run_ids(smollm2_path, *args, "--seed", "8")
    assert a == b and len(a) == 16
    assert a != c  # 16 draws at temperature 1 over 49152 tokens: equal paths would be a broken seed


def test_run_text_stream_equals_detokenized_ids(llama3c, smollm2_path, tmp_path):
    args = ("-p", "Here is a list of greetings in many languages: Hello, Bonjour, 你好, こんにちは,",
            "--temp", "0", "-n", "24", "--ignore-eos", "-t", str(THREADS))
    ids = [int(x) for x in run_cli("run", "-m", smollm2_path, "--print-ids", *args).stdout.split()]
    p = subprocess.run([BIN, "run", "-m", smollm2_path, *args], capture_output=True, timeout=300)
    assert p.returncode == 0
    text = p.stdout
    want = subprocess.run([BIN, "detokenize", "-m", smollm2_path, *map(str, ids)], capture_output=True, timeout=60)
    assert want.returncode == 0, want.stderr
    assert text == want.stdout
    # valid UTF-8, except that the last character may be cut by the -n limit
    codecs.getincrementaldecoder("utf-8")().decode(text, final=False)


def test_chat_stdin_turns_reuse_cache(llama3c, smollm2_path):
    p = run_cli("chat", "-m", smollm2_path, "-n", "8", "--temp", "0", "-t", THREADS, "--ignore-eos",
                input="My name is Ana.\nWhat is my name?\n")
    turns = re.findall(r"prompt: (\d+) tokens, [\d.]+ tok/s \| generation: (\d+) tokens", p.stderr)
    assert len(turns) == 2, p.stderr
    assert len(p.stdout.strip().splitlines()) >= 2
    first, second = int(turns[0][0]), int(turns[1][0])
    # the second prompt is the whole conversation (> first); only its new part is evaluated
    whole = run_cli("chat", "-m", smollm2_path, "--print-prompt-ids", "--message", "user", "My name is Ana.",
                    "--message", "assistant", "x", "-p", "What is my name?").stdout.split()
    assert second < len(whole) - 2, (first, second, len(whole))


def test_chat_one_turn(llama3c, smollm2_path):
    p = run_cli("chat", "-m", smollm2_path, "-p", "Say hello.", "-n", "16", "--seed", "1", "-t", THREADS)
    assert p.stdout.strip()


LOOKUP_PROMPT = ("The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog. "
                 "The quick brown fox")


def lookup_counts(stderr):
    m = re.search(r"lookup: (\d+) draft tokens decoded, (\d+) accepted", stderr)
    assert m, stderr
    return int(m.group(1)), int(m.group(2))


@pytest.mark.parametrize("sampling", [("--temp", "0"),
                                      ("--temp", "1.0", "--top-k", "0", "--top-p", "1", "--min-p", "0")])
def test_run_lookup_output_identical(llama3c, smollm2_path, sampling):
    """Same ids with and without --lookup. Greedy continues the repeated sentence (drafts accepted);
    a sampled text at temperature 1 may wander off it for a given seed (no n-gram to draft from),
    so several seeds run and at least one of them must have drafted."""
    seeds = ("11",) if sampling[1] == "0" else ("11", "12", "13", "14", "15")
    total = 0
    for seed in seeds:
        args = ("-p", LOOKUP_PROMPT, *sampling, "--seed", seed, "-n", "40", "--ignore-eos")
        a, _ = run_ids(smollm2_path, *args)
        b, p = run_ids(smollm2_path, *args, "--lookup", "4")
        assert len(a) == 40 and a == b, f"seed {seed}"
        drafted, accepted = lookup_counts(p.stderr)
        assert 0 <= accepted <= drafted
        total += drafted
        if sampling[1] == "0":  # greedy on a repeated sentence: the continuation repeats it
            assert accepted > 0
    assert total > 0


def test_run_lookup_stories(llama3c, stories_gguf):
    model = stories_gguf("f32")
    args = ("-p", "Once upon a time, there was a little girl. Once upon a time, there was",
            "--temp", "0", "-n", "48", "--ignore-eos")
    a, _ = run_ids(model, *args)
    for n in ("1", "8", "16"):
        b, p = run_ids(model, *args, "--lookup", n)
        assert a == b, n
        assert lookup_counts(p.stderr)[0] > 0
