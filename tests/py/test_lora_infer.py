"""LoRA adapters at inference (src/model/lora_io.c, adapter.c, lora_merge.c; `--lora`, `llama3c export`).

References, all independent of the C engine:
- llama.cpp (llama-cpp-python `Llama(lora_path=..., lora_scale=...)`) on the same base GGUF and the
  same GGUF LoRA file, written with gguf-py (lora_gen.py: random A and B, B nonzero);
- ref_forward.py (float64 numpy) with the adapter merged into its weights: W + s * alpha/r * B A,
  the adapter tensors dequantized by gguf-py;
- transformers + peft (peft_ref.py, under .venv-torch): an adapter made and saved by peft itself, and
  adapters llama3c writes, loaded by PeftModel.from_pretrained.

Tolerances are the repository's for the same comparisons without an adapter (docs/TESTING.md):
llama.cpp / float64 reference: nmax / nrms of test_forward_ref.py per weight type (an adapter's
type, since llama.cpp multiplies by the adapter's tensors as weights of that type); transformers:
TOL of test_hf_load.py (2e-5 of max |logit|, F32 KV cache). Each comparison also checks that the
adapter moves the logits by far more than the tolerance, so a LoRA silently ignored cannot pass.
"""
import json
import os
import struct
import subprocess

import numpy as np
import pytest

import lora_gen
from conftest import THREADS, eval_logits, llama_cpp_or_skip, run_cli
from gen_models import ModelSpec
from torch_ref import make_hf_model, torch_python  # noqa: F401  (fixture)

IDS = [1, 5, 9, 33, 100, 7, 12, 64, 2, 90, 11, 40, 3, 17, 21, 8, 250, 77, 31, 6]
# a GQA model (k rows permuted for 2 kv heads), untied, 3 layers
SPEC = ModelSpec(n_embd=128, n_layer=3, n_head=4, n_head_kv=2, n_ff=256, n_vocab=320, tied=False, seed=7)
# (nmax, nrms) of test_forward_ref.py, by weight type
TYPE_TOL = {"F32": (0.01, 0.002), "F16": (0.02, 0.004), "BF16": (0.12, 0.02), "Q8_0": (0.30, 0.06)}
HF_TOL = 2e-5
HERE = os.path.dirname(os.path.abspath(__file__))


def norm_diff(a, b):
    rms = np.sqrt(np.mean(b ** 2))
    return float(np.abs(a - b).max() / rms), float(np.sqrt(np.mean((a - b) ** 2)) / rms)


def lora_args(*pairs):
    out = []
    for path, scale in pairs:
        out += ["--lora", path, "--lora-scale", scale]
    return out


def llama_cpp_scores(model, ids, lora=None, scale=1.0):
    llama_cpp = llama_cpp_or_skip()
    kw = dict(lora_path=lora, lora_scale=scale) if lora else {}
    lm = llama_cpp.Llama(model_path=model, logits_all=True, n_ctx=64, n_batch=64, n_threads=THREADS,
                         verbose=False, **kw)
    try:
        lm.eval(ids)
        return np.array(lm.scores[:len(ids)], dtype=np.float64)
    finally:
        lm.close()


def ref_logits(model, adapters, ids):
    """float64 reference with each (adapter file, user scale) merged into the weights."""
    from ref_forward import RefModel
    m = RefModel(model)
    for path, scale in adapters:
        t, alpha = lora_gen.read_gguf_lora(path)
        for name in t:
            if not name.endswith(".lora_a"):
                continue
            a, b = t[name], t[name[:-1] + "b"]
            s = scale * (alpha / a.shape[0] if alpha else 1.0)
            m.w[name[:-len(".lora_a")]] += s * (b @ a)
    m.out = m.w.get("output.weight", m.w["token_embd.weight"])
    return m.forward(ids)


@pytest.fixture(scope="module")
def base(tiny_model):
    return tiny_model("lora_gqa2", SPEC, "F32")


