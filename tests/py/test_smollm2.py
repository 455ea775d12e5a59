"""SmolLM2-135M-Instruct (Q4_1 GGUF, the default model): llama3c vs llama.cpp on the same file.

- tokenization: `tokenize --ids` equals llama.cpp's tokenizer (vocab_only) on a varied text set;
- prompt logits: `eval --all` vs llama.cpp's scores, max |diff| within a stated tolerance;
- greedy: 32 tokens after each of 5 prompts equal llama.cpp's greedy path; where they differ,
  llama.cpp's logit gap between its token and ours must be below GREEDY_TIE_MARGIN (a near tie
  that rounding may flip; at most 3 per prompt, and comparison resumes on llama.cpp's path),
  otherwise the test fails and names the step, tokens and margin;
- chat: asked for the capital of France, the greedy answer mentions Paris (coherence).
The prompts are tokenized by llama.cpp and fed to both engines as ids, so a tokenizer bug shows
up in the tokenizer test only.
"""
import numpy as np
import pytest

from conftest import THREADS, eval_logits, generate_ids, llama_cpp_or_skip, run_cli

pytestmark = pytest.mark.slow

TEXTS = [
    "Hello world",
    " Hello world",
    "Once upon a time, there was a little girl named Lily.",
    "The quick brown fox jumps over the lazy dog!",
    "  two leading spaces and   three inside",
    "line one\nline two\n\nafter a blank line\r\nwindows line",
    "\ttab\tseparated\tvalues",
    "3333+777=4110; 1234567890 and 3.14159",
    "I'm sure you'll say it's what we've done, isn't it? They'd LL've",
    "café naïve résumé Ångström",
    "日本語のテキストと中文文本",
    "emoji: 🦙🔥👍🏽 and symbols ©®™ ∑∫√",
    "def f(x):\n    return x ** 2  # square\n",
    "<|im_start|>user\nnot special here<|im_end|>",
    "URL https://example.com/a?b=c&d=e#frag and email a.b@c.org",
    "MixedCASE camelCase snake_case kebab-case ALLCAPS",
    "   ",
    "a",
]

PROMPTS = [
    "Once upon a time",
    "The capital of France is",
    "def fibonacci(n):",
    "<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n",
    "1, 2, 3, 4,",
]
N_GEN = 32
# Prompt logits, normalised by the logit RMS (~8): (nmax, nrms) limits. Measured on a 14-token
# prompt: llama3c vs llama.cpp 0.18-0.22 / 0.032-0.037; vs the float64 reference llama3c 0.21 / 0.046 and
# llama.cpp 0.20 / 0.045 (30 layers of 8-bit activations: both engines are equally far from it).
LOGIT_TOL = (0.40, 0.07)
REF_TOL = (0.40, 0.08)
# Per-logit differences between the engines reach ~1.4 (rms 0.25), so a top-2 gap below this in
# llama.cpp's logits is a near tie that either engine may break either way.
GREEDY_TIE_MARGIN = 0.5


@pytest.fixture(scope="module")
def lcpp_vocab(smollm2_path):
    llama_cpp = llama_cpp_or_skip()
    lm = llama_cpp.Llama(model_path=smollm2_path, vocab_only=True, verbose=False)
    yield lm
    lm.close()


@pytest.fixture(scope="module")
def lcpp_model(smollm2_path):
    llama_cpp = llama_cpp_or_skip()
    lm = llama_cpp.Llama(model_path=smollm2_path, logits_all=True, n_ctx=256, n_batch=256,
                         n_threads=1, verbose=False)  # 1: llama.cpp's spinning workers crawl on a loaded box
    yield lm
    lm.close()


def lcpp_prompt_ids(lm, text):
    # add_bos=True adds BOS only if the model asks for it (SmolLM2: no); special=True parses <|im_start|>.
    return lm.tokenize(text.encode(), add_bos=True, special=True)


def lcpp_greedy(lm, ids, n):
    """Greedy continuation by eval + argmax; returns (ids, per-step logits rows)."""
    lm.reset()
    lm.eval(ids)
    out, rows = [], []
    for _ in range(n):
        row = np.array(lm.scores[lm.n_tokens - 1], dtype=np.float64)
        t = int(np.argmax(row))
        out.append(t)
        rows.append(row)
        lm.eval([t])
    return out, rows


@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_tokenize_matches_llama_cpp(llama3c, smollm2_path, lcpp_vocab, text):
    want = lcpp_vocab.tokenize(text.encode(), add_bos=False, special=False)
    p = run_cli("tokenize", "-m", smollm2_path, "--ids", "-p", text)
    ours = [int(x) for x in p.stdout.replace(",", " ").split()]
    assert ours == want, f"{text!r}: ours {ours} vs llama.cpp {want}"


