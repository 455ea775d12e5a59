"""Training data (src/train/data.c) through build/tests/data_dump (tests/train/data_dump.c).

References, all independent of the C code:
- chat masks: the conversation rendered by jinja2 exactly as Hugging Face's apply_chat_template
  renders it (test_chat_template.render) with the model's own template (SmolLM2's GGUF
  tokenizer.chat_template: ChatML with its default system message; Meta's Llama 3 and Llama 3.1
  templates on a tiny model with the real Llama 3 vocabulary), tokenized by the reference tokenizer
  (llama-cpp-python for SmolLM2, tiktoken with Meta's tokenizer.model for Llama 3). A token is
  expected trained iff its bytes lie inside an assistant span: from the end of the text rendered up
  to that message with add_generation_prompt (the assistant header) through the end-of-turn marker
  (<|im_end|> / <|eot_id|>) that follows; a token straddling the start (the header's newline merged
  with a leading space of the content) is trained. Ids and masks must be equal token for token.
- text windows: the reference tokenization of the whole file (BOS when the vocabulary adds one) cut
  by the documented rule (T+1 tokens, stride T, last partial window kept if >= min_tokens).
- batches: re-derived in Python from the dumped examples (inputs tok[t], targets tok[t+1] where the
  mask is set, else -1; padding), each epoch a permutation, a resumed run == an uninterrupted one.
- split: disjoint, complete, sized round(n * frac), reproducible from the seed.
- bad files: exit 1 and a message naming file:line and the fault.
Tolerance: none (exact ids, masks, lines, messages).
"""
import json
import os
import subprocess

import pytest

from conftest import BIN, DATA, HERE, llama_cpp_or_skip
from test_chat_template import LLAMA3_TEMPLATE, render

DUMP = os.path.join(os.path.dirname(BIN), "tests", "data_dump")
LLAMA3_TOKMODEL = os.path.join(DATA, "llama3-tokenizer", "tokenizer.model")

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Spell 'cat' backwards."},
     {"role": "assistant", "content": "tac"}, {"role": "user", "content": "And 'dog'?"},
     {"role": "assistant", "content": "god."}],
    [{"role": "user", "content": "  Convert 3 km to metres.  "}, {"role": "assistant", "content": " 3000 m \n"}],
    [{"role": "user", "content": "Ünïcödé 東京 🙂?\n\nline two"}, {"role": "assistant", "content": "Yes: 東京 🙂\tok"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 0},
     {"role": "user", "content": "c"}, {"role": "assistant", "content": "d e f"}],
]


@pytest.fixture(scope="session")
def dump_bin():
    if not os.access(DUMP, os.X_OK):
        pytest.skip(f"{DUMP} is not built (run `make`)")
    return DUMP


def run_dump(*args, ok=True):
    p = subprocess.run([DUMP, *map(str, args)], capture_output=True, timeout=300)
    if ok:
        assert p.returncode == 0, p.stderr.decode(errors="replace")
        return json.loads(p.stdout)
    return p


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def expected_mask(template, msgs, bos, eot, token_bytes, **kw):
    """Per-token expected mask from the rendered text's assistant spans (bytes)."""
    text = render(template, msgs, bos, add_generation_prompt=False, **kw).encode("utf-8")
    spans = []
    for i, m in enumerate(msgs):
        if m["role"] != "assistant" or m.get("weight", 1) == 0:
            continue
        start = len(render(template, msgs[:i], bos, add_generation_prompt=True, **kw).encode("utf-8"))
        through = render(template, msgs[:i + 1], bos, add_generation_prompt=False, **kw).encode("utf-8")
        assert text.startswith(through)
        end = through.index(eot.encode(), start) + len(eot)
        spans.append((start, end))
    assert b"".join(token_bytes) == text, "reference token bytes do not concatenate to the text"
    mask, o = [], 0
    for tb in token_bytes:
        a, b = o, o + len(tb)
        for s, e in spans:
            assert not a < e < b, f"token {tb!r} straddles the end of an assistant turn"
        # a token that starts in the header and ends in the content (ChatML "\n" + " 3000": "\n ")
        # carries content: trained
        mask.append(int(any(a < e and s < b for s, e in spans)))
        o = b
    return text, mask


