"""`llama3c rag`: chunking, indexing, retrieval, durability, answers with sources, errors.

The corpus (CORPUS) is written here: 24 short files about made-up things, each fact found
nowhere else, so the right chunk for a question is known. References are independent of the
code under test: Python's hashlib (file sha256), sqlite3 (the stored rows, PRAGMA
integrity_check), the corpus bytes (chunk text and line ranges), llama-cpp-python's tokenizer
(chunk sizes), pdftotext on a PDF written by hand here.

Retrieval is checked with chunks of 48 tokens (overlap 8), so most files have 2-4 chunks and the
top hit must be the chunk that holds the fact, not just the right file. Measured on SmolLM2-135M
Q4_1 (docs/RAG.md): top-1 right for 25 / 25 questions with hybrid and bm25, 12 / 25 with vector
only (mean-pooled hidden states of a small chat model are a weak retriever).
"""
import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time

import numpy as np
import pytest

from conftest import BIN, THREADS, run_cli


CORPUS = {
    "zorbian_glassworks.md": """# The Zorbian Glassworks

The Zorbian Glassworks stand on the river bank of Velmora. They were founded in 1742 by the
glassblower Ilsa Trevane, who came from the northern islands with three apprentices.

## Furnaces

The great furnace of the glassworks burns at 1340 degrees and is fed only with beech charcoal.
Its signature colour, a pale blue called cobalt mist, comes from crushed lapis added to the melt.
""",
    "kettleback_turtles.txt": """Kettleback turtles live in the warm springs of the Ossary valley.
A kettleback shell is covered in copper-coloured ridges that hold heat for hours after sunset.

The turtles lay exactly seven eggs each spring, and the hatchlings take ninety days to leave the
nest. Local farmers believe a kettleback crossing the road means rain before nightfall.
""",
    "quillon_harbor_lighthouse.md": """# Quillon Harbor Lighthouse

The lighthouse at Quillon Harbor was lit for the first time in 1887. Its lamp turns once every
eleven seconds and can be seen forty kilometres out at sea.

The last keeper, Marten Odell, kept the flame burning for thirty-one winters and wrote a diary of
every storm; the diary is kept in the harbor museum.
""",
    "pemberly_sourdough.md": """# Pemberly sourdough

Pemberly sourdough is a rye bread from the hill village of Pemberly. The starter, called Old Maud,
is said to be two hundred years old and is fed with honey water every Sunday.

The dough rests for thirty-six hours in cold cellars before it is baked in a stone oven at dawn.
""",
    "astraline_orbit.txt": """The Astraline satellite was launched to study lightning over deserts.
It circles the Earth in a polar orbit at an altitude of 612 kilometres, completing one orbit every
97 minutes. Its main camera counts sprites, red flashes that appear high above thunderstorms.
""",
    "mirefen_chess_club.md": """# Mirefen chess club

The Mirefen chess club meets every Thursday in the back room of the Gilded Heron inn.
Its founder, Agatha Pell, invented the Mirefen gambit, an opening that sacrifices both knights.

The club trophy is a silver rook that the yearly winner keeps for twelve months.
""",
    "tindle_river_ferry.txt": """The Tindle river ferry is pulled across the water by a chain and a
team of two grey horses. A crossing takes eight minutes and costs three copper pennies for a
person, or a whole silver coin for a cart. The ferry has carried passengers since 1803 without
a single accident.
""",
    "glimmerwort.md": """# Glimmerwort

Glimmerwort is a moss that glows faintly green in the dark caves of Harrowdeep. It grows only on
limestone that stays wet all year.

Healers dry glimmerwort and brew it into a bitter tea that is said to cure snow blindness.
""",
    "brassmoor_clocktower.md": """# The Brassmoor clock tower

The clock tower of Brassmoor has four faces and a bell named Big Orla that weighs nine tonnes.
The clockwork was built by the engineer Tobias Fenwright in 1921 and must be wound by hand every
eight days with a crank that takes two people to turn.
""",
    "velvet_hornet.txt": """The velvet hornet is a harmless insect covered in soft orange fur.
It feeds on the nectar of moonflowers and is active only at night. Velvet hornets build round
paper nests the size of a melon under the eaves of barns, and each nest houses about four
hundred workers.
""",
    "ormsby_cheese_festival.md": """# Ormsby cheese festival

Every October the town of Ormsby holds a cheese festival where wheels of cheese are rolled down
Saddle Hill. The fastest wheel wins its maker a golden ladle.

The most famous cheese of the festival is Ormsby Blue, aged for fourteen months in salt caves.
""",
    "nimbus_kite_design.txt": """Nimbus kites are flown in the coastal town of Saltmere. A nimbus
kite has a hexagonal frame of split bamboo and a tail of twenty-four silk ribbons. The world
record nimbus kite flight lasted nineteen hours and was set by the twins Cora and Dell Ashby.
""",
    "harrow_lane_library.md": """# Harrow Lane library

The Harrow Lane library opened in 1910 with a gift of 6000 books from the merchant Elias Crane.
Its reading room has a glass dome painted with the constellations of the southern sky.

Borrowers may keep a book for twenty-one days; late books cost one penny per day.
""",
    "frostpeak_railway.txt": """The Frostpeak railway climbs from Lowmarsh to the summit station at
3120 metres. Its little red trains use a toothed rack rail to climb slopes of up to twenty-five
percent. The line was dug through solid granite by 900 workers between 1896 and 1904.
""",
    "saffron_moth.md": """# Saffron moth

The saffron moth has yellow wings with two black eye spots that frighten birds. Its caterpillars
eat only the leaves of the wild quince tree. The moth migrates each autumn across the Bellary
straits, a journey of three hundred kilometres.
""",
    "copperfield_mine.txt": """The Copperfield mine produced copper and a little silver for a
hundred and twenty years. At its deepest the main shaft reached 740 metres below the surface.
The mine closed in 1963 after the lower galleries flooded, and it is now a museum where
visitors ride the old cage lift.
""",
    "wrenna_songbook.md": """# The Wrenna songbook

The Wrenna songbook is a collection of 212 folk songs gathered by the singer Wrenna Holt in the
fishing villages of the east coast. She wrote the melodies down in her own shorthand of dots and
hooks, which was only deciphered in 1998 by the musicologist Paul Ibsen.
""",
    "drumlin_sheepdog_trials.txt": """The Drumlin sheepdog trials are held every May on the
moors above Kestle. Each dog must guide five sheep through three gates and into a round pen in
under fifteen minutes. The champion dog of the last ten years, a collie named Biscuit, won six
titles.
""",
    "marrowgate_bridge.md": """# Marrowgate bridge

The Marrowgate bridge crosses the Fell estuary with nine stone arches. It is 410 metres long and
was finished in 1777 after eleven years of work. Every arch carries a carved face of one of the
nine masons who built it.
""",
    "emberleaf_tea.txt": """Emberleaf tea is grown on the terraced slopes of Mount Cador. The
leaves are smoked over cedar embers for two days, which gives the tea its reddish colour and a
taste of toasted nuts. Pickers harvest only the top two leaves and a bud of each shoot.
""",
    "lantern_parade.md": """# The lantern parade of Sorrowby

On the longest night of the year the people of Sorrowby carry paper lanterns shaped like fish
through the old town. The parade ends at the harbour, where the lanterns are set afloat on the
water. The tradition began in 1654 to remember sailors lost in the great winter storm.
""",
    "pollux_robot_arm.txt": """The Pollux robot arm was built at the Garnet Institute to sort
seashells. It has six joints, a suction gripper and a camera in its wrist, and it can sort
forty shells a minute by shape and colour. Its software was written by the engineer Mina Kovac.
""",
    "thistlewood_orchard.md": """# Thistlewood orchard

Thistlewood orchard grows 31 varieties of old apples, among them the russet Kingsbane and the
tiny, very sweet Wren's Egg. The orchard's cider is pressed in a wooden press from 1820.

Each spring a flock of geese is let into the orchard to eat the fallen leaves and the weeds.
""",
    "obsidian_library_cats.txt": """The Obsidian library in Carrow keeps seven cats to protect its
books from mice. Each cat is named after a famous poet, and the oldest, called Homer, is nineteen
years old. The cats are fed sardines at noon by the head librarian.
""",
}

