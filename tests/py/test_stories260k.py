"""stories260K (karpathy's llama2.c model) converted by tools/llama2c_to_gguf.py, run by llama3c.

Independent references: expected_greedy_t0.ids / .txt in the shared test data (llama2.c's
float32 run.c output and a float64 forward pass; see shared/data/README.md), and our numpy
reference (tests/py/ref_forward.py), which is itself checked against the expected ids here.

Position mapping: the input at position 0 is BOS (1); expected id k is the greedy token produced
at position k (k = 0..255), so `run --ids 1 -n 256` must print exactly those 256 ids.
The text is what run.c prints: the pieces after BOS with the first piece's leading space dropped,
then one "\\n" that run.c adds at the end.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, THREADS, generate_ids, run_cli
from ref_forward import RefModel

TOOL = os.path.join(REPO, "tools", "llama2c_to_gguf.py")
N = 256


# ------------------------------------------------------------------ the converter and the reference


def test_converter_rejects_wrong_size(stories_files, tmp_path):
    ckpt, tok = stories_files
    bad = tmp_path / "truncated.bin"
    with open(ckpt, "rb") as f:
        bad.write_bytes(f.read()[:-4])
    p = subprocess.run([sys.executable, TOOL, str(bad), tok, str(tmp_path / "x.gguf")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p.stderr
    size = os.path.getsize(ckpt)
    assert f"{size - 4} bytes" in p.stderr and f"implies {size} bytes" in p.stderr, p.stderr
    assert not (tmp_path / "x.gguf").exists(), "the converter left a half-written output file"


def test_converter_metadata(stories_gguf):
    from gguf import GGUFReader

    r = GGUFReader(stories_gguf("f32"))
    f = {k: v.contents() for k, v in r.fields.items() if not k.startswith("GGUF.")}
    assert f["general.architecture"] == "llama"
    assert (f["llama.embedding_length"], f["llama.block_count"], f["llama.feed_forward_length"]) == (64, 5, 172)
    assert (f["llama.attention.head_count"], f["llama.attention.head_count_kv"]) == (8, 4)
    assert f["llama.context_length"] == 512 and f["llama.rope.dimension_count"] == 8
    toks, types = f["tokenizer.ggml.tokens"], f["tokenizer.ggml.token_type"]
    assert toks[:4] == ["<unk>", "<s>", "</s>", "<0x00>"] and types[:4] == [2, 3, 3, 6]
    assert toks[258] == "<0xFF>" and toks[259] == "\u2581t" and types[259] == 1
    assert f["tokenizer.ggml.bos_token_id"] == 1 and f["tokenizer.ggml.eos_token_id"] == 2
    names = {t.name for t in r.tensors}
    assert "output.weight" not in names and len(names) == 2 + 9 * 5  # tied classifier


@pytest.mark.parametrize("wtype", ["f32", "f16"])
def test_reference_reproduces_expected_ids(stories_gguf, stories_expected, wtype):
    """Validates the numpy reference (and the converter's rope convention) on real weights:
    teacher-forced argmax over all 256 positions equals the expected greedy ids."""
    exp, _ = stories_expected
    logits = RefModel(stories_gguf(wtype)).forward([1] + exp[:N - 1])
    bad = np.nonzero(logits.argmax(1) != np.array(exp))[0]
    assert bad.size == 0, f"reference argmax differs from expected at positions {bad.tolist()}"


# ------------------------------------------------------------------ the engine


def _decode_expected(text):
    assert text.endswith(b"\n")
    return text[:-1]


@pytest.mark.parametrize("wtype", ["f32", "f16"])
def test_greedy_ids_exact(llama3c, stories_gguf, stories_expected, wtype):
    exp, _ = stories_expected
    ours = generate_ids(stories_gguf(wtype), [1], N)
    first = next((i for i, (a, b) in enumerate(zip(ours, exp)) if a != b), None)
    assert ours == exp, (f"{wtype}: {len(ours)} ids; first difference at position {first}: "
                         f"ours {ours[first:first + 5] if first is not None else ours[len(exp):]} vs "
                         f"expected {exp[first:first + 5] if first is not None else []}")


@pytest.mark.parametrize("wtype", ["f32", "f16"])
def test_greedy_text_exact(llama3c, stories_gguf, stories_expected, wtype):
    """Text printed by `run` (BOS prompt, 256 steps) == run.c's text (less its final newline)."""
    _, text = stories_expected
    p = run_cli("run", "-m", stories_gguf(wtype), "--ids", "1", "--no-bos", "-n", N, "--temp", 0,
                "--ignore-eos", "-t", THREADS)
    out = p.stdout.encode()
    if out.endswith(b"\n"):
        out = out[:-1]
    want = _decode_expected(text)
    first = next((i for i, (a, b) in enumerate(zip(out, want)) if a != b), min(len(out), len(want)))
    assert out == want, (f"{wtype}: text differs at byte {first}: ours {out[max(0, first - 20):first + 20]!r} "
                         f"vs expected {want[max(0, first - 20):first + 20]!r} (lengths {len(out)} / {len(want)})")


def test_detokenize_expected_ids(llama3c, stories_gguf, stories_expected):
    """`detokenize --skip-special 1 <expected ids>` == run.c's text less its final newline
    (SentencePiece: the leading space of the first piece after BOS is dropped)."""
    exp, text = stories_expected
    p = subprocess.run([llama3c, "detokenize", "-m", stories_gguf("f32"), "--skip-special"] +
                       [str(i) for i in [1] + exp], capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    want = _decode_expected(text)
    assert p.stdout == want, f"ours {p.stdout[:40]!r}... ({len(p.stdout)} B) vs {want[:40]!r}... ({len(want)} B)"


def test_greedy_q8_0(llama3c, stories_gguf, stories_expected):
    """Q8_0 weights (ffn_down rows of 172 stay F16) and 8-bit activations: the greedy path may leave
    the float one where the float top-2 margin is small (positions 71, 114, 185, ... have margins
    < 0.06 at logit rms 9). We assert: the first 64 ids equal the expected ids (smallest float
    margin there is 0.071 at position 61), and ours equals the numpy reference's greedy path on the
    q8_0 file's own weights up to the first step where that reference's top-2 margin is < 0.1."""
    exp, _ = stories_expected
    path = stories_gguf("q8_0")
    ours = generate_ids(path, [1], 128)
    assert ours[:64] == exp[:64], f"first 64 ids differ from expected: ours {ours[:64]} vs {exp[:64]}"
    ref = RefModel(path)
    seq = [1]
    for step in range(128):
        lg = ref.forward(seq)[-1]
        top = np.sort(lg)[-2:]
        if top[1] - top[0] < 0.1:
            break
        nxt = int(np.argmax(lg))
        assert ours[step] == nxt, f"q8_0 greedy differs from reference at step {step} (margin {top[1] - top[0]:.3f})"
        seq.append(nxt)
