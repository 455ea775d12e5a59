"""`llama3c rag index` on hostile folders, and query limits (docs/RAG.md "Safety and limits").

Each case ends with a clear message (or a 400) and an index that SQLite's integrity_check passes:
a symlink loop, links to outside the root, a file over --max-file-bytes, a slow or flooding PDF
extractor (a stand-in `pdftotext` script put first on PATH), PDFs already indexed when the
extractor is gone, the same folder named twice (`notes` and `./notes`), a 1 MiB query (CLI and
server), and the model fingerprint of a Hugging Face folder (its content, not its name).

The model is stories260K (a real SentencePiece vocabulary; 1 MB, fast to embed with).
"""
import os
import sqlite3
import stat
import subprocess
import sys
import time

import pytest

from conftest import BIN, run_cli

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


@pytest.fixture(scope="module")
def model(stories_gguf):
    return stories_gguf("f32")


def index(model, db, *roots, extra=(), env=None, cwd=None, timeout=60):
    cmd = [BIN, "rag", "index", "-m", model, "--db", str(db), "--chunk", "32", "--overlap", "4", "-t", "1"]
    cmd += [str(x) for x in extra] + [str(r) for r in roots]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    p.elapsed = time.time() - t0
    return p


def indexed(db):
    con = sqlite3.connect(str(db))
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return sorted(r[0] for r in con.execute("SELECT path FROM files"))
    finally:
        con.close()


def write(path, text):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(str(path), "w") as f:
        f.write(text)


def test_symlink_loop_walks_once(model, tmp_path):
    root = tmp_path / "notes"
    write(root / "a.md", "Once upon a time there was a cat.\n")
    write(root / "sub" / "b.txt", "The dog ran to the park.\n")
    os.symlink(".", root / "loop1")
    os.symlink(".", root / "loop2")
    os.symlink("..", root / "sub" / "up")
    db = tmp_path / "i.db"
    p = index(model, db, root, timeout=30)
    assert p.returncode == 0, p.stderr
    assert "not following the symbolic link" in p.stderr and "--follow-symlinks" in p.stderr
    want = sorted(os.path.realpath(str(x)) for x in [root / "a.md", root / "sub" / "b.txt"])
    assert indexed(db) == want
    # following links: every folder is still entered once (dev/inode set), files once
    db2 = tmp_path / "f.db"
    p = index(model, db2, root, extra=["--follow-symlinks"], timeout=30)
    assert p.returncode == 0, p.stderr
    assert indexed(db2) == want
    assert p.elapsed < 20


def test_links_outside_root_stay_out(model, tmp_path):
    root, outside = tmp_path / "notes", tmp_path / "private"
    write(root / "a.md", "A note about cats.\n")
    write(outside / "secret.md", "The password is swordfish.\n")
    os.symlink(outside / "secret.md", root / "secret.md")
    os.symlink(outside, root / "private")
    db = tmp_path / "i.db"
    p = index(model, db, root)
    assert p.returncode == 0, p.stderr
    assert indexed(db) == [os.path.realpath(str(root / "a.md"))]
    q = run_cli("rag", "query", "-m", model, "--db", db, "--json", "password swordfish")
    import json
    hits = json.loads(q.stdout)["results"]
    assert hits and not any("swordfish" in h["text"] for h in hits)
    # asked for: the link is followed, and the file is stored by its real path, once
    p = index(model, tmp_path / "f.db", root, extra=["--follow-symlinks"])
    assert p.returncode == 0, p.stderr
    assert indexed(tmp_path / "f.db") == sorted([os.path.realpath(str(root / "a.md")),
                                                 os.path.realpath(str(outside / "secret.md"))])