# ---------------------------------------------------------------- chat masks

@pytest.fixture(scope="module")
def smol(smollm2_path):
    gguf = pytest.importorskip("gguf", reason="gguf-py is not installed")
    r = gguf.GGUFReader(smollm2_path)
    return {"path": smollm2_path, "template": r.fields["tokenizer.chat_template"].contents()}


def test_chatml_masks_vs_jinja_and_llama_cpp(dump_bin, smol, tmp_path):
    llama_cpp = llama_cpp_or_skip()
    vocab = llama_cpp.Llama(model_path=smol["path"], vocab_only=True, verbose=False)
    got = run_dump("-m", smol["path"], "--data", write_jsonl(tmp_path / "c.jsonl", [{"messages": c} for c in CONVERSATIONS]),
                   "--seq", 512)
    assert got["format"] == "chat" and len(got["examples"]) == len(CONVERSATIONS)
    for ex, msgs in zip(got["examples"], CONVERSATIONS):
        text = render(smol["template"], msgs, add_generation_prompt=False).encode("utf-8")
        ids = vocab.tokenize(text, add_bos=False, special=True)
        tb = [vocab.detokenize([t], special=True) for t in ids]
        _, mask = expected_mask(smol["template"], msgs, "", "<|im_end|>", tb)
        assert ex["tokens"] == ids
        assert ex["mask"] == mask, [(vocab.detokenize([t], special=True), m, w) for t, m, w in zip(ids, ex["mask"], mask)
                                    if m != w]
        assert ex["n_trained"] == sum(mask[1:]) > 0


@pytest.fixture(scope="module")
def llama3_models(tiny_model):
    if not os.path.exists(LLAMA3_TOKMODEL):
        pytest.skip(f"Llama 3 tokenizer.model not found at {LLAMA3_TOKMODEL}")
    import gen_models

    with open(os.path.join(HERE, "data", "llama31_instruct.jinja"), encoding="utf-8") as f:
        llama31 = f.read()
    out = {}
    for name, tmpl in (("llama3", LLAMA3_TEMPLATE), ("llama31", llama31)):
        spec = gen_models.ModelSpec(n_embd=64, n_layer=1, n_head=2, n_head_kv=2, n_ff=128, n_vocab=128256,
                                    llama3_vocab=LLAMA3_TOKMODEL,
                                    kv=(("tokenizer.chat_template", tmpl), ("tokenizer.ggml.add_bos_token", True)))
        out[name] = (tiny_model(f"data_{name}", spec, "F32"), tmpl)
    return out


@pytest.fixture(scope="module")
def tiktoken_enc():
    pytest.importorskip("tiktoken", reason="tiktoken (the reference) is not installed")
    import tokenizer_corpus as tc

    return tc.llama3_reference(DATA)


@pytest.mark.parametrize("which", ["llama3", "llama31"])
def test_llama3_masks_vs_jinja_and_tiktoken(dump_bin, llama3_models, tiktoken_enc, which, tmp_path):
    path, tmpl = llama3_models[which]
    got = run_dump("-m", path, "--data", write_jsonl(tmp_path / "c.jsonl", [{"messages": c} for c in CONVERSATIONS]),
                   "--seq", 512)
    assert len(got["examples"]) == len(CONVERSATIONS)
    for ex, msgs in zip(got["examples"], CONVERSATIONS):
        text = render(tmpl, msgs, "<|begin_of_text|>", add_generation_prompt=False)
        ids = tiktoken_enc.encode(text, allowed_special="all")
        tb = [tiktoken_enc.decode_single_token_bytes(t) for t in ids]
        _, mask = expected_mask(tmpl, msgs, "<|begin_of_text|>", "<|eot_id|>", tb)
        assert ex["tokens"] == ids
        assert ex["mask"] == mask
        assert ids[0] == 128000 and 128009 in [t for t, m in zip(ids, mask) if m]  # <|eot_id|> trained