LOGIT_PROMPT = "The quick brown fox jumps over the lazy dog. Once upon a time"


def normalised_diff(ours, other):
    d = np.abs(ours - other)
    rms = float(np.sqrt(np.mean(other ** 2)))
    pos, tok = np.unravel_index(int(np.argmax(d)), d.shape)
    return (float(d.max()) / rms, float(np.sqrt(np.mean(d * d))) / rms,
            f"max|diff| {d.max():.4f} at pos {pos} token {tok}; rms diff {np.sqrt(np.mean(d * d)):.4f}; "
            f"logit rms {rms:.3f}; argmax agreement {np.mean(ours.argmax(1) == other.argmax(1)):.3f}")


def test_prompt_logits_close_to_llama_cpp(llama3c, smollm2_path, lcpp_model, tmp_path):
    ids = lcpp_prompt_ids(lcpp_model, LOGIT_PROMPT)
    lcpp_model.reset()
    lcpp_model.eval(ids)
    peer = np.array(lcpp_model.scores[:len(ids)], dtype=np.float64)
    ours = eval_logits(smollm2_path, ids, tmp_path).astype(np.float64)
    assert ours.shape == peer.shape
    nmax, nrms, msg = normalised_diff(ours, peer)
    print("llama3c vs llama.cpp: " + msg)
    assert nmax <= LOGIT_TOL[0] and nrms <= LOGIT_TOL[1], f"vs llama.cpp (tol {LOGIT_TOL} x rms): " + msg


def test_prompt_logits_vs_reference(llama3c, smollm2_path, tmp_path):
    """vs the float64 numpy reference on the file's dequantized weights (needs ~1.2 GB of RAM)."""
    from ref_forward import RefModel

    # LOGIT_PROMPT as llama.cpp tokenizes it (no BOS for SmolLM2)
    ids = [504, 2365, 6354, 16438, 27003, 690, 260, 23790, 2767, 30, 4027, 1980, 253, 655]
    ref = RefModel(smollm2_path)
    want = ref.forward(ids)
    del ref
    ours = eval_logits(smollm2_path, ids, tmp_path).astype(np.float64)
    nmax, nrms, msg = normalised_diff(ours, want)
    print("llama3c vs float64 reference: " + msg)
    assert nmax <= REF_TOL[0] and nrms <= REF_TOL[1], f"vs reference (tol {REF_TOL} x rms): " + msg


@pytest.mark.parametrize("prompt", PROMPTS, ids=range(len(PROMPTS)))
def test_greedy_matches_llama_cpp(llama3c, smollm2_path, lcpp_model, prompt):
    """Compares all N_GEN steps: after a tolerated near tie, our engine is restarted on llama.cpp's
    path (prompt + llama.cpp's tokens so far) so the remaining steps are still compared."""
    ids = lcpp_prompt_ids(lcpp_model, prompt)
    want, rows = lcpp_greedy(lcpp_model, ids, N_GEN)
    ties, start = [], 0
    while start < N_GEN:
        ours = generate_ids(smollm2_path, ids + want[:start], N_GEN - start)
        assert len(ours) == N_GEN - start, f"generated {len(ours)} ids, expected {N_GEN - start}"
        first = next((start + i for i, t in enumerate(ours) if t != want[start + i]), None)
        if first is None:
            break
        row = rows[first]
        mine = ours[first - start]
        margin = float(row[want[first]] - row[mine])
        msg = (f"{prompt!r}: greedy differs at step {first}: ours {mine} vs llama.cpp {want[first]}; "
               f"llama.cpp logit gap between the two {margin:.4f} (near-tie margin {GREEDY_TIE_MARGIN}); "
               f"common prefix {want[:first]}; earlier near ties {ties}")
        assert margin <= GREEDY_TIE_MARGIN, msg
        ties.append((first, round(margin, 4)))
        assert len(ties) <= 3, "more than 3 near ties: " + msg
        start = first + 1
    if ties:
        print(f"near ties (step, llama.cpp gap) accepted for {prompt!r}: {ties}")


def test_chat_mentions_paris(llama3c, smollm2_path):
    """Coherence. The bare "What is the capital of France?" is a near tie at the first answer token
    in llama.cpp too (gap 0.09 between "L" and "The"; greedy then rambles "L'Étoile, la Cité..."),
    so the test uses the demo's prompt, whose greedy answer in llama.cpp is "The capital of France
    is Paris." with top-2 gaps >= 0.88 over its first 7 tokens."""
    p = run_cli("chat", "-m", smollm2_path, "-p", "What is the capital of France? Answer in one sentence.",
                "-n", 48, "--temp", 0,
                "--seed", 1, "-t", THREADS)
    assert "Paris" in p.stdout, f"answer does not mention Paris: {p.stdout!r}"
