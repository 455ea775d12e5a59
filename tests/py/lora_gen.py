"""lora_gen.py -- random LoRA adapters for the LoRA tests (tests/py/test_lora_infer.py), written with
gguf-py, independently of the C engine.

write_gguf_lora(model_path, out, rank, targets, ...) reads the base model's matrix shapes with
gguf.GGUFReader and writes a llama.cpp GGUF LoRA file: general.architecture llama, general.type
adapter, adapter.type lora, adapter.lora.alpha; tensors blk.N.<target>.weight.lora_a (numpy
[rank, n_in], i.e. GGUF ne [n_in, rank]) and .lora_b ([n_out, rank]) in F32, F16, BF16 or Q8_0.
A ~ N(0, 1/n_in), B ~ N(0, (gain^2)/rank): with scale alpha/rank = 1 the delta B A is about
`gain` times the size of a random weight entry, so the adapter visibly changes the logits.

read_gguf_lora(path) -> {name: float64 array} (dequantized with gguf.quants) and alpha.
"""
import numpy as np
import gguf

TARGETS = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]
T = gguf.GGMLQuantizationType


def model_shapes(model_path):
    """{(layer, target): (n_out, n_in)} of the base GGUF's adapted matrices, and n_layer."""
    r = gguf.GGUFReader(model_path)
    shapes = {}
    for t in r.tensors:
        parts = t.name.split(".")
        if len(parts) == 4 and parts[0] == "blk" and parts[2] in TARGETS and parts[3] == "weight":
            ne = [int(x) for x in t.shape]  # gguf-py: ne order, [n_in, n_out]
            shapes[(int(parts[1]), parts[2])] = (ne[1], ne[0])
    n_layer = 1 + max(l for l, _ in shapes)
    return shapes, n_layer


def random_lora(shapes, rank, targets=TARGETS, layers=None, seed=0, gain=0.5):
    """{(layer, target): (A [rank x n_in], B [n_out x rank])} float32."""
    rng = np.random.default_rng(seed)
    out = {}
    for (l, t), (n_out, n_in) in sorted(shapes.items()):
        if t not in targets or (layers is not None and l not in layers):
            continue
        a = rng.standard_normal((rank, n_in)) / np.sqrt(n_in)
        b = rng.standard_normal((n_out, rank)) * gain / np.sqrt(rank)
        out[(l, t)] = (a.astype(np.float32), b.astype(np.float32))
    return out


def _encode(arr, wtype):
    if wtype == "F32":
        return arr.astype(np.float32), None
    if wtype == "F16":
        return arr.astype(np.float16), None
    qt = {"BF16": T.BF16, "Q8_0": T.Q8_0}[wtype]
    return gguf.quants.quantize(arr.astype(np.float32), qt), qt


def write_gguf_lora(path, mats, alpha, wtype="F32", arch="llama", general_type="adapter", skip=()):
    """Writes mats ({(layer, target): (A, B)}) as a GGUF LoRA; names in `skip` are left out."""
    w = gguf.GGUFWriter(path, arch)
    if general_type is not None:
        w.add_type(general_type)
    w.add_string("adapter.type", "lora")
    if alpha is not None:
        w.add_float32("adapter.lora.alpha", float(alpha))
    for (l, t), (a, b) in sorted(mats.items()):
        for suffix, m in (("lora_a", a), ("lora_b", b)):
            name = f"blk.{l}.{t}.weight.{suffix}"
            if name in skip:
                continue
            data, qt = _encode(m, wtype)
            w.add_tensor(name, data, raw_dtype=qt) if qt is not None else w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def read_gguf_lora(path):
    """({tensor name: float64 array in numpy order}, alpha) of a GGUF LoRA file."""
    r = gguf.GGUFReader(path)
    alpha = None
    f = r.fields.get("adapter.lora.alpha")
    if f is not None:
        alpha = float(f.parts[f.data[0]][0])
    out = {}
    for t in r.tensors:
        ne = [int(x) for x in t.shape]
        out[t.name] = gguf.quants.dequantize(t.data, t.tensor_type).reshape(ne[1], ne[0]).astype(np.float64)
    return out, alpha