def test_huge_file_skipped_and_kept(model, tmp_path):
    root = tmp_path / "notes"
    write(root / "small.md", "A small note.\n")
    write(root / "big.txt", "word " * 400)  # 2000 bytes
    db = tmp_path / "i.db"
    p = index(model, db, root)
    assert p.returncode == 0, p.stderr
    assert len(indexed(db)) == 2
    p = index(model, db, root, extra=["--max-file-bytes", "1K"])
    assert p.returncode == 0, p.stderr
    assert "big.txt': 2000 bytes, more than --max-file-bytes 1024" in p.stderr, p.stderr
    assert "1 skipped, 0 removed" in p.stderr, p.stderr
    assert len(indexed(db)) == 2  # skipped this time is not removed
    p = index(model, tmp_path / "n.db", root, extra=["--max-file-bytes", "1K"])
    assert indexed(tmp_path / "n.db") == [os.path.realpath(str(root / "small.md"))]
    p = index(model, tmp_path / "x.db", root, extra=["--max-file-bytes", "12Q"])
    assert p.returncode == 2 and "--max-file-bytes: '12Q' is not a size" in p.stderr


def fake_extractor(bindir, body):
    os.makedirs(bindir, exist_ok=True)
    path = os.path.join(bindir, "pdftotext")
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body + "\n")
    os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)
    env = dict(os.environ)
    env["PATH"] = bindir + ":" + env.get("PATH", "")
    return env


def test_slow_and_flooding_extractor(model, tmp_path):
    root = tmp_path / "notes"
    write(root / "a.md", "A note.\n")
    write(root / "doc.pdf", "%PDF-1.4 not really\n")
    db = tmp_path / "i.db"
    env = fake_extractor(str(tmp_path / "slow"), "exec sleep 30")
    p = index(model, db, root, extra=["--extract-timeout", "1"], env=env)
    assert p.returncode == 0, p.stderr
    assert "doc.pdf': pdftotext timed out (killed)" in p.stderr, p.stderr
    assert p.elapsed < 15
    env = fake_extractor(str(tmp_path / "flood"), "exec yes 'flood flood flood'")
    p = index(model, db, root, extra=["--max-file-bytes", "64K"], env=env)
    assert p.returncode == 0, p.stderr
    assert "doc.pdf': pdftotext wrote more text than --max-file-bytes (killed)" in p.stderr, p.stderr
    assert indexed(db) == [os.path.realpath(str(root / "a.md"))]


def test_missing_extractor_keeps_indexed_pdfs(model, tmp_path):
    root = tmp_path / "notes"
    write(root / "a.md", "A note.\n")
    write(root / "doc.pdf", "%PDF-1.4 stand-in\n")
    db = tmp_path / "i.db"
    env = fake_extractor(str(tmp_path / "ok"), "echo 'The lighthouse keeper counts whales.'")
    p = index(model, db, root, env=env)
    assert p.returncode == 0, p.stderr
    assert len(indexed(db)) == 2
    env = dict(os.environ)
    env["PATH"] = str(tmp_path / "empty")  # no pdftotext at all
    p = index(model, db, root, env=env)
    assert p.returncode == 0, p.stderr
    assert "pdftotext (Debian: poppler-utils) is not installed" in p.stderr
    assert "0 removed" in p.stderr
    assert len(indexed(db)) == 2


