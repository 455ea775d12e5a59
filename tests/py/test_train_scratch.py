"""Pre-training from scratch: the model config (src/train/train_io.c, l3c_train_config_from_json) and
the trained model saved as a llama GGUF with another model's tokenizer (l3c_train_model_save_gguf).

build/tests/train_dump --config C.json --tok-from SmolLM2 builds a random model of the config's
shape with SmolLM2's vocabulary (49152), runs one forward (logits.f32) and saves the GGUF. References:
  - the trainer's own logits vs `llama3c eval --kv f32` on the saved file: max|diff|/max|ref| <= 1e-4
    (the bound of test_train_grad.py's trainer-vs-engine test);
  - llama-cpp-python (F32 KV cache) on the saved file vs ours: <= 1e-5, as test_hf_load.py's F32
    convert check (both compute in float32 from the same F32 weights);
  - gguf-py reads the file: every tokenizer.* key equals the source's, the llama.* keys the config;
  - `llama3c tokenize` with the saved file equals with the source model, special tokens included;
  - transformers' LlamaConfig.to_json_file (a real config.json) is accepted as a config.
Bad configs are refused with the file and the key named; a failed save leaves nothing behind.
"""
import json
import os
import subprocess

import numpy as np
import pytest

from conftest import BIN, REPO, eval_logits, llama_cpp_or_skip, run_cli
from torch_ref import torch_python  # noqa: F401  (fixture)

DUMP = os.path.join(os.path.dirname(BIN), "tests", "train_dump")
TINY = os.path.join(REPO, "examples", "train", "tiny.json")
STORIES15M = os.path.join(REPO, "examples", "train", "stories15m.json")
T = 12
TEXTS = ["In the beginning God created the heaven and the earth.",
         "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>",
         "  numbers 12345, ünïcödé\ttabs\n\nand <|endoftext|> text"]


@pytest.fixture(scope="session")
def train_dump():
    if not os.access(DUMP, os.X_OK):
        pytest.skip(f"{DUMP} is not built (run `make`)")
    return DUMP


def rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def dump(d, *args, ids=None, check=True):
    """train_dump on a batch of 2 x T ids; returns (CompletedProcess, ids)."""
    if ids is None:
        ids = np.random.default_rng(3).integers(0, 49152, (2, T)).astype("<i4")
    ids.tofile(os.path.join(d, "ids.i32"))
    cmd = [DUMP, *map(str, args), "--ids", os.path.join(d, "ids.i32"), "--batch", ids.shape[0], "--seq",
           ids.shape[1], "--out", d]
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300)
    if check and p.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))}\nexit {p.returncode}\n{p.stderr[-3000:]}", pytrace=False)
    return p, ids


def read_config(d):
    with open(os.path.join(d, "config.txt")) as f:
        return {k: float(v) for k, v in (line.split() for line in f)}


def write_json(path, obj):
    with open(path, "w") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj))
    return path


UNTIED = {"hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 6, "intermediate_size": 96,
          "tie_word_embeddings": False, "rope_theta": 500000.0, "rms_norm_eps": 1e-6,
          "max_position_embeddings": 256}
CONFIGS = [("tiny.json", TINY), ("hf-untied-mha", UNTIED)]


@pytest.fixture(scope="module")
def saved(tmp_path_factory, train_dump, smollm2_path):
    """{case: (dir, saved gguf, ids [2, T], trainer logits [2, T, V])}, built once."""
    out = {}
    for name, cfg in CONFIGS:
        d = str(tmp_path_factory.mktemp(name.replace(".", "_")))
        path = cfg if isinstance(cfg, str) else write_json(os.path.join(d, "config.json"), cfg)
        gguf_path = os.path.join(d, "model.gguf")
        _, ids = dump(d, "--config", path, "--tok-from", smollm2_path, "--save-gguf", gguf_path, "--name",
                      f"scratch-{name}", "--seed", 5)
        logits = np.fromfile(os.path.join(d, "logits.f32"), dtype="<f4").reshape(2, T, -1)
        out[name] = (d, gguf_path, ids, logits)
    return out


