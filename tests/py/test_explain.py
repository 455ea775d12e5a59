"""`llama3c explain`: the walk-through's numbers come from the file.

Independent checks: parameter counts against gguf.GGUFReader's tensor list, the card of a
Llama-3-8B-shaped file against Meta's published hyperparameters (params.json in ../shared/data),
the traced run's final logits against `llama3c eval` (the plain forward pass, tracing off), and
the HTML page rendered by headless Chromium.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import DATA, REPO, run_cli

SHAPED = os.path.join(REPO, "tools", "make_shaped_gguf.py")


def file_param_count(path):
    import gguf

    r = gguf.GGUFReader(path)
    return sum(int(t.n_elements) for t in r.tensors), r


def parse_components(text):
    """{component: whole-model count} from the "Parameters per component" table."""
    out = {}
    sect = text.split("== Parameters per component", 1)[1].split("==", 1)[0]
    for line in sect.splitlines()[2:]:
        m = re.match(r"\s+(.+?)\s{2,}(\d+)?\s+(\d+)\s+[\d.]+%", line)
        if m:
            out[m.group(1).strip()] = int(m.group(3))
    return out


@pytest.fixture(scope="module")
def llama3_8b_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("shaped") / "llama3-8b-q4km.gguf")
    subprocess.run([sys.executable, SHAPED, path, "--preset", "llama3-8b", "--type", "Q4_K_M",
                    "--data", "zeros"], check=True, capture_output=True)
    return path


def test_param_counts_sum_to_file_total(llama3c, smollm2_path):
    text = run_cli("explain", "-m", smollm2_path, "--no-trace").stdout
    total, reader = file_param_count(smollm2_path)
    comps = parse_components(text)
    assert comps["total"] == total
    assert sum(v for k, v in comps.items() if k != "total") == total
    # per-component figures equal the file's tensors grouped by name
    q = sum(int(t.n_elements) for t in reader.tensors if t.name.endswith("attn_q.weight"))
    down = sum(int(t.n_elements) for t in reader.tensors if t.name.endswith("ffn_down.weight"))
    assert comps["attention q"] == q and comps["ffn down"] == down


def test_llama3_8b_card(llama3c, llama3_8b_file):
    text = run_cli("explain", "-m", llama3_8b_file, "--no-trace").stdout
    with open(os.path.join(DATA, "llama3-tokenizer", "Meta-Llama-3-8B.params.json")) as f:
        meta = json.load(f)

    def field(label):
        m = re.search(r"^\s+%s\s+(\d+)" % re.escape(label), text, re.M)
        assert m, f"'{label}' missing from:\n{text[:2000]}"
        return int(m.group(1))

    assert field("vocabulary") == meta["vocab_size"] == 128256
    assert field("features (dim)") == meta["dim"] == 4096
    assert field("blocks (layers)") == meta["n_layers"] == 32
    assert field("query heads") == meta["n_heads"] == 32
    assert field("key/value heads") == meta["n_kv_heads"] == 8
    assert field("head dimension") == 128
    assert field("FFN hidden") == 14336
    # Meta's rule with the params.json values, not the popular 1.3 x 4096 = 5325
    assert "x ffn_dim_multiplier 1.3" in text
    assert "multiple of %d -> 14336" % meta["multiple_of"] in text
    total, _ = file_param_count(llama3_8b_file)
    assert total == 8030261248
    assert "(8.03B)" in text and str(total) in text


def test_traced_logits_equal_plain_forward(llama3c, smollm2_path, tmp_path):
    prompt = "The capital of France is"
    out = tmp_path / "explain.f32"
    p = run_cli("explain", "-m", smollm2_path, "-p", prompt, "--logits-out", out, "-t", 1)
    ids = re.search(r"token ids \(T = \d+\):([\d ]+)", p.stdout).group(1).split()
    ours = np.fromfile(out, dtype="<f4")
    plain = tmp_path / "eval.f32"
    run_cli("eval", "-m", smollm2_path, "--ids", " ".join(ids), "--logits-out", plain, "-t", 1)
    ref = np.fromfile(plain, dtype="<f4")
    assert ours.shape == ref.shape and ours.size > 1000
    # tracing must not change results: same kernels, same order -> bit-identical
    assert np.array_equal(ours, ref), f"max abs diff {np.abs(ours - ref).max()}"
    top = re.findall(r"^\s+(\d+)\s+\S+\s+p = ([\d.]+)$", p.stdout, re.M)
    assert int(top[0][0]) == int(np.argmax(ref))
    e = np.exp(ref - ref.max())
    assert abs(float(top[0][1]) - e.max() / e.sum()) < 1e-3


def test_layers_heads_and_limits(llama3c, smollm2_path):
    text = run_cli("explain", "-m", smollm2_path, "--layers", "3", "--heads", "1,2",
                   "--values", "2").stdout
    assert "-- block 3" in text and "-- block 0" not in text
    assert text.count("probabilities (T x positions)") == 2
    bad = run_cli("explain", "-m", smollm2_path, "--layers", "99", check=False)
    assert bad.returncode == 2 and "layers" in bad.stderr


def test_corrupted_model_clear_error(llama3c, smollm2_path, tmp_path):
    with open(smollm2_path, "rb") as f:
        head = f.read(4096)
    bad = tmp_path / "truncated.gguf"
    bad.write_bytes(head)
    p = run_cli("explain", "-m", bad, check=False)
    assert p.returncode == 1
    assert "truncated.gguf" in p.stderr and "Traceback" not in p.stderr
    p = run_cli("explain", "-m", tmp_path / "missing.gguf", check=False)
    assert p.returncode == 1 and "missing.gguf" in p.stderr


def test_html_page_renders(llama3c, smollm2_path, tmp_path):
    page = tmp_path / "explain.html"
    run_cli("explain", "-m", smollm2_path, "--html", page, "--heads", "0,1")
    html = page.read_text()
    assert "<svg id='diagram'" in html and "x 30 blocks" in html
    # self-contained: no external URLs, scripts, stylesheets or images
    assert not re.search(r"(src|href)\s*=|https?://|@import|url\((?!#)", html)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("chromium is not installed (apt-get install chromium); page not rendered")
    art = os.path.join(REPO, os.environ.get("L3C_BUILD", "build"), "test-artifacts")
    os.makedirs(art, exist_ok=True)
    png = os.path.join(art, "explain.png")
    if os.path.exists(png):
        os.remove(png)
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1000,1400", "--screenshot=" + png, "file://" + str(page)],
                   capture_output=True, timeout=120)
    assert os.path.exists(png), "chromium wrote no screenshot"
    with open(png, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (w, h) == (1000, 1400)
    # non-blank: decode with zlib and look for many distinct pixel values
    import zlib

    chunks, i = b"", 8
    while i < len(data):
        n = int.from_bytes(data[i:i + 4], "big")
        if data[i + 4:i + 8] == b"IDAT":
            chunks += data[i + 8:i + 8 + n]
        i += 12 + n
    raw = zlib.decompress(chunks)
    assert len(set(raw[::97])) > 8, "the screenshot looks blank"