# (question, file, a phrase the retrieved chunk must contain)
QUESTIONS = [
    ("Who founded the Zorbian Glassworks and in which year?", "zorbian_glassworks.md", "1742"),
    ("At what temperature does the glassworks furnace burn?", "zorbian_glassworks.md", "1340 degrees"),
    ("How many eggs does a kettleback turtle lay?", "kettleback_turtles.txt", "seven eggs"),
    ("How often does the Quillon Harbor lighthouse lamp turn?", "quillon_harbor_lighthouse.md", "eleven seconds"),
    ("What is the sourdough starter of Pemberly called and what is it fed with?", "pemberly_sourdough.md", "Old Maud"),
    ("What is the altitude of the Astraline satellite orbit?", "astraline_orbit.txt", "612 kilometres"),
    ("Which opening did the founder of the Mirefen chess club invent?", "mirefen_chess_club.md", "gambit"),
    ("How much does the Tindle river ferry crossing cost?", "tindle_river_ferry.txt", "copper pennies"),
    ("Where does glimmerwort moss grow?", "glimmerwort.md", "Harrowdeep"),
    ("How heavy is the bell of the Brassmoor clock tower?", "brassmoor_clocktower.md", "nine tonnes"),
    ("What does the velvet hornet feed on?", "velvet_hornet.txt", "moonflowers"),
    ("What prize does the fastest cheese wheel win at the Ormsby festival?", "ormsby_cheese_festival.md", "golden ladle"),
    ("How many silk ribbons are on the tail of a nimbus kite?", "nimbus_kite_design.txt", "twenty-four"),
    ("Who gave the books when the Harrow Lane library opened?", "harrow_lane_library.md", "Elias Crane"),
    ("How high is the summit station of the Frostpeak railway?", "frostpeak_railway.txt", "3120 metres"),
    ("What do the caterpillars of the saffron moth eat?", "saffron_moth.md", "quince"),
    ("When did the Copperfield mine close?", "copperfield_mine.txt", "1963"),
    ("How many folk songs are in the Wrenna songbook?", "wrenna_songbook.md", "212"),
    ("What is the name of the champion dog of the Drumlin sheepdog trials?", "drumlin_sheepdog_trials.txt", "Biscuit"),
    ("How long is the Marrowgate bridge?", "marrowgate_bridge.md", "410 metres"),
    ("Over which wood are emberleaf tea leaves smoked?", "emberleaf_tea.txt", "cedar"),
    ("What shape are the lanterns of the Sorrowby parade?", "lantern_parade.md", "fish"),
    ("How many shells a minute can the Pollux robot arm sort?", "pollux_robot_arm.txt", "forty shells"),
    ("How many apple varieties grow in Thistlewood orchard?", "thistlewood_orchard.md", "31 varieties"),
    ("What is the name of the oldest cat of the Obsidian library?", "obsidian_library_cats.txt", "Homer"),
]