def test_same_folder_twice(model, tmp_path):
    write(tmp_path / "notes" / "a.md", "A note.\n")
    write(tmp_path / "notes" / "b.md", "Another note.\n")
    db = tmp_path / "i.db"
    p = index(model, db, "notes", "./notes", "notes/", extra=[], cwd=str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert "indexing 2 files" in p.stderr
    assert len(indexed(db)) == 2
    p = index(model, db, "./notes", cwd=str(tmp_path))
    assert "2 unchanged" in p.stderr and len(indexed(db)) == 2


def test_query_limits_cli_and_server(model, tmp_path):
    write(tmp_path / "notes" / "a.md", "A note about the sea.\n")
    db = tmp_path / "i.db"
    assert index(model, db, tmp_path / "notes").returncode == 0
    big = "sea " * (1 << 18)  # 1 MiB: through the server (one argv string is at most 128 KiB)
    p = run_cli("rag", "query", "-m", model, "--db", db, big[:100000], check=False)
    assert p.returncode == 2 and "the query is 100000 bytes; the limit is 4096" in p.stderr, p.stderr
    many = " ".join(f"w{i}" for i in range(100))
    p = run_cli("rag", "query", "-m", model, "--db", db, many, check=False)
    assert p.returncode == 2 and "the query has 100 words; the limit is 64" in p.stderr, p.stderr
    from server_util import Server
    import json
    import urllib.request
    import urllib.error
    # --max-body above the query, so the query limit (not the body limit, 413) answers
    with Server(model, "--rag-db", db, "--pooling", "mean", "--max-body", 4 << 20) as srv:
        req = urllib.request.Request(f"http://127.0.0.1:{srv.port}/v1/rag/query", data=json.dumps({"query": big}).encode(),
                                     headers={"Content-Type": "application/json"})
        t0 = time.time()
        with pytest.raises(urllib.error.HTTPError) as ei:
            urllib.request.urlopen(req, timeout=30)
        assert ei.value.code == 400
        body = json.loads(ei.value.read())
        assert body["error"]["param"] == "query" and "limit is 4096" in body["error"]["message"]
        assert time.time() - t0 < 10
        ok = urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{srv.port}/v1/rag/query", data=json.dumps({"query": "the sea"}).encode(),
            headers={"Content-Type": "application/json"}), timeout=30)
        assert ok.status == 200
    assert indexed(db)


@pytest.mark.slow
def test_hf_folder_fingerprint_is_content(torch_python, tmp_path, tmp_path_factory):
    from torch_ref import make_hf_model
    import shutil
    spec = dict(vocab=320, hidden=64, ff=160, layers=2, heads=4, kv_heads=2, dtype="float32", tied=True,
                rope_scaling=None, max_shard_size=None, seed=3, ids=[1, 2, 3], theta=10000.0,
                tokenizer=True, texts=["hello world"])
    a = str(tmp_path / "m1" / "model")
    make_hf_model(torch_python, a, spec)
    write(tmp_path / "notes" / "a.md", "hello world, a note\n")
    db = tmp_path / "i.db"
    p = index(a, db, tmp_path / "notes")
    assert p.returncode == 0, p.stderr
    # a second folder with the same name and the same files: the same model
    b = str(tmp_path / "m2" / "model")
    shutil.copytree(a, b)
    assert run_cli("rag", "query", "-m", b, "--db", db, "hello", check=False).returncode == 0
    # same name, other weights: refused
    spec["seed"] = 4
    shutil.rmtree(b)
    make_hf_model(torch_python, b, spec)
    q = run_cli("rag", "query", "-m", b, "--db", db, "hello", check=False)
    assert q.returncode != 0 and "was built with a different model" in q.stderr, q.stderr


from torch_ref import torch_python  # noqa: E402,F401  (fixture)


def test_int8_scan_recall_and_reload(model, tmp_path):
    """The int8 matrix + exact rerank finds the float64 top 10 / top 50 (bench/rag_scale.c on
    5,000 random unit vectors, 21 queries), and a serving index sees files indexed after it
    loaded its matrix (the index generation)."""
    exe = os.path.join(os.path.dirname(BIN), "bench", "rag_scale")
    env = dict(os.environ)
    env["TMPDIR"] = str(tmp_path)
    hashes = {}
    for path in ["default", "avx2", "ref"]:  # every dot-product path: the same hits, bit for bit
        if path != "default":
            env["L3C_KERNELS"] = path
        p = subprocess.run([exe, "5000"], capture_output=True, text=True, env=env, timeout=300)
        assert p.returncode == 0, p.stderr
        row = [r for r in p.stdout.splitlines() if r.startswith("| 5000 |")][0].split("|")
        recall10, recall50 = float(row[6]), float(row[7])
        assert recall10 == 1.0 and recall50 >= 0.99, p.stdout
        hashes[path] = row[9].strip()
    assert len(set(hashes.values())) == 1, hashes
    env.pop("L3C_KERNELS", None)
    # reload: a server queries, then `rag index` adds a file, then the next query finds it
    from server_util import Server
    import json
    import urllib.request
    write(tmp_path / "notes" / "a.md", "The cat sat on the mat.\n")
    db = tmp_path / "i.db"
    assert index(model, db, tmp_path / "notes").returncode == 0

    def ask(port, text):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/rag/query",
                                     data=json.dumps({"query": text, "k": 5, "mode": "vector"}).encode(),
                                     headers={"Content-Type": "application/json"})
        return json.loads(urllib.request.urlopen(req, timeout=30).read())["data"]

    with Server(model, "--rag-db", db, "--pooling", "mean") as srv:
        assert len(ask(srv.port, "cat")) == 1
        write(tmp_path / "notes" / "b.md", "The dog ran in the park.\n")
        assert index(model, db, tmp_path / "notes").returncode == 0
        hits = ask(srv.port, "dog")
        assert sorted(os.path.basename(h["path"]) for h in hits) == ["a.md", "b.md"], hits