def make_adapter(tmp_path, model, name, rank=8, targets=lora_gen.TARGETS, layers=None, wtype="F32", alpha=None,
                 seed=1, gain=0.5, **kw):
    shapes, _ = lora_gen.model_shapes(model)
    mats = lora_gen.random_lora(shapes, rank, targets, layers, seed=seed, gain=gain)
    return lora_gen.write_gguf_lora(str(tmp_path / f"{name}.gguf"), mats, alpha if alpha is not None else 2.0 * rank,
                                    wtype=wtype, **kw)


# ---------------------------------------------------------------- GGUF LoRA vs llama.cpp and float64

CASES = {  # name: (rank, targets, layers, adapter type)
    "all-f32": (8, lora_gen.TARGETS, None, "F32"),
    "qv-f16": (4, ["attn_q", "attn_v"], None, "F16"),
    "ffn-layer1-bf16": (8, ["ffn_gate", "ffn_up", "ffn_down"], {1}, "BF16"),
    "ko-q8_0": (32, ["attn_k", "attn_output"], None, "Q8_0"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_gguf_lora_matches_llama_cpp_and_reference(llama3c, base, tmp_path, case):
    rank, targets, layers, wtype = CASES[case]
    ad = make_adapter(tmp_path, base, case, rank, targets, layers, wtype)
    tol = TYPE_TOL[wtype]
    ours = eval_logits(base, IDS, tmp_path, extra=lora_args((ad, 0.7)))
    plain = eval_logits(base, IDS, tmp_path)
    ref = ref_logits(base, [(ad, 0.7)], IDS)
    nmax, nrms = norm_diff(ours, ref)
    assert nmax <= tol[0] and nrms <= tol[1], f"{case} vs float64 reference: nmax {nmax:.4g} nrms {nrms:.4g} > {tol}"
    effect = norm_diff(plain, ref)
    assert effect[0] >= 10 * tol[0] or effect[1] >= 10 * tol[1], f"{case}: the adapter changes too little {effect}"
    peer = llama_cpp_scores(base, IDS, ad, 0.7)
    nmax, nrms = norm_diff(ours, peer)
    assert nmax <= tol[0] and nrms <= tol[1], f"{case} vs llama.cpp: nmax {nmax:.4g} nrms {nrms:.4g} > {tol}"
    # one token at a time (the KV-cache path) gives the same numbers within float summation order
    assert norm_diff(eval_logits(base, IDS, tmp_path, batch=1, extra=lora_args((ad, 0.7))), ours)[0] <= 1e-4


def test_two_adapters_and_scale_zero(llama3c, base, tmp_path):
    a1 = make_adapter(tmp_path, base, "a1", 8, ["attn_q", "attn_v", "ffn_up"], seed=2)
    a2 = make_adapter(tmp_path, base, "a2", 4, ["attn_output", "ffn_gate", "ffn_down"], seed=3, alpha=0.0)
    ours = eval_logits(base, IDS, tmp_path, extra=lora_args((a1, 1.0), (a2, -0.5)))
    ref = ref_logits(base, [(a1, 1.0), (a2, -0.5)], IDS)  # alpha 0: scale 1, as llama.cpp
    nmax, nrms = norm_diff(ours, ref)
    assert nmax <= TYPE_TOL["F32"][0] and nrms <= TYPE_TOL["F32"][1], (nmax, nrms)
    # scale 0 removes the adapter: exactly the base model's logits
    assert np.array_equal(eval_logits(base, IDS, tmp_path, extra=lora_args((a1, 0.0))), eval_logits(base, IDS, tmp_path))


@pytest.mark.slow
def test_smollm2_lora_matches_llama_cpp(llama3c, smollm2_path, tmp_path):
    # scale alpha / rank = 1, B A about the size of the weights: the logits move by ~0.7 x rms.
    # Much stronger adapters drive the Q4_1 model into a regime where 8-bit activation noise is
    # amplified at some positions (measured at 3x this strength: one position's logits off by 6 x rms
    # from the float64 reference for llama3c and 1.2 x rms for llama.cpp, the others alike).
    ad = make_adapter(tmp_path, smollm2_path, "smol", 8, wtype="F16", gain=1.0, alpha=8.0)
    ours = eval_logits(smollm2_path, IDS, tmp_path, extra=lora_args((ad, 1.0)))
    peer = llama_cpp_scores(smollm2_path, IDS, ad, 1.0)
    tol = (0.40, 0.07)  # test_smollm2.py's LOGIT_TOL (Q4_1 base: 8-bit activations on both sides)
    nmax, nrms = norm_diff(ours, peer)
    assert nmax <= tol[0] and nrms <= tol[1], f"vs llama.cpp: nmax {nmax:.4g} nrms {nrms:.4g}"
    effect = norm_diff(llama_cpp_scores(smollm2_path, IDS), peer)
    assert effect[1] >= 5 * tol[1], f"the adapter changes too little: {effect}"


# ---------------------------------------------------------------- merge

def test_merge_f32_equals_runtime_lora_and_loads_in_llama_cpp(llama3c, base, tmp_path):
    ad = make_adapter(tmp_path, base, "m", 8)
    out = str(tmp_path / "merged.gguf")
    p = run_cli("export", "--merge", "-m", base, "--lora", ad, "--lora-scale", 0.8, "-o", out, "--type", "f32")
    assert "wrote" in p.stderr and "/" in p.stderr and os.path.exists(out)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".merged.gguf.")]  # no temporary file left
    # F32 KV cache: with F16 a last-bit difference in k / v can round to the next F16 value
    runtime = eval_logits(base, IDS, tmp_path, extra=("--kv", "f32", *lora_args((ad, 0.8))))
    merged = eval_logits(out, IDS, tmp_path, extra=("--kv", "f32"))
    err = float(np.abs(merged - runtime).max() / np.abs(runtime).max())
    assert err <= 1e-5, f"merged vs runtime LoRA: {err:.3g}"
    peer = llama_cpp_scores(out, IDS)
    nmax, nrms = norm_diff(merged, peer)
    assert nmax <= TYPE_TOL["F32"][0] and nrms <= TYPE_TOL["F32"][1], (nmax, nrms)
    import gguf
    r = gguf.GGUFReader(out)
    assert {t.tensor_type.name for t in r.tensors} == {"F32"}