@pytest.mark.parametrize("case", [c[0] for c in CONFIGS])
def test_saved_model_logits_equal_trainer(case, saved, llama3c, tmp_path):
    d, path, ids, logits = saved[case]
    assert not [f for f in os.listdir(os.path.dirname(path)) if f.startswith("." + os.path.basename(path) + ".")]
    for b in range(2):
        ours = eval_logits(path, ids[b].tolist(), tmp_path, extra=("--kv", "f32"))
        r = rel(logits[b].astype(np.float64), ours.astype(np.float64))
        print(f"{case} sequence {b}: trainer vs llama3c eval on the saved GGUF: {r:.2e}")
        assert r <= 1e-4, f"{case} sequence {b}: trainer vs llama3c eval: {r:.2e}"


@pytest.mark.parametrize("case", [c[0] for c in CONFIGS])
def test_saved_model_loads_in_llama_cpp(case, saved, llama3c, tmp_path):
    llama_cpp = llama_cpp_or_skip()
    d, path, ids, logits = saved[case]
    seq = ids[0].tolist()
    lm = llama_cpp.Llama(model_path=path, logits_all=True, n_ctx=64, n_batch=64, n_threads=1, verbose=False,
                         type_k=0, type_v=0)  # F32 KV cache, as ours
    try:
        lm.eval(seq)
        peer = np.array(lm.scores[:len(seq)], dtype=np.float64)
        peer_ids = lm.tokenize(TEXTS[0].encode(), add_bos=False, special=True)
    finally:
        lm.close()
    ours = eval_logits(path, seq, tmp_path, extra=("--kv", "f32")).astype(np.float64)
    r, r_train = rel(ours, peer), rel(logits[0].astype(np.float64), peer)
    print(f"{case}: llama3c vs llama.cpp {r:.2e}, trainer vs llama.cpp {r_train:.2e}")
    assert r <= 1e-5, f"{case}: llama3c vs llama.cpp on the saved GGUF: {r:.2e}"
    assert r_train <= 1e-4, f"{case}: trainer vs llama.cpp: {r_train:.2e}"
    mine = [int(x) for x in run_cli("tokenize", "-m", path, "--ids", "-p", TEXTS[0]).stdout.split()]
    assert mine == list(peer_ids), "llama.cpp tokenizes differently with the saved vocabulary"


def test_saved_metadata(saved, smollm2_path):
    import gguf

    src = gguf.GGUFReader(smollm2_path)
    for name, cfg in CONFIGS:
        d, path, _, _ = saved[name]
        r = gguf.GGUFReader(path)
        c = read_config(d)
        want = {"general.architecture": "llama", "general.name": f"scratch-{name}",
                "llama.context_length": c["n_ctx"], "llama.embedding_length": c["n_embd"],
                "llama.block_count": c["n_layer"], "llama.feed_forward_length": c["n_ff"],
                "llama.attention.head_count": c["n_head"], "llama.attention.head_count_kv": c["n_head_kv"],
                "llama.rope.dimension_count": c["n_embd"] / c["n_head"], "llama.vocab_size": 49152,
                "llama.rope.freq_base": c["rope_theta"], "llama.attention.layer_norm_rms_epsilon": c["norm_eps"]}
        for k, v in want.items():
            got = r.fields[k].contents()
            assert got == v or (isinstance(v, float) and abs(got - v) <= 1e-6 * abs(v)), f"{name}: {k} {got} != {v}"
        tok_keys = [k for k in src.fields if k.startswith("tokenizer.")]
        assert "tokenizer.chat_template" in tok_keys and "tokenizer.ggml.merges" in tok_keys
        assert sorted(k for k in r.fields if k.startswith("tokenizer.")) == sorted(tok_keys)
        for k in tok_keys:
            assert r.fields[k].contents() == src.fields[k].contents(), f"{name}: {k} differs from the source"
        # every tensor F32, shapes as the trainer's index
        with open(os.path.join(d, "index.txt")) as f:
            index = {n: (int(rows), int(cols)) for n, rows, cols, _ in (line.split() for line in f)}
        assert {t.name for t in r.tensors} == set(index)
        params = np.fromfile(os.path.join(d, "params.f32"), dtype="<f4")
        with open(os.path.join(d, "index.txt")) as f:
            offs = {n: int(o) for n, _, _, o in (line.split() for line in f)}
        for t in r.tensors:
            rows, cols = index[t.name]
            assert t.tensor_type == gguf.GGMLQuantizationType.F32
            assert [int(x) for x in t.shape] == ([cols] if rows == 1 else [cols, rows]), t.name
            assert np.array_equal(np.asarray(t.data).reshape(-1), params[offs[t.name]:offs[t.name] + rows * cols])
        assert ("output.weight" in index) == (not c["tied"])