def test_truncate_drop_and_empty(dump_bin, smol, tmp_path):
    long = [{"role": "user", "content": "Count."}, {"role": "assistant", "content": " ".join(map(str, range(200)))}]
    recs = [{"messages": long}, {"messages": CONVERSATIONS[0]}, {"messages": [{"role": "user", "content": "x"}]}]
    f = write_jsonl(tmp_path / "c.jsonl", recs)
    full = run_dump("-m", smol["path"], "--data", f, "--seq", 4096)
    n_long = len(full["examples"][0]["tokens"])
    cut = run_dump("-m", smol["path"], "--data", f, "--seq", 64)
    assert (cut["n_records"], cut["n_truncated"], cut["n_dropped_empty"], len(cut["examples"])) == (3, 1, 1, 2)
    assert cut["examples"][0]["tokens"] == full["examples"][0]["tokens"][:65]
    assert cut["examples"][0]["mask"] == full["examples"][0]["mask"][:65]
    assert cut["n_tokens_cut"] == n_long - 65
    drop = run_dump("-m", smol["path"], "--data", f, "--seq", 64, "--drop-long")
    assert (drop["n_dropped_long"], drop["n_truncated"], [e["line"] for e in drop["examples"]]) == (1, 0, [2])
    p = subprocess.run([DUMP, "-m", smol["path"], "--data", str(f), "--seq", "64", "--describe"], capture_output=True)
    assert b"1 of 3 conversations longer than 65 tokens truncated" in p.stderr


# ---------------------------------------------------------------- text

def windows(ids, T, min_tokens=2):
    out = []
    for s in range(0, max(len(ids) - 1, 0), T):
        w = ids[s:s + T + 1]
        if len(w) < T + 1 and s > 0 and len(w) < min_tokens:
            break
        out.append(w)
    return out


TEXT = ("In the beginning God created the heaven and the earth.\n"
        "And the earth was without form, and void; and darkness was upon the face of the deep.\n\n"
        "Numbers 1234567 and tabs\tand unicode: ça va? 東京 🙂 <|eot_id|> <|im_end|> stay text.\n") * 7


@pytest.mark.parametrize("T,min_tokens", [(16, 2), (7, 5), (1000, 2)])
def test_text_windows_smollm2(dump_bin, smol, tmp_path, T, min_tokens):
    llama_cpp = llama_cpp_or_skip()
    vocab = llama_cpp.Llama(model_path=smol["path"], vocab_only=True, verbose=False)
    f = tmp_path / "book.txt"
    f.write_text(TEXT, encoding="utf-8")
    got = run_dump("-m", smol["path"], "--data", f, "--seq", T, "--min-tokens", min_tokens)
    ids = vocab.tokenize(TEXT.encode(), add_bos=True, special=False)
    want = windows(ids, T, min_tokens)
    assert got["format"] == "text" and [e["tokens"] for e in got["examples"]] == want
    assert all(all(e["mask"]) for e in got["examples"])
    # every token but the first is a target exactly once (unless a short tail was dropped)
    assert got["n_trained"] + got["n_tokens_cut"] == len(ids) - 1