def test_min_score_options(model, tmp_path):
    """--min-score / "min_score": validated, reported (docs/RAG.md "Unanswerable questions")."""
    import json
    from server_util import Server
    write(tmp_path / "notes" / "a.md", "The cat sat on the mat.\n")
    db = tmp_path / "i.db"
    assert index(model, db, tmp_path / "notes").returncode == 0
    p = run_cli("rag", "ask", "-m", model, "--db", db, "--mode", "vector", "--min-score", "1", "cat", check=False)
    assert p.returncode == 2 and "--min-score is a BM25 score" in p.stderr, p.stderr
    p = run_cli("rag", "ask", "-m", model, "--db", db, "--min-score", "x", "cat", check=False)
    assert p.returncode == 2 and "--min-score" in p.stderr, p.stderr
    # a word of the text: confidence > 0; none: 0, and ask refuses without the model
    out = json.loads(run_cli("rag", "query", "-m", model, "--db", db, "--json", "cat").stdout)
    assert out["confidence"] == max(h["bm25"] for h in out["results"]) > 0
    p = run_cli("rag", "ask", "-m", model, "--db", db, "-n", "4", "zebra")
    assert p.stdout.startswith("I don't know: no indexed passage answers this. (retrieval confidence 0.00"), p.stdout
    assert "[1] " in p.stdout.split("Nearest sources:")[1]
    with Server(model, "--rag-db", db, "--pooling", "mean") as srv:
        st, body = srv.post_json("/v1/rag/query", {"query": "cat", "min_score": 1e5})
        assert st == 200 and body["abstain"] is True and body["confidence"] > 0, body
        st, body = srv.post_json("/v1/rag/query", {"query": "cat", "min_score": 0})
        assert st == 200 and body["abstain"] is False, body
        # chat below min_score: the fixed reply without the model, streamed or not
        fixed = "I don't know: no indexed passage answers this."
        chat = {"messages": [{"role": "user", "content": "cat"}], "rag": {"k": 1, "min_score": 1e5}, "max_tokens": 4}
        st, body = srv.post_json("/v1/chat/completions", chat)
        assert st == 200 and body["choices"][0]["message"]["content"] == fixed, body
        assert body["rag_abstained"] is True and body["usage"]["completion_tokens"] == 0, body
        assert [os.path.basename(x["path"]) for x in body["rag_sources"]] == ["a.md"], body
        st, events, raw = srv.stream("/v1/chat/completions", dict(chat, stream=True))
        assert st == 200 and raw.rstrip().endswith("data: [DONE]"), raw
        text = "".join(ev["choices"][0]["delta"].get("content") or "" for ev in events
                       if isinstance(ev, dict) and ev.get("choices"))
        assert text == fixed, raw
        st, body = srv.post_json("/v1/chat/completions", dict(chat, rag={"k": 1, "min_score": 0}))
        assert st == 200 and "rag_abstained" not in body and body["usage"]["completion_tokens"] > 0, body
        for bad in ("x", -1, None):
            st, body = srv.post_json("/v1/rag/query", {"query": "cat", "min_score": bad})
            assert st == 400 and body["error"]["param"] == "min_score", body
            st, body = srv.post_json("/v1/chat/completions", {"messages": [{"role": "user", "content": "cat"}],
                                                              "rag": {"min_score": bad}})
            assert st == 400 and body["error"]["param"] == "min_score", body