def test_tokenize_equals_source(saved, smollm2_path, llama3c):
    _, path, _, _ = saved["tiny.json"]
    for text in TEXTS:
        for extra in ((), ("--special",), ("--bos", "--special")):
            a = run_cli("tokenize", "-m", path, "--ids", "-p", text, *extra).stdout
            b = run_cli("tokenize", "-m", smollm2_path, "--ids", "-p", text, *extra).stdout
            assert a == b and a.split(), f"{text!r}: {a} != {b}"


def test_example_configs(tmp_path, train_dump):
    """The shipped configs: tiny.json has stories260K's shapes (../shared/data/README.md), stories15m.json
    llama2.c's stories15M."""
    for path, want in [(TINY, dict(n_embd=64, n_layer=5, n_head=8, n_head_kv=4, n_ff=172, n_rot=8, n_ctx=512,
                                   tied=1)),
                       (STORIES15M, dict(n_embd=288, n_layer=6, n_head=6, n_head_kv=6, n_ff=768, n_rot=48,
                                         n_ctx=256, tied=1))]:
        dump(str(tmp_path), "--config", path, "--vocab", 512, ids=np.zeros((1, 2), "<i4"))
        c = read_config(str(tmp_path))
        assert {k: c[k] for k in want} == want, path
        assert c["n_vocab"] == 512 and c["rope_theta"] == 10000 and abs(c["norm_eps"] - 1e-5) < 1e-12