CHUNK, OVERLAP = 48, 8


def write_corpus(d, files=CORPUS):
    os.makedirs(d, exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    return d


def index(model, db, *dirs, env=None, check=True, extra=()):
    cmd = [BIN, "rag", "index", "-m", model, "--db", db, "--chunk", CHUNK, "--overlap", OVERLAP, "-t", THREADS,
           *extra, *dirs]
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, **(env or {})))
    if check:
        assert p.returncode == 0, p.stderr
    return p


def query(model, db, q, k=3, mode="hybrid", check=True):
    p = run_cli("rag", "query", "-m", model, "--db", db, "--json", "-k", k, "--mode", mode, "-t", THREADS, q,
                check=check)
    return json.loads(p.stdout)["results"] if check else p


def rows(db, root):
    """Every chunk as (path relative to root, seq, byte range, line range, text, vector bytes)."""
    con = sqlite3.connect(db)
    try:
        r = con.execute("SELECT f.path, c.seq, c.byte_start, c.byte_end, c.line_start, c.line_end, c.text, "
                        "c.embedding FROM chunks c JOIN files f ON f.id = c.file_id ORDER BY f.path, c.seq").fetchall()
    finally:
        con.close()
    return [(os.path.relpath(x[0], root),) + tuple(x[1:]) for x in r]


