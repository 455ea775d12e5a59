"""Batch invariance: a token's logits do not depend on how its prompt was batched.

The server batches tokens of several requests into one decode and reuses cached prefixes, so a
prompt may be evaluated in one batch, in chunks of any size or token by token. Every kernel
computes a (weight row, token) pair in one canonical order whatever the tile / T / thread count
(docs/PERFORMANCE.md, "Batch invariance"), so `eval --all` logits must be bitwise equal
(np.array_equal) for --batch 512, 1, 3 and 7, with 1 or 2 threads, on every KV cache type.
"""

import numpy as np
import pytest

from conftest import eval_logits
from gen_models import ModelSpec

BATCHES = [1, 3, 7]

# generated tiny models (gguf-py types only: no llama.cpp needed)
SPEC = ModelSpec(n_embd=192, n_layer=2, n_head=6, n_head_kv=2, n_ff=384, n_vocab=320, tied=False, seed=5)
TINY_TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]
TINY_PROMPT = [1] + [int(x) for x in np.random.default_rng(3).integers(3, 320, 40)]

# SmolLM2 (Q4_1 + Q8_0 embeddings / output): an arbitrary but fixed prompt
SMOL_PROMPT = [1] + [int(x) for x in np.random.default_rng(7).integers(100, 49000, 37)]


def assert_same(ref, other, what):
    if not np.array_equal(ref, other):
        d = np.abs(ref.astype(np.float64) - other)
        pos = int(np.unravel_index(int(np.argmax(d)), d.shape)[0])
        n_rows = int(np.sum(np.any(ref != other, axis=1)))
        pytest.fail(f"{what}: logits differ at {n_rows} positions, first max |diff| {d.max():.3g} "
                    f"at position {pos}")


@pytest.mark.parametrize("wtype", TINY_TYPES)
@pytest.mark.parametrize("kv", ["f16", "f32", "q8_0"])
def test_tiny_batch_invariant(llama3c, tiny_model, tmp_path, wtype, kv):
    path = tiny_model("binv", SPEC, wtype)
    full = eval_logits(path, TINY_PROMPT, tmp_path, batch=512, extra=("--kv", kv))
    for batch in BATCHES:
        assert_same(full, eval_logits(path, TINY_PROMPT, tmp_path, batch=batch, extra=("--kv", kv)),
                    f"{wtype} --kv {kv}: --batch {batch} vs 512")
    assert_same(full, eval_logits(path, TINY_PROMPT, tmp_path, batch=5, threads=1, extra=("--kv", kv)),
                f"{wtype} --kv {kv}: 1 thread --batch 5 vs 2 threads --batch 512")


def test_smollm2_batch_invariant(llama3c, smollm2_path, tmp_path):
    full = eval_logits(smollm2_path, SMOL_PROMPT, tmp_path, batch=512)
    for batch in BATCHES:
        assert_same(full, eval_logits(smollm2_path, SMOL_PROMPT, tmp_path, batch=batch),
                    f"SmolLM2 --batch {batch} vs 512")
    assert_same(full, eval_logits(smollm2_path, SMOL_PROMPT, tmp_path, batch=512, threads=1),
                "SmolLM2 1 thread vs 2 threads")