def test_merge_same_keeps_the_quantized_type(llama3c, tiny_model, tmp_path):
    q8 = tiny_model("lora_gqa2", SPEC, "Q8_0")
    ad = make_adapter(tmp_path, q8, "mq", 8, ["attn_q", "ffn_down"])
    out = str(tmp_path / "merged_q8.gguf")
    run_cli("export", "--merge", "-m", q8, "--lora", ad, "-o", out, "--quiet")
    import gguf
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(out).tensors}
    assert types["blk.0.attn_q.weight"] == "Q8_0" and types["blk.2.ffn_down.weight"] == "Q8_0"
    runtime = eval_logits(q8, IDS, tmp_path, extra=lora_args((ad, 1.0)))
    nmax, nrms = norm_diff(eval_logits(out, IDS, tmp_path), runtime)
    assert nmax <= TYPE_TOL["Q8_0"][0] and nrms <= TYPE_TOL["Q8_0"][1], (nmax, nrms)


# ---------------------------------------------------------------- GGUF <-> PEFT round trip

def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        assert t["dtype"] == "F32"
        b, e = t["data_offsets"]
        out[name] = np.frombuffer(data[b:e], dtype="<f4").reshape(t["shape"])
    return out


def test_gguf_peft_gguf_round_trip_is_exact(llama3c, base, tmp_path):
    ad = make_adapter(tmp_path, base, "rt", 8, layers={0, 2})
    peft_dir, back = str(tmp_path / "peft"), str(tmp_path / "back.gguf")
    run_cli("export", "--lora-convert", "-m", base, ad, peft_dir)
    run_cli("export", "--lora-convert", "-m", base, peft_dir, back)
    want, alpha0 = lora_gen.read_gguf_lora(ad)
    got, alpha1 = lora_gen.read_gguf_lora(back)
    assert alpha0 == alpha1 and sorted(want) == sorted(got)
    for k in want:
        assert np.array_equal(want[k], got[k]), k
    cfg = json.load(open(os.path.join(peft_dir, "adapter_config.json")))
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 8 and cfg["lora_alpha"] == 16
    st = read_safetensors(os.path.join(peft_dir, "adapter_model.safetensors"))
    assert st["base_model.model.model.layers.2.mlp.down_proj.lora_A.weight"].shape == (8, SPEC.n_ff)
    # v is not permuted; q is (HF rotate-half order): row 1 of GGUF is HF row hd/2 of head 0
    hd = SPEC.n_embd // SPEC.n_head
    assert np.array_equal(st["base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"],
                          want["blk.0.attn_v.weight.lora_b"].astype(np.float32))
    assert np.array_equal(st["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"][hd // 2],
                          want["blk.0.attn_q.weight.lora_b"][1].astype(np.float32))
    assert np.array_equal(eval_logits(base, IDS, tmp_path, extra=("--lora", ad)),
                          eval_logits(base, IDS, tmp_path, extra=("--lora", peft_dir)))


# ---------------------------------------------------------------- PEFT vs transformers + peft

@pytest.fixture(scope="module")
def peft_python(torch_python):
    p = subprocess.run([torch_python, "-c", "import peft"], capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        pytest.skip(f"{torch_python} cannot import peft (scripts/setup.sh --test installs it): {p.stderr[-300:]}")
    return torch_python


@pytest.fixture(scope="module")
def hf_base(torch_python, tmp_path_factory):
    d = str(tmp_path_factory.mktemp("lora_hf") / "base")
    spec = dict(vocab=320, hidden=64, ff=160, layers=2, heads=4, kv_heads=2, dtype="float32", tied=False,
                rope_scaling=None, max_shard_size=None, seed=5, ids=IDS, tokenizer=False)
    ref = make_hf_model(torch_python, d, spec)
    return d, ref


def peft_make(python, hf_dir, out_dir, spec):
    spec = dict(spec, ids=IDS)
    sp = out_dir + ".spec.json"
    with open(sp, "w") as f:
        json.dump(spec, f)
    p = subprocess.run([python, os.path.join(HERE, "peft_ref.py"), "make", sp, hf_dir, out_dir, out_dir + ".npy"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return np.load(out_dir + ".npy")


def peft_logits(python, hf_dir, adapter_dir):
    ids_path = adapter_dir + ".ids.json"
    with open(ids_path, "w") as f:
        json.dump(IDS, f)
    p = subprocess.run([python, os.path.join(HERE, "peft_ref.py"), "logits", hf_dir, adapter_dir, ids_path,
                        adapter_dir + ".npy"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return np.load(adapter_dir + ".npy")


def hf_nmax(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


PEFT_CASES = {
    "all-r4": dict(r=4, alpha=8, targets=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    "qk-r8-rslora": dict(r=8, alpha=4, targets=["q_proj", "k_proj"], rslora=True),
}


@pytest.mark.parametrize("case", list(PEFT_CASES))
def test_peft_adapter_matches_transformers(llama3c, peft_python, hf_base, tmp_path, case):
    hf_dir, plain = hf_base
    ad = str(tmp_path / f"peft-{case}")
    want = peft_make(peft_python, hf_dir, ad, PEFT_CASES[case])
    assert hf_nmax(plain, want) >= 100 * HF_TOL, "the adapter changes too little"
    got = eval_logits(hf_dir, IDS, tmp_path, extra=("--kv", "f32", "--lora", ad))
    assert hf_nmax(got, want) <= HF_TOL, f"HF folder + PEFT adapter vs peft: {hf_nmax(got, want):.3g}"
    # the same on the folder converted to GGUF (q / k rows of the base and of B permuted alike)
    g = str(tmp_path / "base.gguf")
    run_cli("convert", hf_dir, "-o", g, "--type", "F32", "--quiet")
    got = eval_logits(g, IDS, tmp_path, extra=("--kv", "f32", "--lora", ad))
    assert hf_nmax(got, want) <= HF_TOL, f"GGUF + PEFT adapter vs peft: {hf_nmax(got, want):.3g}"


def test_llama3c_written_peft_loads_in_peft(llama3c, peft_python, hf_base, tmp_path):
    hf_dir, plain = hf_base
    g = str(tmp_path / "base.gguf")
    run_cli("convert", hf_dir, "-o", g, "--type", "F32", "--quiet")
    ad = make_adapter(tmp_path, g, "to_peft", 8, gain=0.5)
    out = str(tmp_path / "from_llama3c")
    run_cli("export", "--lora-convert", "-m", hf_dir, ad, out, "--base-name", "tiny-base")
    cfg = json.load(open(os.path.join(out, "adapter_config.json")))
    assert cfg["base_model_name_or_path"] == "tiny-base" and cfg["task_type"] == "CAUSAL_LM"
    want = peft_logits(peft_python, hf_dir, out)
    assert hf_nmax(plain, want) >= 100 * HF_TOL
    got = eval_logits(g, IDS, tmp_path, extra=("--kv", "f32", "--lora", ad))
    assert hf_nmax(got, want) <= HF_TOL, f"llama3c (GGUF LoRA) vs peft (converted folder): {hf_nmax(got, want):.3g}"


# ---------------------------------------------------------------- errors

def lora_error(model, adapter, tmp_path):
    out = str(tmp_path / "x.f32")
    p = run_cli("eval", "-m", model, "--ids", "1 2 3", "--logits-out", out, "--lora", adapter, check=False)
    assert p.returncode == 1, f"exit {p.returncode}: {p.stderr[-2000:]}"
    return p.stderr


def test_adapter_for_another_model(llama3c, base, tiny_model, tmp_path):
    other = tiny_model("lora_other", ModelSpec(n_embd=64, n_layer=3, n_head=4, n_head_kv=4, n_ff=128), "F32")
    err = lora_error(base, make_adapter(tmp_path, other, "other"), tmp_path)
    assert "an adapter for another model?" in err and "other.gguf" in err and "A must be [rank x 128]" in err
    more_layers = tiny_model("lora_deep", ModelSpec(n_embd=128, n_layer=5, n_head=4, n_head_kv=2, n_ff=256), "F32")
    err = lora_error(base, make_adapter(tmp_path, more_layers, "deep"), tmp_path)
    assert "layer out of range (the model has 3 layers)" in err


def test_truncated_missing_and_wrong_rank(llama3c, base, tmp_path):
    ad = make_adapter(tmp_path, base, "good", 8)
    data = open(ad, "rb").read()
    for cut in (10, 200, len(data) // 2, len(data) - 1):
        bad = str(tmp_path / f"cut{cut}.gguf")
        open(bad, "wb").write(data[:cut])
        err = lora_error(base, bad, tmp_path)
        assert f"cut{cut}.gguf" in err
    err = lora_error(base, make_adapter(tmp_path, base, "nob", 8, skip={"blk.1.ffn_up.weight.lora_b"}), tmp_path)
    assert "layer 1 ffn_up: tensor 'blk.1.ffn_up.weight.lora_a' has no matching lora_b" in err
    shapes, _ = lora_gen.model_shapes(base)
    mats = lora_gen.random_lora(shapes, 8, ["attn_v"])
    a, b = mats[(2, "attn_v")]
    mats[(2, "attn_v")] = (a, b[:, :4])
    err = lora_error(base, lora_gen.write_gguf_lora(str(tmp_path / "rank.gguf"), mats, 8.0), tmp_path)
    assert "layer 2 attn_v: rank of A (8) and B (4) differ" in err
    err = lora_error(base, base, tmp_path)
    assert "not a LoRA adapter: general.type is" in err
    err = lora_error(base, str(tmp_path / "absent.gguf"), tmp_path)
    assert "absent.gguf" in err


def test_peft_config_errors(llama3c, base, tmp_path):
    ad = make_adapter(tmp_path, base, "p", 8)
    d = str(tmp_path / "peft")
    run_cli("export", "--lora-convert", "-m", base, ad, d)
    cfg_path = os.path.join(d, "adapter_config.json")
    good = json.load(open(cfg_path))
    for change, want in [({"use_dora": True}, "DoRA (use_dora) adapters are not supported"),
                         ({"peft_type": "PREFIX_TUNING"}, "peft_type is 'PREFIX_TUNING'; only LORA"),
                         ({"r": 16}, "has rank 8, but adapter_config.json says r = 16"),
                         ({"bias": "all"}, "bias 'all' is not supported"),
                         ({"lora_alpha": "x"}, "'lora_alpha' must be a finite number")]:
        json.dump(dict(good, **change), open(cfg_path, "w"))
        assert want in lora_error(base, d, tmp_path), change
    json.dump(good, open(cfg_path, "w"))
    os.remove(os.path.join(d, "adapter_model.safetensors"))
    assert "adapter_model.safetensors: cannot open" in lora_error(base, d, tmp_path)


def test_export_usage_errors(llama3c, base, tmp_path):
    ad = make_adapter(tmp_path, base, "u", 4)
    for args in (["--merge", "-m", base, "-o", str(tmp_path / "o.gguf")],          # no --lora
                 ["--merge", "--lora-convert", "-m", base, ad, "x"],
                 ["--lora-convert", ad, str(tmp_path / "y")],                       # no -m
                 ["--merge", "-m", base, "--lora-scale", "2", "-o", "z.gguf"]):     # scale before --lora
        assert run_cli("export", *args, check=False).returncode == 2, args
    out = str(tmp_path / "no" / "such" / "dir.gguf")
    p = run_cli("export", "--merge", "-m", base, "--lora", ad, "-o", out, "--quiet", check=False)
    assert p.returncode == 1 and "cannot create" in p.stderr and not os.path.exists(os.path.dirname(out))
    p = run_cli("export", "--merge", "-m", base, "--lora", ad, "-o", str(tmp_path / "t.gguf"), "--type", "q2_k",
                check=False)
    assert p.returncode == 1 and "is not one of same" in p.stderr


# ---------------------------------------------------------------- run, chat and serve apply it too

@pytest.mark.slow
def test_run_and_serve_apply_the_adapter(llama3c, smollm2_path, tmp_path):
    import http.client
    from server_util import Server
    ad = make_adapter(tmp_path, smollm2_path, "gen", 8, wtype="F16", gain=1.0, alpha=8.0)
    prompt = "The capital of France is"

    def run(*extra):
        return run_cli("run", "-m", smollm2_path, "-p", prompt, "-n", 8, "--temp", 0, "-t", THREADS, *extra).stdout

    with_lora, plain = run("--lora", ad), run()
    assert with_lora != plain, "the adapter does not change greedy generation"
    with Server(smollm2_path, "--lora", ad) as srv:
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=120)
        c.request("POST", "/v1/completions", json.dumps({"prompt": prompt, "max_tokens": 8, "temperature": 0}),
                  {"Content-Type": "application/json"})
        r = c.getresponse()
        body = json.loads(r.read())
    assert r.status == 200, body
    assert body["choices"][0]["text"] == with_lora