@pytest.fixture(scope="module")
def built(tmp_path_factory, llama3c, smollm2_path):
    """The corpus indexed once by its own process; the tests query it from later processes."""
    d = tmp_path_factory.mktemp("rag")
    root = write_corpus(str(d / "corpus"))
    db = str(d / "index.db")
    p = index(smollm2_path, db, root)
    assert f"{len(CORPUS)} files indexed" in p.stderr
    return root, db


# ---------------------------------------------------------------- chunker


def chunks_of(model, path, chunk=64, overlap=16, check=True):
    p = run_cli("rag", "chunk", "-m", model, "--chunk", chunk, "--overlap", overlap, path, check=check)
    return json.loads(p.stdout) if check else p


def test_chunker_ranges(smollm2_path, tmp_path):
    paras = [" ".join(f"Sentence {j} about topic {chr(65 + i)} has some words." for j in range(3 + i % 3))
             for i in range(12)]  # lines of 13 tokens
    text = "# Title\n\n" + "\n\n".join(p.replace(". ", ".\n") for p in paras) + "\n"
    path = tmp_path / "doc.md"
    path.write_text(text)
    data = text.encode()
    ch = chunks_of(smollm2_path, path)
    assert len(ch) >= 4
    assert ch[0]["byte_start"] == 0 and ch[-1]["byte_end"] == len(data)
    covered = bytearray(len(data))
    for i, c in enumerate(ch):
        s, e = c["byte_start"], c["byte_end"]
        covered[s:e] = b"\x01" * (e - s)
        assert c["n_tokens"] <= 64
        # lines: 1-based line of the first byte and of the last byte
        assert c["line_start"] == data[:s].count(b"\n") + 1
        assert c["line_end"] == data[:e - 1].count(b"\n") + 1
        if i + 1 < len(ch):
            n = ch[i + 1]
            assert s < n["byte_start"] < e, f"chunk {i + 1} does not overlap chunk {i}"
            # every line here is far shorter than half a chunk: ends snap to a line end, starts of the
            # overlap to a line start
            assert data[e - 1:e] == b"\n", f"chunk {i} ends mid-line: {data[e - 8:e]!r}"
            assert data[n["byte_start"] - 1:n["byte_start"]] == b"\n"
    assert all(covered), "some bytes are in no chunk"
    try:
        import llama_cpp
    except ImportError:
        return
    llm = llama_cpp.Llama(model_path=smollm2_path, vocab_only=True, verbose=False)
    for c in ch:  # the range tokenized alone by the reference tokenizer: the same size, +-2 at the edges
        n = len(llm.tokenize(data[c["byte_start"]:c["byte_end"]], add_bos=False, special=False))
        assert abs(n - c["n_tokens"]) <= 2, (c, n)


def test_chunker_small_inputs(smollm2_path, tmp_path):
    (tmp_path / "tiny.txt").write_text("hello\n")
    assert chunks_of(smollm2_path, tmp_path / "tiny.txt") == [
        {"byte_start": 0, "byte_end": 6, "line_start": 1, "line_end": 1, "n_tokens": 2}]
    (tmp_path / "empty.txt").write_text("")
    assert chunks_of(smollm2_path, tmp_path / "empty.txt") == []
    (tmp_path / "blank.txt").write_text("\n\n   \n")
    assert chunks_of(smollm2_path, tmp_path / "blank.txt") == []
    # one long line without breaks: cut at word boundaries, still covering everything
    long = " ".join(f"w{i}" for i in range(400))
    (tmp_path / "long.txt").write_text(long)
    ch = chunks_of(smollm2_path, tmp_path / "long.txt", 32, 4)
    assert ch[-1]["byte_end"] == len(long) and all(c["line_start"] == c["line_end"] == 1 for c in ch)
    for a, b in zip(ch, ch[1:]):
        assert a["byte_start"] < b["byte_start"] < a["byte_end"]
        assert long[a["byte_end"] - 1] == " " or long[a["byte_end"]] == " "
    p = chunks_of(smollm2_path, tmp_path / "tiny.txt", 64, 32, check=False)
    assert p.returncode == 2 and "overlap" in p.stderr


