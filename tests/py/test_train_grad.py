"""Training model (src/train/) against torch autograd and against the inference engine.

build/tests/train_dump (tests/train/train_dump.c) runs the C model and dumps parameters, logits,
loss, gradients and AdamW steps; tests/py/torch_train_ref.py recomputes them with torch in
float64 on the same parameters (an independent llama written with torch.nn.functional on the
GGUF row layout, torch.optim.AdamW, clip_grad_norm_). Torch runs in a separate interpreter
(Debian's python3-torch: /usr/bin/python3, or $L3C_TORCH_PYTHON); the tests skip, with the
reason, when none has torch.

Tolerances (C is fp32 throughout, torch float64); measured on these models in brackets:
  loss                    relative 1e-5
  logits                  max |diff| / max |ref| 1e-5                     [<= 1.3e-6]
  every parameter's grad  max |diff| / max |ref| per tensor 1e-4          [<= 5.2e-6]
  10 AdamW steps' losses  relative 1e-4                                   [1.0e-5]
  final parameters        max |diff| / max |ref| 1e-4                     [1.7e-6]
  training logits vs `llama3c eval --logits-out --kv f32`: 1e-4           [<= 1.2e-6]
Checkpointed (recomputed) activations give bitwise identical gradients.
"""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import BIN, REPO, eval_logits

HERE = os.path.dirname(os.path.abspath(__file__))
DUMP = os.path.join(os.path.dirname(BIN), "tests", "train_dump")
TORCH_REF = os.path.join(HERE, "torch_train_ref.py")

B, T = 2, 16


