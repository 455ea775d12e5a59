"""Llama 3 tokenizer vs Meta's reference (tiktoken with Meta's pattern and special tokens).

Reference: tiktoken.Encoding built offline from /work/shared/data/llama3-tokenizer/tokenizer.model
(tokenizer_corpus.llama3_reference). Tolerance: none -- token-for-token equality.
- the README's known examples;
- the 1.1 MB corpus (tokenizer_corpus.py) part by part as large chunks, and paragraph by
  paragraph (many paragraphs in one call, separated by <|end_of_text|> with --special, which
  makes each paragraph an independent text);
- decode(encode(x)) == x on the whole corpus, invalid UTF-8 included;
- the three loaders (tiktoken file, a GGUF gpt2/llama-bpe vocabulary and a tokenizer.json, both
  written here from the ranks with merges derived as Hugging Face's converter does) give identical ids;
- special-token parsing, BOS handling, and very long single pieces (1 MB of one character).
"""
import json
import os
import subprocess
import time

import pytest

from conftest import BIN, DATA, REPO
import tokenizer_corpus as tc

TOKMODEL = os.path.join(DATA, tc.LLAMA3_MODEL)

pytestmark = pytest.mark.skipif(not os.path.exists(TOKMODEL), reason=f"Llama 3 tokenizer.model not found at {TOKMODEL}")