# ---------------------------------------------------------------- index contents and retrieval


def test_index_contents(built):
    root, db = built
    con = sqlite3.connect(db)
    files = con.execute("SELECT path, size, sha256, n_chunks FROM files").fetchall()
    meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
    n_fts = con.execute("SELECT count(*) FROM chunks_fts").fetchone()[0]
    con.close()
    assert len(files) == len(CORPUS)
    assert meta["n_embd"] == "576" and meta["chunk_tokens"] == str(CHUNK) and meta["overlap"] == str(OVERLAP)
    for path, size, sha, _ in files:
        data = open(path, "rb").read()
        assert size == len(data) and sha == hashlib.sha256(data).hexdigest(), path
    r = rows(db, root)
    assert n_fts == len(r) == sum(f[3] for f in files) and len(r) > len(CORPUS)  # several chunks per file
    for rel, seq, bs, be, ls, le, text, vec in r:
        data = open(os.path.join(root, rel), "rb").read()
        assert text.encode() == data[bs:be]
        assert (ls, le) == (data[:bs].count(b"\n") + 1, data[:be - 1].count(b"\n") + 1)
        v = np.frombuffer(vec, dtype="<f4")
        assert v.size == 576 and abs(float(np.linalg.norm(v)) - 1) < 1e-5


def top1_right(hits, name, phrase):
    return os.path.basename(hits[0]["path"]) == name and phrase in hits[0]["text"]


@pytest.mark.slow  # 25 model loads; ~2 min under ASan
def test_retrieval_top1(built, smollm2_path):
    root, db = built
    assert len(QUESTIONS) >= 20
    wrong = []
    for q, name, phrase in QUESTIONS:
        hits = query(smollm2_path, db, q)
        if not top1_right(hits, name, phrase):
            wrong.append((q, [(os.path.basename(h["path"]), h["line_start"], round(h["score"], 3)) for h in hits]))
        assert hits[0]["score"] >= hits[-1]["score"]
    assert not wrong, wrong


def test_modes_and_text_output(built, smollm2_path):
    root, db = built
    q, name, phrase = QUESTIONS[2]
    for mode in ("bm25", "vector"):
        hits = query(smollm2_path, db, q, k=5, mode=mode)
        assert len(hits) == 5 and all(h["path"].startswith(root) for h in hits)
        key = "bm25" if mode == "bm25" else "cosine"
        assert [h[key] for h in hits] == sorted((h[key] for h in hits), reverse=True)
    assert top1_right(query(smollm2_path, db, q, mode="bm25"), name, phrase)
    p = run_cli("rag", "query", "-m", smollm2_path, "--db", db, "-k", 2, "-t", THREADS, q)
    first = p.stdout.splitlines()[0]
    assert re.match(r"\[1\] .*kettleback_turtles\.txt:\d+-\d+  score ", first), first
    assert "seven eggs" in p.stdout