@pytest.fixture(scope="session")
def torch_python():
    """An interpreter that can import torch and numpy (the pytest venv usually has no torch)."""
    cands = [os.environ.get("L3C_TORCH_PYTHON"), "/usr/bin/python3", sys.executable,
             shutil.which("python3")]
    tried = []
    for c in cands:
        if not c or c in tried or not os.path.isfile(c):
            continue
        tried.append(c)
        try:
            p = subprocess.run([c, "-c", "import torch, numpy"], capture_output=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if p.returncode == 0:
            return c
    pytest.skip(f"no Python with torch found (tried {tried}; install python3-torch or set "
                "L3C_TORCH_PYTHON): the torch autograd comparison is skipped")


@pytest.fixture(scope="session")
def train_dump():
    if not os.access(DUMP, os.X_OK):
        pytest.skip(f"{DUMP} is not built (run `make`)")
    return DUMP


def batch(n_vocab, seed=0):
    """ids [B, T] and next-token targets; sequence 1 is a padded chat example: its first 4
    targets (prompt) and its last 3 positions (padding, id 0) are masked with -1."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, n_vocab, (B, T)).astype("<i4")
    tgt = np.roll(ids, -1, axis=1)
    tgt[:, -1] = -1
    ids[1, T - 3:] = 0
    tgt[1, T - 4:] = -1
    tgt[1, :4] = -1
    return ids, tgt.astype("<i4")


def write_batch(d, ids, tgt):
    ids.tofile(os.path.join(d, "ids.i32"))
    tgt.tofile(os.path.join(d, "tgt.i32"))
    return ["--ids", os.path.join(d, "ids.i32"), "--targets", os.path.join(d, "tgt.i32"),
            "--batch", str(ids.shape[0]), "--seq", str(ids.shape[1])]


def run(cmd, timeout=300):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))}\nexit {p.returncode}\n{p.stderr[-3000:]}", pytrace=False)
    return p


def index(d):
    out = []
    with open(os.path.join(d, "index.txt")) as f:
        for line in f:
            name, rows, cols, off = line.split()
            out.append((name, int(rows), int(cols), int(off)))
    return out


def write_gguf(path, n_vocab=64, n_embd=32, n_layer=2, n_head=4, n_head_kv=2, n_ff=64, tied=False,
               rope_freqs=True, wtype="F32", seed=7):
    """A tokenizer-less llama GGUF (vocab from token_embd) with gen_models' random weights."""
    import gguf
    import gen_models

    spec = gen_models.ModelSpec(n_embd=n_embd, n_layer=n_layer, n_head=n_head, n_head_kv=n_head_kv,
                                n_ff=n_ff, n_vocab=n_vocab, tied=tied, rope_freqs=rope_freqs, seed=seed,
                                theta=500000.0)
    w = gen_models.random_weights(spec)
    wr = gguf.GGUFWriter(path, "llama")
    wr.add_context_length(256)
    wr.add_embedding_length(n_embd)
    wr.add_block_count(n_layer)
    wr.add_feed_forward_length(n_ff)
    wr.add_head_count(n_head)
    wr.add_head_count_kv(n_head_kv)
    wr.add_rope_dimension_count(spec.head_dim)
    wr.add_rope_freq_base(spec.theta)
    wr.add_layer_norm_rms_eps(spec.eps)
    q = gguf.GGMLQuantizationType[wtype]
    for name, a in w.items():
        if a.ndim == 1 or wtype == "F32":
            wr.add_tensor(name, a)
        else:
            wr.add_tensor(name, gguf.quants.quantize(a, q), raw_dtype=q)
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    return path


def rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# model sources: (id, train_dump arguments or a GGUF to write, vocab)
CASES = [
    ("random-tied", ["--random", "64,32,2,4,2,48", "--tied", "--seed", "11"], 64),
    ("random-untied-partial-rope", ["--random", "64,32,2,4,2,48", "--n-rot", "6", "--seed", "12",
                                    "--theta", "1000"], 64),
    ("random-mha-3layers", ["--random", "48,24,3,3,3,40", "--seed", "13"], 48),
    ("gguf-untied-rope_freqs", dict(tied=False, rope_freqs=True), 64),
    ("gguf-tied-rope_freqs-q8_0", dict(tied=True, rope_freqs=True, wtype="Q8_0"), 64),
]


def model_args(case, d):
    name, src, _ = case
    if isinstance(src, list):
        return src
    return ["--model", write_gguf(os.path.join(d, f"{name}.gguf"), **src)]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_grads_vs_torch(case, tmp_path, train_dump, torch_python):
    d = str(tmp_path)
    ids, tgt = batch(case[2])
    bargs = write_batch(d, ids, tgt)
    run([train_dump, *model_args(case, d), *bargs, "--out", d])
    run([torch_python, TORCH_REF, d, *bargs])

    loss = float(open(os.path.join(d, "loss.txt")).read())
    ref_loss = float(open(os.path.join(d, "ref_loss.txt")).read())
    assert abs(loss - ref_loss) <= 1e-5 * abs(ref_loss), f"loss {loss} vs torch {ref_loss}"
    # the loss is the mean over the 2*15 - 7 unmasked targets (torch's ignore_index mean)
    assert (tgt >= 0).sum() == 2 * (T - 1) - 7

    logits = np.fromfile(os.path.join(d, "logits.f32"), dtype="<f4").astype(np.float64)
    ref_logits = np.fromfile(os.path.join(d, "ref_logits.f64"), dtype="<f8")
    assert rel(logits, ref_logits) <= 1e-5, f"logits differ: {rel(logits, ref_logits):.2e}"

    g = np.fromfile(os.path.join(d, "grads.f32"), dtype="<f4").astype(np.float64)
    rg = np.fromfile(os.path.join(d, "ref_grads.f64"), dtype="<f8")
    assert g.shape == rg.shape
    bad, worst = [], 0.0
    for name, rows, cols, off in index(d):
        a, b = g[off:off + rows * cols], rg[off:off + rows * cols]
        assert np.max(np.abs(b)) > 0, f"{name}: torch gradient is all zero (test has no teeth)"
        r = rel(a, b)
        worst = max(worst, r)
        if not r <= 1e-4:
            bad.append(f"{name}: max|diff|/max|ref| {r:.2e}")
    assert not bad, "gradients differ from torch autograd:\n" + "\n".join(bad)
    print(f"{case[0]}: loss {loss:.6f} (torch {ref_loss:.6f}), logits rel diff "
          f"{rel(logits, ref_logits):.1e}, worst grad rel diff {worst:.2e}")

    if "--model" in model_args(case, d):
        # the loader: parameters equal gguf-py's own dequantization of the file
        from gguf import GGUFReader
        from gguf.quants import dequantize

        r = GGUFReader(model_args(case, d)[1])
        p = np.fromfile(os.path.join(d, "params.f32"), dtype="<f4")
        tensors = {t.name: t for t in r.tensors}
        for name, rows, cols, off in index(d):
            t = tensors[name]
            want = np.asarray(dequantize(np.asarray(t.data), t.tensor_type), dtype=np.float32).reshape(-1)
            assert np.array_equal(p[off:off + rows * cols], want), f"{name}: loaded weights differ"


def test_checkpointing_bitwise_identical(tmp_path, train_dump):
    """Recomputing each layer's activations in backward gives the very same gradients."""
    d = str(tmp_path)
    ids, tgt = batch(64)
    bargs = write_batch(d, ids, tgt)
    src = ["--random", "64,32,3,4,2,48", "--seed", "5"]
    a, b = os.path.join(d, "a"), os.path.join(d, "b")
    os.mkdir(a), os.mkdir(b)
    run([train_dump, *src, *bargs, "--out", a])
    run([train_dump, *src, *bargs, "--out", b, "--checkpoint"])
    for f in ("loss.txt", "logits.f32", "grads.f32"):
        with open(os.path.join(a, f), "rb") as fa, open(os.path.join(b, f), "rb") as fb:
            assert fa.read() == fb.read(), f"{f} differs with --checkpoint"


ADAM = ["--steps", "10", "--lr", "1e-2", "--wd", "0.1", "--warmup", "3", "--total", "10",
        "--min-lr-ratio", "0.1", "--clip", "1.0"]


@pytest.mark.parametrize("ckpt", [False, True], ids=["stored", "checkpoint"])
def test_adamw_steps_vs_torch(ckpt, tmp_path, train_dump, torch_python):
    """10 AdamW steps (warmup 3, cosine to 0.1 lr, weight decay 0.1 on matrices, clip 1.0: the
    first steps' norms exceed 1, the later ones do not) follow torch.optim.AdamW."""
    d = str(tmp_path)
    ids, tgt = batch(64, seed=3)
    bargs = write_batch(d, ids, tgt)
    gguf_path = write_gguf(os.path.join(d, "m.gguf"), tied=False, rope_freqs=True)
    run([train_dump, "--model", gguf_path, *bargs, "--out", d, *ADAM] + (["--checkpoint"] if ckpt else []))
    run([torch_python, TORCH_REF, d, *bargs, *ADAM])
    c = np.loadtxt(os.path.join(d, "steps.txt"))
    r = np.loadtxt(os.path.join(d, "ref_steps.txt"))
    assert c.shape == r.shape == (10, 4)
    np.testing.assert_allclose(c[:, 2], r[:, 2], rtol=1e-6, err_msg="learning-rate schedule")
    np.testing.assert_allclose(c[:, 3], r[:, 3], rtol=1e-4, err_msg="gradient norms")
    assert (r[:, 3] > 1.0).any() and (r[:, 3] < 1.0).any(), "clipping should be active on some steps only"
    np.testing.assert_allclose(c[:, 1], r[:, 1], rtol=1e-4, err_msg="losses of 10 AdamW steps")
    assert r[-1, 1] < 0.8 * r[0, 1], "the loss should fall over 10 steps"
    p = np.fromfile(os.path.join(d, "params_final.f32"), dtype="<f4").astype(np.float64)
    rp = np.fromfile(os.path.join(d, "ref_params_final.f64"), dtype="<f8")
    assert rel(p, rp) <= 1e-4, f"final parameters differ: {rel(p, rp):.2e}"
    print("losses", " ".join(f"{x:.5f}" for x in c[:, 1]),
          f"max rel loss diff {np.max(np.abs(c[:, 1] - r[:, 1]) / r[:, 1]):.1e}, final params {rel(p, rp):.1e}")


@pytest.mark.parametrize("rope_freqs,gqa", [(False, 1), (True, 2)], ids=["mha", "gqa-rope_freqs"])
def test_logits_match_inference_engine(rope_freqs, gqa, tiny_model, tmp_path, train_dump, llama3c):
    """The training model's logits on an F32 GGUF equal `llama3c eval --logits-out --kv f32` (the
    inference engine; its default F16 KV cache alone differs by ~7e-4), for each of two sequences
    of one batch: both read the architecture alike."""
    import gen_models

    spec = gen_models.ModelSpec(n_embd=64, n_head=4, n_head_kv=4 // gqa, n_ff=128, tied=not rope_freqs,
                                rope_freqs=rope_freqs)
    model = tiny_model(f"train_fwd_{gqa}_{int(rope_freqs)}", spec, "F32")
    rng = np.random.default_rng(1)
    ids = rng.integers(0, spec.n_vocab, (2, 12)).astype("<i4")
    d = str(tmp_path)
    ids.tofile(os.path.join(d, "ids.i32"))
    run([train_dump, "--model", model, "--ids", os.path.join(d, "ids.i32"), "--batch", 2, "--seq", 12,
         "--out", d])
    logits = np.fromfile(os.path.join(d, "logits.f32"), dtype="<f4").reshape(2, 12, spec.n_vocab)
    for b in range(2):
        ref = eval_logits(model, ids[b].tolist(), tmp_path, extra=("--kv", "f32"))
        r = rel(logits[b].astype(np.float64), ref.astype(np.float64))
        assert r <= 1e-4, f"sequence {b}: training logits vs llama3c eval: {r:.2e}"
        print(f"sequence {b}: training logits vs llama3c eval: max|diff|/max|ref| {r:.2e}")


def test_bad_input_errors(tmp_path, train_dump):
    d = str(tmp_path)
    ids, tgt = batch(64)
    bargs = write_batch(d, ids, tgt)
    missing = os.path.join(d, "nope.gguf")
    p = subprocess.run([train_dump, "--model", missing, *bargs, "--out", d], capture_output=True, text=True)
    assert p.returncode == 1 and "nope.gguf" in p.stderr, p.stderr
    # a vocabulary smaller than the ids: the token id and its position are named
    p = subprocess.run([train_dump, "--random", "16,32,1,4,2,48", *bargs, "--out", d], capture_output=True,
                       text=True)
    assert p.returncode == 1 and "token id" in p.stderr and "outside [0, 16)" in p.stderr, p.stderr
    p = subprocess.run([train_dump, "--random", "64,30,1,4,2,48", *bargs, "--out", d], capture_output=True,
                       text=True)
    assert p.returncode == 1 and "n_embd 30" in p.stderr, p.stderr
    # a GGUF tensor of the wrong shape is named
    path = write_gguf(os.path.join(d, "bad.gguf"), n_ff=64)
    import gguf

    r = gguf.GGUFReader(path)
    wr = gguf.GGUFWriter(os.path.join(d, "bad2.gguf"), "llama")
    for f in r.fields.values():
        if f.name.startswith("llama.") and f.name != "llama.feed_forward_length":
            wr.add_key_value(f.name, f.contents(), f.types[0])
    wr.add_feed_forward_length(32)
    for t in r.tensors:
        wr.add_tensor(t.name, np.asarray(t.data).reshape(tuple(reversed([int(x) for x in t.shape]))))
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    p = subprocess.run([train_dump, "--model", os.path.join(d, "bad2.gguf"), *bargs, "--out", d],
                       capture_output=True, text=True)
    assert p.returncode == 1 and "ffn_gate.weight" in p.stderr and "shape" in p.stderr, p.stderr


# ---------------------------------------------------------------- LoRA on a frozen GGUF base

def write_base(d, gguf_path):
    """base.f32 + base_index.txt: every tensor of the GGUF, dequantized by gguf-py (the torch side's
    frozen weights; independent of the engine's loader)."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    r = GGUFReader(gguf_path)
    parts, off = [], 0
    with open(os.path.join(d, "base_index.txt"), "w") as f:
        for t in r.tensors:
            a = np.asarray(dequantize(np.asarray(t.data), t.tensor_type), dtype=np.float32).reshape(-1)
            shape = [int(x) for x in t.shape]
            rows, cols = (1, shape[0]) if len(shape) == 1 else (shape[1], shape[0])
            f.write(f"{t.name} {rows} {cols} {off}\n")
            parts.append(a)
            off += a.size
    np.concatenate(parts).astype("<f4").tofile(os.path.join(d, "base.f32"))


LORA = ["--lora-rank", "4", "--lora-alpha", "8", "--lora-b-std", "0.05"]
# (id, GGUF options, LoRA targets, tolerance of every gradient as max|diff|/max|ref|): an F32
# base multiplies in fp32 like torch; a Q8_0 base's forward quantizes activations to 8 bits
# (the engine's matmul), torch sees float64 activations on the same dequantized weights
LORA_CASES = [
    ("f32-untied-rope_freqs-all", dict(tied=False, rope_freqs=True), "q,k,v,o,gate,up,down", 1e-4),
    ("f32-tied-qv", dict(tied=True, rope_freqs=False), "q,v", 1e-4),
    ("q8_0-tied-all", dict(tied=True, rope_freqs=True, wtype="Q8_0"), "q,k,v,o,gate,up,down", 0.15),
]


@pytest.mark.parametrize("case", LORA_CASES, ids=[c[0] for c in LORA_CASES])
def test_lora_grads_vs_torch(case, tmp_path, train_dump, torch_python):
    """LoRA on a frozen GGUF base (weights kept in their type, backward dequantizing per tile):
    loss, logits and the gradient of every A and B equal torch autograd of W + s B A."""
    name, opts, targets, tol = case
    d = str(tmp_path)
    ids, tgt = batch(64)
    bargs = write_batch(d, ids, tgt)
    path = write_gguf(os.path.join(d, "base.gguf"), **opts)
    write_base(d, path)
    run([train_dump, "--model", path, *LORA, "--lora-targets", targets, *bargs, "--out", d, "--threads", "2"])
    run([torch_python, TORCH_REF, d, *bargs])
    names = [n for n, *_ in index(d)]
    want = {f"blk.{l}.{t}.weight.lora_{ab}" for l in range(2) for t in
            [dict(q="attn_q", k="attn_k", v="attn_v", o="attn_output", gate="ffn_gate", up="ffn_up",
                  down="ffn_down")[x] for x in targets.split(",")] for ab in "ab"}
    assert set(names) == want, f"adapter tensors {names}"
    loss = float(open(os.path.join(d, "loss.txt")).read())
    ref_loss = float(open(os.path.join(d, "ref_loss.txt")).read())
    assert abs(loss - ref_loss) <= tol * abs(ref_loss), f"loss {loss} vs torch {ref_loss}"
    logits = np.fromfile(os.path.join(d, "logits.f32"), dtype="<f4").astype(np.float64)
    ref_logits = np.fromfile(os.path.join(d, "ref_logits.f64"), dtype="<f8")
    assert rel(logits, ref_logits) <= tol, f"logits differ: {rel(logits, ref_logits):.2e}"
    g = np.fromfile(os.path.join(d, "grads.f32"), dtype="<f4").astype(np.float64)
    rg = np.fromfile(os.path.join(d, "ref_grads.f64"), dtype="<f8")
    bad, worst = [], 0.0
    for n, rows, cols, off in index(d):
        a, b = g[off:off + rows * cols], rg[off:off + rows * cols]
        assert np.max(np.abs(b)) > 0, f"{n}: torch gradient is all zero (test has no teeth)"
        r = rel(a, b)
        worst = max(worst, r)
        if not r <= tol:
            bad.append(f"{n}: max|diff|/max|ref| {r:.2e}")
    assert not bad, "LoRA gradients differ from torch autograd:\n" + "\n".join(bad)
    print(f"{name}: loss {loss:.6f} (torch {ref_loss:.6f}), logits {rel(logits, ref_logits):.1e}, "
          f"worst grad {worst:.2e}")


def test_lora_threads_and_checkpoint_bitwise(tmp_path, train_dump):
    """1 or 3 threads, stored or recomputed activations: the same bits (the kernels' chunks
    each own their outputs)."""
    d = str(tmp_path)
    ids, tgt = batch(64)
    bargs = write_batch(d, ids, tgt)
    path = write_gguf(os.path.join(d, "base.gguf"), tied=True, wtype="Q8_0")
    outs = []
    for extra in (["--threads", "1"], ["--threads", "3"], ["--threads", "2", "--checkpoint"]):
        o = os.path.join(d, "_".join(extra).replace("-", ""))
        os.mkdir(o)
        run([train_dump, "--model", path, *LORA, *bargs, "--out", o, *extra])
        outs.append(o)
    for f in ("loss.txt", "logits.f32", "grads.f32"):
        ref = open(os.path.join(outs[0], f), "rb").read()
        for o in outs[1:]:
            assert open(os.path.join(o, f), "rb").read() == ref, f"{f} differs in {o}"


def test_lora_dropout_grads_vs_torch(tmp_path, train_dump, torch_python):
    """--lora-dropout: the forward drops elements of each LoRA branch's input (mask hashed from the
    seed, 0 or 1/(1-p)); torch on the same masks (x W^T + s ((x * mask) A^T) B^T, unmerged) gives
    the loss, logits and every A / B gradient within 1e-4 (F32 base); the masks drop about p of
    the elements, differ between matrices and seeds; 1 / 3 threads and checkpointing bitwise.
    The layers run one row at a time (--chunk-tokens T: each chunk's masks are its elements' of
    the whole batch's input, and its x A^T sits at its rows)."""
    d = str(tmp_path)
    ids, tgt = batch(64)
    bargs = write_batch(d, ids, tgt)
    path = write_gguf(os.path.join(d, "base.gguf"), tied=False, rope_freqs=True)
    write_base(d, path)
    drop = ["--lora-dropout", "0.3", "--dropout-seed", "11", "--chunk-tokens", str(T)]
    run([train_dump, "--model", path, *LORA, *drop, *bargs, "--out", d, "--threads", "2"])
    run([torch_python, TORCH_REF, d, *bargs])
    loss = float(open(os.path.join(d, "loss.txt")).read())
    ref_loss = float(open(os.path.join(d, "ref_loss.txt")).read())
    assert abs(loss - ref_loss) <= 1e-5 * abs(ref_loss), f"loss {loss} vs torch {ref_loss}"
    logits = np.fromfile(os.path.join(d, "logits.f32"), dtype="<f4").astype(np.float64)
    assert rel(logits, np.fromfile(os.path.join(d, "ref_logits.f64"), dtype="<f8")) <= 1e-4
    g = np.fromfile(os.path.join(d, "grads.f32"), dtype="<f4").astype(np.float64)
    rg = np.fromfile(os.path.join(d, "ref_grads.f64"), dtype="<f8")
    worst = 0.0
    for n, rows, cols, off in index(d):
        a, b = g[off:off + rows * cols], rg[off:off + rows * cols]
        assert np.max(np.abs(b)) > 0, n
        worst = max(worst, rel(a, b))
    assert worst <= 1e-4, f"LoRA gradients with dropout differ from torch: {worst:.2e}"
    masks = np.fromfile(os.path.join(d, "dropout.f32"), dtype="<f4")
    zero = float(np.mean(masks == 0))
    assert abs(zero - 0.3) < 0.01 and set(np.unique(masks)) == {0.0, np.float32(1 / 0.7)}, zero
    n0 = B * T * 32  # the first matrix's mask (attn_q: B*T x n_embd 32) vs the second's (attn_k)
    assert not np.array_equal(masks[:n0], masks[n0:2 * n0])
    # another seed, another mask and loss; no dropout: another loss again
    outs = {}
    for name, extra in (("seed12", ["--lora-dropout", "0.3", "--dropout-seed", "12"]), ("none", []),
                        ("t1", [*drop, "--threads", "1"]), ("t3ckpt", [*drop, "--threads", "3", "--checkpoint"])):
        o = os.path.join(d, name)
        os.mkdir(o)
        run([train_dump, "--model", path, *LORA, *extra, *bargs, "--out", o])
        outs[name] = o
    other = float(open(os.path.join(outs["seed12"], "loss.txt")).read())
    plain = float(open(os.path.join(outs["none"], "loss.txt")).read())
    assert other != loss and plain != loss and not os.path.exists(os.path.join(outs["none"], "dropout.f32"))
    for f in ("loss.txt", "logits.f32", "grads.f32", "dropout.f32"):
        ref = open(os.path.join(outs["t1"], f), "rb").read()
        assert open(os.path.join(outs["t3ckpt"], f), "rb").read() == ref, f
    print(f"dropout 0.3: loss {loss:.6f} (torch {ref_loss:.6f}; no dropout {plain:.6f}), worst grad {worst:.2e}")


@pytest.mark.parametrize("wtype", ["F32", "Q4_0"])
def test_lora_adamw_steps_vs_torch(tmp_path, train_dump, torch_python, wtype):
    """10 AdamW steps on the adapter of an F32 base (and of a Q4_0 base in exact mode, torch on
    gguf-py's dequantization) follow torch.optim.AdamW on A and B."""
    d = str(tmp_path)
    ids, tgt = batch(64, seed=3)
    bargs = write_batch(d, ids, tgt)
    path = write_gguf(os.path.join(d, "m.gguf"), tied=False, rope_freqs=True, wtype=wtype)
    write_base(d, path)
    exact = ["--exact", "1"] if wtype != "F32" else []
    run([train_dump, "--model", path, *LORA, *bargs, "--out", d, *ADAM, "--threads", "2", *exact])
    run([torch_python, TORCH_REF, d, *bargs, *ADAM])
    c = np.loadtxt(os.path.join(d, "steps.txt"))
    r = np.loadtxt(os.path.join(d, "ref_steps.txt"))
    np.testing.assert_allclose(c[:, 3], r[:, 3], rtol=1e-4, err_msg="gradient norms")
    np.testing.assert_allclose(c[:, 1], r[:, 1], rtol=1e-4, err_msg="losses of 10 AdamW steps")
    assert r[-1, 1] < 0.95 * r[0, 1], "the loss should fall over 10 steps"
    p = np.fromfile(os.path.join(d, "params_final.f32"), dtype="<f4").astype(np.float64)
    rp = np.fromfile(os.path.join(d, "ref_params_final.f64"), dtype="<f8")
    assert rel(p, rp) <= 1e-4, f"final adapter differs: {rel(p, rp):.2e}"
    print("LoRA losses", " ".join(f"{x:.5f}" for x in c[:, 1]), f"final params {rel(p, rp):.1e}")


# LoRA gradients on quantized bases (issue #20): (id, weight type, shapes). Q4_K_M needs rows that
# are multiples of 256 (K-quant super-blocks); llama.cpp quantizes it (gen_models).
QUANT_CASES = [
    ("q4_0", "Q4_0", dict(n_embd=32, n_ff=64)),
    ("q8_0", "Q8_0", dict(n_embd=32, n_ff=64)),
    ("q4_k_m", "Q4_K_M", dict(n_embd=256, n_ff=512, n_vocab=256)),
]
# The default (fast) mode's only approximation: the forward's activations quantized to 8-bit
# blocks (Q8_0: 32 values share a scale max|x|/127, error <= scale/2, about 0.2% RMS of the
# block's largest value per product); the backward's dx is fp32 dy against W's dequantized blocks
# (l3c_trk_matmul_dx_blocks, exact up to float sums). Through two blocks and the softmax the 8-bit
# activations give gradient differences measured at 0.096 (Q4_0), 0.12 (Q8_0), 0.13 (Q4_K_M) of
# each tensor's largest gradient (logits 0.02-0.05, loss <= 2.2e-3 relative) on
# these random models (max-normalized: the worst element of a tensor whose gradient is itself
# small where the activations round coarsely); 0.2 bounds them with margin. The exact mode
# removes it too (fp32 products on the dequantized weights) and must match torch like F32 (1e-4).
QUANT_TOL = {"exact": 1e-4, "fast": 0.2}


def _quant_base(d, wtype, shapes):
    if wtype in ("Q4_0", "Q8_0"):
        return write_gguf(os.path.join(d, "base.gguf"), tied=True, wtype=wtype, **shapes)
    import gen_models

    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        pytest.skip("llama_cpp (llama-cpp-python) quantizes the K-quant base")
    f32 = write_gguf(os.path.join(d, "base_f32.gguf"), tied=True, wtype="F32", **shapes)
    path = os.path.join(d, "base.gguf")
    gen_models.llama_cpp_quantize(f32, path, gen_models.LLAMA_CPP_TYPES[wtype])
    return path


@pytest.mark.slow
@pytest.mark.parametrize("case", QUANT_CASES, ids=[c[0] for c in QUANT_CASES])
def test_lora_grads_on_quantized_bases_vs_torch(case, tmp_path, train_dump, torch_python):
    """LoRA on Q4_0 / Q8_0 / Q4_K_M bases vs torch float64 on the dequantized weights (gguf-py):
    exact mode within 1e-4 (loss, logits, every A / B gradient); the default mode within the
    tolerance derived above."""
    import gguf

    name, wtype, shapes = case
    d = str(tmp_path)
    ids, tgt = batch(shapes.get("n_vocab", 64))
    bargs = write_batch(d, ids, tgt)
    path = _quant_base(d, wtype, shapes)
    types = {gguf.GGMLQuantizationType(t.tensor_type).name for t in gguf.GGUFReader(path).tensors
             if len(t.shape) == 2}
    assert types - {"F32", "F16"}, f"{wtype}: no quantized matrix in {types}"
    write_base(d, path)
    worst = {}
    for mode in ("exact", "fast"):
        o = os.path.join(d, mode)
        os.mkdir(o)
        for f in ("base.f32", "base_index.txt"):
            os.link(os.path.join(d, f), os.path.join(o, f))
        run([train_dump, "--model", path, *LORA, *bargs, "--out", o, "--threads", "2",
             *(["--exact", "1"] if mode == "exact" else [])])
        run([torch_python, TORCH_REF, o, *bargs])
        loss = float(open(os.path.join(o, "loss.txt")).read())
        ref_loss = float(open(os.path.join(o, "ref_loss.txt")).read())
        logits = np.fromfile(os.path.join(o, "logits.f32"), dtype="<f4").astype(np.float64)
        lr = rel(logits, np.fromfile(os.path.join(o, "ref_logits.f64"), dtype="<f8"))
        g = np.fromfile(os.path.join(o, "grads.f32"), dtype="<f4").astype(np.float64)
        rg = np.fromfile(os.path.join(o, "ref_grads.f64"), dtype="<f8")
        wg = max(rel(g[off:off + r * c], rg[off:off + r * c]) for _, r, c, off in index(o))
        worst[mode] = (abs(loss - ref_loss) / abs(ref_loss), lr, wg)
    print(f"{name} ({sorted(types)}): exact loss/logits/grad {worst['exact'][0]:.1e}/{worst['exact'][1]:.1e}/"
          f"{worst['exact'][2]:.1e}; fast {worst['fast'][0]:.1e}/{worst['fast'][1]:.1e}/{worst['fast'][2]:.1e}")
    for mode, tol in QUANT_TOL.items():
        assert max(worst[mode]) <= tol, f"{name} {mode}: loss/logits/grad {worst[mode]} > {tol}"