def test_transformers_config_json_accepted(tmp_path, train_dump, torch_python):
    """A config.json as transformers writes it (every key of LlamaConfig) is a valid config."""
    path = str(tmp_path / "config.json")
    code = ("import sys, transformers; transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=80,"
            " num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,"
            " rope_theta=50000.0, rms_norm_eps=1e-6, tie_word_embeddings=True).to_json_file(sys.argv[1])")
    p = subprocess.run([torch_python, "-c", code, path], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    dump(str(tmp_path), "--config", path, "--vocab", 64, ids=np.zeros((1, 2), "<i4"))
    c = read_config(str(tmp_path))
    assert (c["n_embd"], c["n_layer"], c["n_head"], c["n_head_kv"], c["n_ff"], c["n_ctx"], c["tied"]) == \
        (32, 2, 4, 2, 80, 128, 1)
    assert c["rope_theta"] == 50000 and abs(c["norm_eps"] - 1e-6) < 1e-12
    # the same file against a tokenizer of another size: vocab_size is named
    p, _ = dump(str(tmp_path), "--config", path, "--vocab", 65, ids=np.zeros((1, 2), "<i4"), check=False)
    assert p.returncode == 1 and "vocab_size" in p.stderr and "65" in p.stderr, p.stderr


BAD = [
    ("unknown-key", {"n_embed": 64, "n_layer": 2, "n_head": 4, "n_ff": 64}, "unknown key 'n_embed'"),
    ("not-divisible", {"n_embd": 60, "n_layer": 2, "n_head": 8, "n_ff": 64}, "n_embd 60 is not divisible by n_head 8"),
    ("kv-not-divisible", {"n_embd": 64, "n_layer": 2, "n_head": 8, "n_head_kv": 3, "n_ff": 64},
     "n_head 8 is not divisible by n_head_kv 3"),
    ("odd-head-dim", {"n_embd": 36, "n_layer": 2, "n_head": 4, "n_ff": 64}, "must be even"),
    ("missing-key", {"n_embd": 64, "n_layer": 2, "n_head": 4}, "missing key 'n_ff'"),
    ("string-value", {"n_embd": 64, "n_layer": "2", "n_head": 4, "n_ff": 64}, "'n_layer' must be an integer"),
    ("float-size", {"n_embd": 64.0, "n_layer": 2, "n_head": 4, "n_ff": 64}, "'n_embd' must be an integer"),
    ("negative", {"n_embd": 64, "n_layer": -1, "n_head": 4, "n_ff": 64}, "'n_layer' is -1, outside"),
    ("bad-eps", {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_ff": 64, "norm_eps": 0}, "'norm_eps' is 0, outside"),
    ("bad-tied", {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_ff": 64, "tied": 1}, "'tied' must be true or false"),
    ("twice", {"n_embd": 64, "hidden_size": 64, "n_layer": 2, "n_head": 4, "n_ff": 64}, "repeats"),
    ("hf-gelu", {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
                 "hidden_act": "gelu"}, "'hidden_act' must be \"silu\""),
    ("hf-rope-scaling", {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                         "intermediate_size": 64, "rope_scaling": {"type": "linear", "factor": 2.0}},
     "'rope_scaling' must be null"),
    ("bad-json", '{"n_embd": 64,\n "n_layer": 2,,}', ":2:"),
    ("not-object", "[1, 2]", "must be a JSON object"),
]


@pytest.mark.parametrize("name,cfg,msg", BAD, ids=[b[0] for b in BAD])
def test_bad_config_errors(name, cfg, msg, tmp_path, train_dump):
    path = write_json(str(tmp_path / f"{name}.json"), cfg)
    p, _ = dump(str(tmp_path), "--config", path, "--vocab", 64, ids=np.zeros((1, 2), "<i4"), check=False)
    assert p.returncode == 1 and msg in p.stderr and f"{name}.json" in p.stderr, p.stderr


def test_missing_config_file(tmp_path, train_dump):
    p, _ = dump(str(tmp_path), "--config", str(tmp_path / "nope.json"), "--vocab", 64, ids=np.zeros((1, 2), "<i4"),
                check=False)
    assert p.returncode == 1 and "nope.json" in p.stderr and "cannot open" in p.stderr, p.stderr


def test_failed_save_leaves_nothing(tmp_path, train_dump, smollm2_path):
    d = str(tmp_path)
    ids = np.zeros((1, 2), "<i4")
    # vocabulary of the model (64) != tokenizer's (49152): an existing file stays as it was
    target = os.path.join(d, "keep.gguf")
    with open(target, "wb") as f:
        f.write(b"old contents")
    p, _ = dump(d, "--random", "64,32,1,4,2,48", "--tok-from", smollm2_path, "--save-gguf", target, "--n-ctx", 64,
                ids=ids,
                check=False)
    assert p.returncode == 1 and "49152 tokens" in p.stderr and "vocabulary is 64" in p.stderr, p.stderr
    with open(target, "rb") as f:
        assert f.read() == b"old contents"
    # the rename fails (the target is a folder): the temporary file is removed
    target = os.path.join(d, "folder.gguf")
    os.mkdir(target)
    p, _ = dump(d, "--random", "64,32,1,4,2,48", "--save-gguf", target, "--n-ctx", 64, ids=ids, check=False)
    assert p.returncode == 1 and "is a folder" in p.stderr, p.stderr
    assert not [f for f in os.listdir(d) if f.startswith(".folder.gguf.")] and os.path.isdir(target)
    # a folder that does not exist
    p, _ = dump(d, "--random", "64,32,1,4,2,48", "--save-gguf", os.path.join(d, "no", "x.gguf"), "--n-ctx", 64,
                ids=ids, check=False)
    assert p.returncode == 1 and "cannot create" in p.stderr, p.stderr
    # no context length: --random has none
    p, _ = dump(d, "--random", "64,32,1,4,2,48", "--save-gguf", os.path.join(d, "x.gguf"), ids=ids, check=False)
    assert p.returncode == 1 and "context length" in p.stderr, p.stderr