def test_reindex_incremental(built, smollm2_path, tmp_path):
    root0, db0 = built
    root = write_corpus(str(tmp_path / "corpus"))
    db = str(tmp_path / "i.db")
    index(smollm2_path, db, root)
    before = rows(db, root)
    assert before == rows(db0, root0)  # same corpus, same bytes (a build is deterministic)
    p = index(smollm2_path, db, root)  # nothing changed
    assert "0 files indexed" in p.stderr and f"{len(CORPUS)} unchanged" in p.stderr
    os.utime(os.path.join(root, "glimmerwort.md"), (1e9, 1e9))  # new mtime, same bytes: sha256 says unchanged
    with open(os.path.join(root, "velvet_hornet.txt"), "a") as f:
        f.write("\nVelvet hornets hibernate inside hollow pumpkins during the winter.\n")
    os.remove(os.path.join(root, "lantern_parade.md"))
    p = index(smollm2_path, db, root)
    assert "1 files indexed" in p.stderr and "1 removed" in p.stderr, p.stderr
    after = rows(db, root)
    assert [r for r in after if r[0] != "velvet_hornet.txt"] == \
        [r for r in before if r[0] not in ("velvet_hornet.txt", "lantern_parade.md")]
    assert top1_right(query(smollm2_path, db, "Where do velvet hornets hibernate in winter?"),
                      "velvet_hornet.txt", "pumpkins")


# ---------------------------------------------------------------- durability


def test_kill9_mid_build(built, smollm2_path, tmp_path):
    """SIGKILL while a file's transaction is open: the index stays consistent and a re-run equals an
    uninterrupted build. L3C_RAG_TEST_DELAY_MS holds every file's transaction open before COMMIT."""
    root0, db0 = built
    root = write_corpus(str(tmp_path / "corpus"))
    db = str(tmp_path / "k.db")
    cmd = [BIN, "rag", "index", "-m", smollm2_path, "--db", db, "--chunk", str(CHUNK), "--overlap", str(OVERLAP),
           "-t", str(THREADS), root]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, L3C_RAG_TEST_DELAY_MS="400"))
    n_done, deadline = 0, time.time() + 120
    try:
        while n_done < 5 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
            try:
                con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
                n_done = con.execute("SELECT count(*) FROM files").fetchone()[0]
                con.close()
            except sqlite3.OperationalError:
                pass  # not created yet
        time.sleep(0.2)  # inside the next file's open transaction (it stays open 400 ms)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and 5 <= n_done < len(CORPUS)
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    n_files = con.execute("SELECT count(*) FROM files").fetchone()[0]
    for (fid, n) in con.execute("SELECT id, n_chunks FROM files").fetchall():  # every file whole or absent
        assert con.execute("SELECT count(*) FROM chunks WHERE file_id = ?", (fid,)).fetchone()[0] == n
    assert con.execute("SELECT count(*) FROM chunks_fts").fetchone()[0] == \
        con.execute("SELECT count(*) FROM chunks").fetchone()[0]
    assert con.execute("SELECT count(*) FROM chunks WHERE file_id NOT IN (SELECT id FROM files)").fetchone()[0] == 0
    con.close()
    assert 5 <= n_files < len(CORPUS)
    p = index(smollm2_path, db, root)
    assert f"{len(CORPUS) - n_files} files indexed" in p.stderr and f"{n_files} unchanged" in p.stderr, p.stderr
    assert rows(db, root) == rows(db0, root0)


# ---------------------------------------------------------------- ask


def test_ask_cites_sources(built, smollm2_path):
    root, db = built
    q, name, phrase = QUESTIONS[2]
    p = run_cli("rag", "ask", "-m", smollm2_path, "--db", db, "-k", 3, "-n", 48, "-t", THREADS, "--no-timings", q)
    answer, _, sources = p.stdout.partition("\n\nSources:\n")
    assert answer.strip(), p.stdout
    lines = sources.strip().splitlines()
    assert len(lines) == 3
    for i, line in enumerate(lines, 1):
        m = re.fullmatch(r"\[(\d+)\] (.+):(\d+)-(\d+)", line)
        assert m and int(m.group(1)) == i, line
        path, a, b = m.group(2), int(m.group(3)), int(m.group(4))
        assert os.path.isfile(path) and 1 <= a <= b <= open(path).read().count("\n") + 1
    assert os.path.basename(lines[0].split()[1].rsplit(":", 1)[0]) == name
    for n in re.findall(r"\[(\d+)\]", answer):  # every citation names a listed source
        assert 1 <= int(n) <= 3, answer


# ---------------------------------------------------------------- PDF