def tokenize(path, data, *flags, tmp=None):
    """ids from `llama3c tokenize --ids` on data (bytes) given through a file."""
    f = os.path.join(tmp, "in.bin")
    with open(f, "wb") as fh:
        fh.write(data)
    p = subprocess.run([BIN, "tokenize", "--tokenizer", path, "--ids", "-f", f, *flags], capture_output=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    return [int(x) for x in p.stdout.split()]


def detokenize(path, ids, *flags):
    p = subprocess.run([BIN, "detokenize", "--tokenizer", path, *flags], input=" ".join(map(str, ids)).encode(),
                       capture_output=True, timeout=300)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    return p.stdout


def first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def assert_same(ours, ref, what, enc=None):
    if ours != ref:
        i = first_diff(ours, ref)
        ctx = ""
        if enc is not None:
            ctx = repr(enc.decode_bytes([t for t in ref[max(0, i - 3):i + 4] if t < 128000]))
        pytest.fail(f"{what}: first difference at token {i} (ours {len(ours)}, ref {len(ref)} tokens): "
                    f"ref {ref[max(0, i - 3):i + 4]} ours {ours[max(0, i - 3):i + 4]} {ctx}", pytrace=False)


@pytest.fixture(scope="module")
def enc():
    tiktoken = pytest.importorskip("tiktoken", reason="tiktoken (the reference) is not installed")
    del tiktoken
    return tc.llama3_reference(DATA)


@pytest.fixture(scope="module")
def parts():
    return tc.corpus_parts()


def test_known_examples(llama3c, tmp_path):
    assert tokenize(TOKMODEL, b"This is a test sentence.", "--bos", tmp=tmp_path) + [128001] == \
        [128000, 2028, 374, 264, 1296, 11914, 13, 128001]
    chat = b"<|start_header_id|>user<|end_header_id|>\n\nThis is a test sentence.<|eot_id|>"
    assert tokenize(TOKMODEL, chat, "--special", tmp=tmp_path) == \
        [128006, 882, 128007, 271, 2028, 374, 264, 1296, 11914, 13, 128009]


def test_corpus_large_chunks(llama3c, enc, parts, tmp_path):
    assert sum(len(b) for _, b in parts) >= 1_000_000
    for name, data in parts:
        assert_same(tokenize(TOKMODEL, data, tmp=tmp_path), tc.ref_encode(enc, data), f"part {name}", enc)
    whole = b"".join(b for _, b in parts)
    assert_same(tokenize(TOKMODEL, whole, tmp=tmp_path), tc.ref_encode(enc, whole), "whole corpus", enc)


def test_corpus_per_paragraph_and_line(llama3c, enc, parts, tmp_path):
    sep = b"<|end_of_text|>"
    for unit in (b"\n\n", b"\n"):
        pieces = [p for _, data in parts for p in data.split(unit) if p]
        ref = []
        for i, p in enumerate(pieces):
            if i:
                ref.append(128001)
            ref += tc.ref_encode(enc, p)
        ours = tokenize(TOKMODEL, sep.join(pieces), "--special", tmp=tmp_path)
        assert_same(ours, ref, f"{len(pieces)} units split at {unit!r}", enc)


def test_round_trip(llama3c, parts, tmp_path):
    whole = b"".join(b for _, b in parts)
    ids = tokenize(TOKMODEL, whole, tmp=tmp_path)
    assert detokenize(TOKMODEL, ids) == whole


def test_specials_and_bos(llama3c, tmp_path):
    text = b"<|begin_of_text|>hi<|eot_id|>"
    plain = tokenize(TOKMODEL, text, tmp=tmp_path)
    assert 128000 not in plain and 128009 not in plain  # plain text by default
    assert tokenize(TOKMODEL, text, "--special", tmp=tmp_path) == [128000, 6151, 128009]
    # BOS never doubled when the text already starts with it (special parsing on)
    assert tokenize(TOKMODEL, text, "--special", "--bos", tmp=tmp_path) == [128000, 6151, 128009]
    assert tokenize(TOKMODEL, text, "--bos", tmp=tmp_path)[:2] == [128000, plain[0]]
    # longest match: <|reserved_special_token_25|> is not <|reserved_special_token_2|> + "5|>"
    assert tokenize(TOKMODEL, b"<|reserved_special_token_25|>", "--special", tmp=tmp_path) == [128030]
    assert detokenize(TOKMODEL, [128000, 6151, 128009]) == text
    assert detokenize(TOKMODEL, [128000, 6151, 128009], "--skip-special") == b"hi"


@pytest.mark.parametrize("ch", [b" ", b"a", b"7", b"\n", "日".encode(), b"\xff"])
def test_long_single_piece(llama3c, enc, ch, tmp_path):
    small = ch * 20000  # tiktoken's merge loop is quadratic: compare at 20 KB
    assert_same(tokenize(TOKMODEL, small, tmp=tmp_path), tc.ref_encode(enc, small), f"20 KB of {ch!r}", enc)
    big = ch * 1_000_000
    t = time.time()
    ids = tokenize(TOKMODEL, big, tmp=tmp_path)
    dt = time.time() - t
    assert dt < 20, f"1 MB of {ch!r} took {dt:.1f} s (expected O(n log n))"
    assert detokenize(TOKMODEL, ids) == big


# ---------------------------------------------------------------- the other two loaders

def _bytes_to_unicode():
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def derive_merges(ranks):
    """Merges as Hugging Face's tiktoken converter derives them: every split (a, b) of a token
    where a and b are tokens too, ordered by (rank of a+b, rank of a, rank of b). (A single merge
    per token is not enough: Llama 3 has tokens such as '.:.:' that BPE over lower ranks never
    builds from two parts.)"""
    merges = []
    for tok, r in ranks.items():
        for k in range(1, len(tok)):
            a, b = tok[:k], tok[k:]
            if a in ranks and b in ranks:
                merges.append((r, ranks[a], ranks[b], a, b))
    merges.sort()
    return [(a, b) for _, _, _, a, b in merges]


@pytest.fixture(scope="module")
def other_loaders(tmp_path_factory):
    gguf = pytest.importorskip("gguf", reason="gguf (gguf-py) writes the GGUF vocabulary")
    from tiktoken.load import load_tiktoken_bpe
    d = tmp_path_factory.mktemp("llama3tok")
    ranks = load_tiktoken_bpe(TOKMODEL)
    b2u = _bytes_to_unicode()
    enc_text = lambda b: "".join(b2u[x] for x in b)
    by_id = sorted(ranks.items(), key=lambda kv: kv[1])
    assert [r for _, r in by_id] == list(range(len(by_id)))
    specials = tc.llama3_special_tokens()
    tokens = [enc_text(b) for b, _ in by_id] + list(specials)
    merges = [f"{enc_text(a)} {enc_text(b)}" for a, b in derive_merges(ranks)]

    gpath = str(d / "llama3-vocab.gguf")
    w = gguf.GGUFWriter(gpath, "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(tokens)
    w.add_token_types([1] * len(by_id) + [3] * len(specials))
    w.add_token_merges(merges)
    w.add_bos_token_id(128000)
    w.add_eos_token_id(128001)
    w.add_eot_token_id(128009)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    jpath = str(d / "tokenizer.json")
    tj = {
        "version": "1.0",
        "added_tokens": [{"id": i, "content": s, "special": True} for s, i in specials.items()],
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": tc.PAT}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "model": {"type": "BPE", "ignore_merges": True, "byte_fallback": False,
                  "vocab": {t: i for i, t in enumerate(tokens[:len(by_id)])},
                  "merges": [m.split(" ") for m in merges[: len(merges) // 2]] + merges[len(merges) // 2:]},
    }
    with open(jpath, "w", encoding="utf-8") as fh:
        json.dump(tj, fh, ensure_ascii=False)
    return gpath, jpath


def test_three_loaders_agree(llama3c, enc, parts, other_loaders, tmp_path):
    gpath, jpath = other_loaders
    sample = b"".join(data[:60000] for _, data in parts)
    ref = tc.ref_encode(enc, sample)
    assert_same(tokenize(TOKMODEL, sample, tmp=tmp_path), ref, "tiktoken loader", enc)
    assert_same(tokenize(gpath, sample, tmp=tmp_path), ref, "GGUF loader", enc)
    assert_same(tokenize(jpath, sample, tmp=tmp_path), ref, "tokenizer.json loader", enc)
    chat = b"<|start_header_id|>user<|end_header_id|>\n\nThis is a test sentence.<|eot_id|>"
    for p in (gpath, jpath):
        assert tokenize(p, chat, "--special", "--bos", tmp=tmp_path) == \
            [128000, 128006, 882, 128007, 271, 2028, 374, 264, 1296, 11914, 13, 128009]
        assert detokenize(p, ref) == sample