def test_text_and_jsonl_text_llama3(dump_bin, llama3_models, tiktoken_enc, tmp_path):
    path = llama3_models["llama3"][0]
    # BOS as the vocabulary asks (tokenizer.ggml.add_bos_token true, as in Meta's GGUFs); llama.cpp agrees
    vocab = llama_cpp_or_skip().Llama(model_path=path, vocab_only=True, verbose=False)
    bos = [128000]
    assert vocab.tokenize(b"x", add_bos=True)[0] == 128000
    f = tmp_path / "book.txt"
    f.write_text(TEXT, encoding="utf-8")
    got = run_dump("-m", path, "--data", f, "--seq", 32)
    ids = bos + tiktoken_enc.encode(TEXT, disallowed_special=())
    assert [e["tokens"] for e in got["examples"]] == windows(ids, 32)
    import gguf

    eos = int(gguf.GGUFReader(path).fields["tokenizer.ggml.eos_token_id"].contents())
    docs = ["First document.", "Second, longer document " * 20, "", "x"]
    g = write_jsonl(tmp_path / "docs.jsonl", [{"text": d} for d in docs])
    got = run_dump("-m", path, "--data", g, "--seq", 32)
    want = [(i + 1, w) for i, d in enumerate(docs)
            for w in windows(bos + tiktoken_enc.encode(d, disallowed_special=()) + [eos], 32)]
    assert got["format"] == "jsonl" and [e["tokens"] for e in got["examples"]] == [w for _, w in want]


# ---------------------------------------------------------------- batches and split

def check_row(ids, tgt, ex, T, pad):
    L = min(len(ex["tokens"]), T + 1) if ex else 0
    for t in range(T):
        assert ids[t] == (ex["tokens"][t] if t < L else pad)
        want = ex["tokens"][t + 1] if ex and t + 1 < L and ex["mask"][t + 1] else -1
        assert tgt[t] == want