def write_pdf(path, lines):
    """A one-page PDF with Helvetica text lines, written by hand (no PDF library needed)."""
    body = "BT /F1 12 Tf 72 720 Td 16 TL " + " ".join(f"({l}) '" for l in lines) + " ET"
    objs = ["<< /Type /Catalog /Pages 2 0 R >>", "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            "/Resources << /Font << /F1 5 0 R >> >> >>",
            f"<< /Length {len(body)} >>\nstream\n{body}\nendstream",
            "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offs = b"%PDF-1.4\n", []
    for i, o in enumerate(objs, 1):
        offs.append(len(out))
        out += f"{i} 0 obj\n{o}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offs)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    with open(path, "wb") as f:
        f.write(out)


def test_pdf(smollm2_path, tmp_path):
    d = tmp_path / "docs"
    write_corpus(str(d), {k: CORPUS[k] for k in list(CORPUS)[:4]})
    write_pdf(d / "quarry_report.pdf", ["The Bellhaven quarry report", "The quarry ships marble to",
                                        "the port of Ashcombe on barges called grey swans."])
    db = str(tmp_path / "p.db")
    # without pdftotext on PATH: skipped with a warning that names the file
    bare = tmp_path / "bin"
    bare.mkdir()
    p = index(smollm2_path, db, d, env={"PATH": str(bare)})
    assert "quarry_report.pdf" in p.stderr and "pdftotext" in p.stderr and "1 skipped" in p.stderr
    if not shutil.which("pdftotext"):
        pytest.skip("pdftotext (Debian: poppler-utils) is not installed; the PDF was skipped as it should be")
    p = index(smollm2_path, db, d)
    assert "1 files indexed" in p.stderr, p.stderr
    hits = query(smollm2_path, db, "Where does the Bellhaven quarry ship its marble?")
    assert hits[0]["path"].endswith("quarry_report.pdf") and "grey swans" in hits[0]["text"]


# ---------------------------------------------------------------- errors


def expect_fail(args, rc, *needles):
    p = run_cli(*args, check=False)
    assert p.returncode == rc, (p.returncode, p.stderr)
    for n in needles:
        assert n in p.stderr, p.stderr
    assert "Traceback" not in p.stderr and "Segmentation" not in p.stderr
    return p


def test_errors(built, smollm2_path, tiny_model, tmp_path):
    from gen_models import ModelSpec
    root, db = built
    q = ["-t", THREADS, "what?"]
    expect_fail(["rag", "query", "-m", smollm2_path, "--db", tmp_path / "none.db", *q], 1, "none.db", "does not exist")
    (tmp_path / "junk.db").write_bytes(b"this is not a database" * 100)
    expect_fail(["rag", "query", "-m", smollm2_path, "--db", tmp_path / "junk.db", *q], 1, "junk.db", "not a database")
    other = sqlite3.connect(tmp_path / "other.db")
    other.execute("CREATE TABLE t(x)")
    other.commit()
    other.close()
    expect_fail(["rag", "query", "-m", smollm2_path, "--db", tmp_path / "other.db", *q], 1, "not a llama3c RAG index")
    # a damaged page in the middle of a good index
    bad = tmp_path / "bad.db"
    shutil.copy(db, bad)
    data = bytearray(bad.read_bytes())
    page = 4096
    assert len(data) > 8 * page
    data[3 * page:6 * page] = os.urandom(3 * page)
    bad.write_bytes(bytes(data))
    expect_fail(["rag", "query", "-m", smollm2_path, "--db", bad, *q], 1, "bad.db", "corrupt")
    # another model than the index was built with
    tiny = tiny_model("ragtiny", ModelSpec(n_embd=64, n_layer=1, n_head=4, n_head_kv=2, n_ff=128, n_vocab=320,
                                           tied=True, seed=3), "F32")
    expect_fail(["rag", "query", "-m", tiny, "--db", db, *q], 1, "different model", "rebuild")
    expect_fail(["rag", "index", "-m", tiny, "--db", db, root], 1, "different model")
    expect_fail(["rag", "index", "-m", smollm2_path, "--db", db, "--chunk", 96, root], 1, "--chunk 48")
    expect_fail(["rag", "query", "-m", smollm2_path, "--db", db, ""], 2, "empty")
    expect_fail(["rag", "query", "-m", smollm2_path, "--db", db, "--mode", "fuzzy", "x"], 2, "fuzzy")
    expect_fail(["rag", "index", "-m", smollm2_path, "--db", tmp_path / "x.db", tmp_path / "missing_dir"], 1,
                "missing_dir")
    expect_fail(["rag", "frobnicate"], 2, "frobnicate")


# ---------------------------------------------------------------- server


@pytest.fixture(scope="module")
def rag_server(built, smollm2_path):
    from server_util import Server
    yield from Server(smollm2_path, "--rag-db", built[1], "--parallel", 2, "--ctx", 1024).serving()


def test_server_rag_query(built, smollm2_path, rag_server):
    root, db = built
    for q, name, phrase in QUESTIONS[:6]:
        st, r = rag_server.post_json("/v1/rag/query", {"query": q, "k": 3})
        assert st == 200, r
        assert r["object"] == "list" and r["mode"] == "hybrid" and len(r["data"]) == 3
        top = r["data"][0]
        assert os.path.basename(top["path"]) == name and phrase in top["text"], (q, top)
        cli = query(smollm2_path, db, q)  # the same chunks as the CLI (the vectors agree to ~1e-3)
        assert [h["path"] for h in r["data"]] == [h["path"] for h in cli]
        assert top["cosine"] == pytest.approx(cli[0]["cosine"], abs=2e-3)
    st, r = rag_server.post_json("/v1/rag/query", {"query": QUESTIONS[0][0], "k": 2, "mode": "bm25"})
    assert st == 200 and r["mode"] == "bm25" and len(r["data"]) == 2
    for body, param in [({}, "query"), ({"query": ""}, "query"), ({"query": "x", "k": 0}, "k"),
                        ({"query": "x", "k": "3"}, "k"), ({"query": "x", "mode": "fuzzy"}, "mode")]:
        st, r = rag_server.post_json("/v1/rag/query", body)
        assert st == 400 and r["error"]["param"] == param, (body, r)
    assert rag_server.request("GET", "/v1/rag/query")[0] == 405


def test_server_chat_with_rag(built, rag_server):
    q, name, phrase = QUESTIONS[2]
    st, r = rag_server.post_json("/v1/chat/completions", {
        "messages": [{"role": "user", "content": q}], "max_tokens": 24, "temperature": 0, "rag": {"k": 3}})
    assert st == 200, r
    src = r["rag_sources"]
    assert [s["rank"] for s in src] == [1, 2, 3] and os.path.basename(src[0]["path"]) == name
    # the prompt held the system instructions and three numbered sources
    assert r["usage"]["prompt_tokens"] > 150
    st2, plain = rag_server.post_json("/v1/chat/completions", {
        "messages": [{"role": "user", "content": q}], "max_tokens": 24, "temperature": 0})
    assert st2 == 200 and "rag_sources" not in plain and plain["usage"]["prompt_tokens"] < 60
    for rag, code in [({"k": 0}, 400), ("yes", 400)]:
        st, r = rag_server.post_json("/v1/chat/completions", {"messages": [{"role": "user", "content": q}],
                                                              "rag": rag})
        assert st == code and r["error"]["param"] == "rag", r


def test_server_rag_db_errors(built, smollm2_path, tiny_model, tmp_path):
    from gen_models import ModelSpec
    tiny = tiny_model("ragtiny", ModelSpec(n_embd=64, n_layer=1, n_head=4, n_head_kv=2, n_ff=128, n_vocab=320,
                                           tied=True, seed=3), "F32")
    for model, db, needle in [(tiny, built[1], "different model"), (smollm2_path, tmp_path / "no.db", "does not exist")]:
        p = subprocess.run([BIN, "serve", "-m", model, "--rag-db", str(db), "--port", "0", "-t", str(THREADS)],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode != 0 and needle in p.stderr, p.stderr
