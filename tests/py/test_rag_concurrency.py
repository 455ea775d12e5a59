"""Concurrent `/v1/rag/query` requests while `rag index` changes the index (docs/RAG.md "Server").

`serve --rag-db` searches on a pool of SQLite connections (WAL readers) that share one int8 vector
matrix, reloaded when the index generation changes. Four clients query in every mode while the
main thread adds and removes a file with `rag index` four times. Every answer must be a 200 and
equal, hit for hit, to the answer the server gives in one of the two committed states (without the
file / with it), taken on a quiet server before: a search that mixed two states, read a chunk that
a commit removed (a stale matrix: a 500), or missed the new file in vector mode (a matrix not
reloaded) fails. Both states must be seen during the run, and PRAGMA integrity_check passes after.

The model is stories260K (1 MB): indexing a file takes well under a second.
"""
import json
import os
import shutil
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import BIN
from server_util import Server

DOCS = {
    "a.md": "The cat sat on the mat and looked at the moon.\n",
    "b.md": "A little boy found a red ball in the garden.\n",
    "c.md": "The girl and her dog ran to the big tree in the park.\n",
    "d.md": "Tom baked a cake for his mother on a sunny day.\n",
}
EXTRA = ("x.md", "The dragon flew over the castle with a shiny golden crown.\n")
QUERIES = [("cat moon", "bm25"), ("red ball garden", "hybrid"), ("dragon castle crown", "bm25"),
           ("dragon castle crown", "hybrid"), (EXTRA[1].strip(), "vector"), ("dog park tree", "vector")]


@pytest.fixture(scope="module")
def model(stories_gguf):
    return stories_gguf("f32")


def index(model, db, root):
    p = subprocess.run([BIN, "rag", "index", "-m", model, "--db", str(db), "--chunk", "32", "--overlap", "4",
                        "-t", "1", str(root)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr


def query(port, text, mode):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/rag/query",
                                 data=json.dumps({"query": text, "k": 3, "mode": mode}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def key(body):
    """An answer as comparable data: every hit's file, lines, text and scores (rounded)."""
    return tuple((os.path.basename(h["path"]), h["line_start"], h["line_end"], h["text"], round(h["score"], 5),
                  round(h["cosine"], 5)) for h in body["data"])


def test_concurrent_queries_during_reindex(model, tmp_path):
    root, stash = tmp_path / "notes", tmp_path / "stash"
    root.mkdir(), stash.mkdir()
    for name, text in DOCS.items():
        (root / name).write_text(text)
    (stash / EXTRA[0]).write_text(EXTRA[1])
    db = tmp_path / "i.db"
    index(model, db, root)

    def toggle(add):
        src, dst = (stash, root) if add else (root, stash)
        shutil.move(str(src / EXTRA[0]), str(dst / EXTRA[0]))
        index(model, db, root)

    with Server(model, "--rag-db", db, "--pooling", "mean") as srv:
        refs = [{}, {}]  # the answers without / with x.md, on a quiet server
        for state in (0, 1):
            if state:
                toggle(True)
            for q in QUERIES:
                st, body = query(srv.port, *q)
                assert st == 200, body
                refs[state][q] = key(body)
        toggle(False)
        for q in QUERIES:  # back to the first state: the same answers (the matrix was reloaded)
            assert key(query(srv.port, *q)[1]) == refs[0][q], q
        with_x = refs[1][(EXTRA[1].strip(), "vector")]
        assert with_x[0][0] == "x.md" and with_x != refs[0][(EXTRA[1].strip(), "vector")]
        assert refs[1][("dragon castle crown", "bm25")][0][0] == "x.md"

        stop = threading.Event()
        bad, seen = [], [0, 0]
        lock = threading.Lock()

        def client(i):
            n = 0
            while not stop.is_set():
                q = QUERIES[(i + n) % len(QUERIES)]
                n += 1
                st, body = query(srv.port, *q)
                with lock:
                    if st != 200:
                        bad.append((q, st, body))
                        continue
                    k = key(body)
                    if k == refs[0][q]:
                        seen[0] += 1
                    elif k == refs[1][q]:
                        seen[1] += 1
                    else:
                        bad.append((q, "answer of neither state", k))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        try:
            for r in range(4):
                toggle(r % 2 == 0)
                time.sleep(0.3)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=120)
        assert not bad, bad[:3]
        assert seen[0] > 0 and seen[1] > 0, seen
        print("answers in state without / with x.md:", seen)
    con = sqlite3.connect(str(db))
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        gen = int(con.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])
        assert gen > 0  # the triggers count every change to the chunks
    finally:
        con.close()