def test_batches_reproducible_and_resumable(dump_bin, smol, tmp_path):
    f = tmp_path / "book.txt"
    f.write_text(TEXT, encoding="utf-8")
    B, T = 3, 16
    n = len(run_dump("-m", smol["path"], "--data", f, "--seq", T)["examples"])
    spe = -(-n // B)
    n_steps = 2 * spe + 2  # crosses two epoch boundaries
    assert n % B, "want a partial last batch"
    a = run_dump("-m", smol["path"], "--data", f, "--seq", T, "--batch", B, "--steps", n_steps, "--seed", 7)
    exs = a["examples"]
    seen = {}
    for s in a["steps"]:
        assert (s["epoch"], s["start"]) == (s["step"] // spe, (s["step"] % spe) * B)
        ids, tgt = s["ids"], s["targets"]
        rows = []
        for b in range(B):
            r_ids, r_tgt = ids[b * T:(b + 1) * T], tgt[b * T:(b + 1) * T]
            if s["start"] + b >= n:
                check_row(r_ids, r_tgt, None, T, a["pad_id"])
                continue
            match = [i for i, e in enumerate(exs) if e["tokens"][:T] == r_ids[:len(e["tokens"][:T])]]
            assert match, "row is no example"
            check_row(r_ids, r_tgt, exs[match[0]], T, a["pad_id"])
            rows.append(match[0])
        seen.setdefault(s["epoch"], []).extend(rows)
        assert s["n_trained"] == s["counted"] == sum(t >= 0 for t in tgt)
    for ep, rows in seen.items():
        if len(rows) == n:
            assert sorted(rows) == list(range(n)), f"epoch {ep} is not a permutation"
    assert seen[0] != seen[1], "epochs 0 and 1 in the same order"
    # resuming at step k gives the same batches; the same seed, the same run; another seed differs
    k = 5
    r = run_dump("-m", smol["path"], "--data", f, "--seq", T, "--batch", B, "--steps", n_steps - k,
                 "--from-step", k, "--seed", 7)
    assert r["steps"] == a["steps"][k:]
    assert run_dump("-m", smol["path"], "--data", f, "--seq", T, "--batch", B, "--steps", n_steps, "--seed", 7) == a
    c = run_dump("-m", smol["path"], "--data", f, "--seq", T, "--batch", B, "--steps", n_steps, "--seed", 8)
    assert c["steps"] != a["steps"]


@pytest.mark.parametrize("frac", [0.05, 0.3, 0.5])
def test_split_disjoint_and_seeded(dump_bin, smol, tmp_path, frac):
    recs = [{"messages": [{"role": "user", "content": f"{i}+1?"}, {"role": "assistant", "content": str(i + 1)}]}
            for i in range(40)]
    f = write_jsonl(tmp_path / "c.jsonl", recs)
    a = run_dump("-m", smol["path"], "--data", f, "--seq", 64, "--split", frac, "--seed", 1)
    tr, ev = a["train"], a["eval"]
    assert not set(tr) & set(ev) and sorted(tr + ev) == list(range(1, 41))
    assert len(ev) == max(1, round(40 * frac)) and tr == sorted(tr) and ev == sorted(ev)
    assert run_dump("-m", smol["path"], "--data", f, "--seq", 64, "--split", frac, "--seed", 1)["eval"] == ev
    assert run_dump("-m", smol["path"], "--data", f, "--seq", 64, "--split", frac, "--seed", 2)["eval"] != ev


# ---------------------------------------------------------------- errors

GOOD = json.dumps({"messages": CONVERSATIONS[0]})
BAD_FILES = [
    ("badjson.jsonl", (GOOD + "\n\n{\"messages\": [}\n").encode(), r"badjson.jsonl:3: bad JSON at column"),
    ("missing.jsonl", (GOOD + "\n" + json.dumps({"msgs": []}) + "\n").encode(), r'missing.jsonl:2: missing "messages"'),
    ("role.jsonl", (GOOD + "\n" + json.dumps({"messages": [{"role": "robot", "content": "x"}]}) + "\n").encode(),
     r'role.jsonl:2: message 1: unknown role "robot"'),
    ("content.jsonl", (json.dumps({"messages": [{"role": "user", "content": 5}]}) + "\n").encode(),
     r'content.jsonl:1: message 1 \(user\): "content" is not a string'),
    ("notobj.jsonl", (GOOD + "\n[1, 2]\n").encode(), r"notobj.jsonl:2: expected a JSON object per line"),
    ("utf8.jsonl", (GOOD + "\n" + GOOD[:20]).encode() + b"\xff\xfe" + GOOD[20:].encode() + b"\n",
     r"utf8.jsonl:2: invalid UTF-8 \(byte 0xff at column 21\)"),
    ("latin1.txt", "café\nna\xefve\n".encode("latin-1"), r"latin1.txt:1: invalid UTF-8"),
    ("empty.txt", b"  \n\n", r"empty.txt: empty file"),
    ("neither.jsonl", b'{"prompt": "x"}\n', r'neither.jsonl:1: neither "messages" \(chat\) nor "text"'),
    ("noassistant.jsonl", (json.dumps({"messages": [{"role": "user", "content": "x"}]}) + "\n").encode(),
     r"noassistant.jsonl: no example with a trained token \(1 records, 1 without one\)"),
    ("weight.jsonl", (json.dumps({"messages": [{"role": "assistant", "content": "x", "weight": 2}]}) + "\n").encode(),
     r'weight.jsonl:1: message 1: "weight" must be 0 or 1'),
    ("first.jsonl", (json.dumps({"messages": [{"role": "assistant", "content": "hi"}]}) + "\n").encode(),
     r"first.jsonl:1: message 1 \(assistant\): the chatml template is not prefix-stable"),
]


@pytest.mark.parametrize("name,data,pattern", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_files_name_file_and_line(dump_bin, smol, tmp_path, name, data, pattern):
    import re

    f = tmp_path / name
    f.write_bytes(data)
    p = run_dump("-m", smol["path"], "--data", f, "--seq", 64, ok=False)
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 1 and re.search(pattern, err), err


def test_missing_file(dump_bin, smol, tmp_path):
    p = run_dump("-m", smol["path"], "--data", tmp_path / "nope.jsonl", ok=False)
    assert p.returncode == 1 and "nope.jsonl: cannot open: No such file" in p.stderr.decode()


# ---------------------------------------------------------------- loss plot (SVG)

def test_loss_plot_svg_maps_back_to_values(dump_bin, tmp_path):
    import math
    import xml.etree.ElementTree as ET

    rows = [{"step": s, "epoch": 0, "loss": 3.0 * math.exp(-s / 40) + 0.4 + 0.05 * math.sin(s), "lr": 1e-4}
            for s in range(1, 201)]
    rows += [{"step": s, "eval_loss": 3.2 * math.exp(-s / 50) + 0.6, "eval_ppl": 1.0} for s in (50, 100, 150, 200)]
    m = tmp_path / "metrics.jsonl"
    m.write_text("".join(json.dumps(r) + "\n" for r in rows))
    svg = tmp_path / "loss.svg"
    p = subprocess.run([DUMP, "--plot", str(m), str(svg), "--title", "LoRA <smollm2> & kjv"], capture_output=True)
    assert p.returncode == 0, p.stderr.decode()
    root = ET.parse(svg).getroot()  # valid XML
    ns = {"s": "http://www.w3.org/2000/svg"}
    assert root.find("s:text[@id='title']", ns).text == "LoRA <smollm2> & kjv"
    rect = {k: float(v) for k, v in root.find("s:rect[@id='plot']", ns).attrib.items() if k in ("x", "y", "width", "height")}
    g = root.find(".//s:g[@id='data']", ns)
    x0, x1, y0, y1 = (float(g.attrib[k]) for k in ("data-x0", "data-x1", "data-y0", "data-y1"))

    def back(px, py):
        return (x0 + (px - rect["x"]) / rect["width"] * (x1 - x0),
                y0 + (rect["y"] + rect["height"] - py) / rect["height"] * (y1 - y0))

    tol_x, tol_y = 0.006 * (x1 - x0) / rect["width"] * 2, 0.006 * (y1 - y0) / rect["height"] * 2
    pts = [tuple(map(float, p.split(","))) for p in g.find("s:polyline[@id='train']", ns).attrib["points"].split()]
    train = [r for r in rows if "loss" in r]
    assert len(pts) == len(train)
    for (px, py), r in zip(pts, train):
        x, y = back(px, py)
        assert abs(x - r["step"]) <= tol_x and abs(y - r["loss"]) <= tol_y
    circles = g.findall("s:g[@id='eval']/s:circle", ns)
    evals = [r for r in rows if "eval_loss" in r]
    assert len(circles) == len(evals)
    for c, r in zip(circles, evals):
        x, y = back(float(c.attrib["cx"]), float(c.attrib["cy"]))
        assert abs(x - r["step"]) <= tol_x and abs(y - r["eval_loss"]) <= tol_y
    # every point inside the plot area; the y ticks sit where their values map
    ys = [r["loss"] for r in train] + [r["eval_loss"] for r in evals]
    assert y0 <= min(ys) and max(ys) <= y1
    yt = root.findall(".//s:text[@class='ytick']", ns)
    xt = root.findall(".//s:text[@class='xtick']", ns)
    assert len(yt) >= 3 and len(xt) >= 3
    for t in yt:
        assert abs(back(rect["x"], float(t.attrib["y"]))[1] - float(t.attrib["data-v"])) <= tol_y
        assert float(t.text) == float(t.attrib["data-v"])
    for t in xt:
        assert abs(back(float(t.attrib["x"]), 0)[0] - float(t.attrib["data-v"])) <= tol_x
    # a bad metrics line is named
    m.write_text('{"step": 1, "loss": 2}\n{"step": \n')
    p = subprocess.run([DUMP, "--plot", str(m), str(svg)], capture_output=True)
    assert p.returncode == 1 and b"metrics.jsonl:2:" in p.stderr
