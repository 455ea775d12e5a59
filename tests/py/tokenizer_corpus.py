"""Deterministic tokenizer test corpus (>= 1 MB) and the tiktoken reference for Llama 3.

corpus_parts() -> list of (name, bytes): English prose, source code, 12 scripts (CJK, Arabic,
Hindi, Thai, Cyrillic, Greek, Hebrew, Korean, Japanese, Armenian, Georgian, Ethiopic), emoji with
skin tones and ZWJ sequences, combining marks, numbers and digit runs ("3333+777"), whitespace
and mixed \\r\\n runs, contractions in every case, random BMP code points, random bytes and
invalid UTF-8. Same bytes on every run (seeded random.Random).

llama3_reference(): tiktoken Encoding built offline from Meta's tokenizer.model, Meta's pattern
and the 256 Llama 3 special tokens (llama/tokenizer.py). ref_encode(enc, data) applies the rule
llama3c documents for bytes that are not valid UTF-8 (src/tokenizer/tokenize.c): valid runs go
through encode_ordinary, each maximal run of invalid bytes is one piece (encode_single_piece).
"""
import os
import random

PAT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
       r"|\s*[\r\n]+|\s+(?!\S)|\s+")

WORDS = ("the of and to in is was he for it with as his on be at by had are but from or have an they "
         "which one you were her all she there would their we him been has when who will more no if out "
         "so said what up its about into than them can only other new some could time these two may then "
         "do first any my now such like our over man me even most made after also did many before must "
         "through back years where much your way well down should because each just those people how too "
         "little state good very make world still own see men work long get here between both life being "
         "under never day same another know while last might us great old year off come since against go "
         "came right used take three tokenizer byte pair encoding llama merge rank vocabulary").split()
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "n't"]

SCRIPTS = {
    "cjk": (0x4E00, 0x9FA5), "arabic": (0x0621, 0x064A), "hindi": (0x0905, 0x0939),
    "thai": (0x0E01, 0x0E3A), "cyrillic": (0x0410, 0x044F), "greek": (0x0391, 0x03C9),
    "hebrew": (0x05D0, 0x05EA), "korean": (0xAC00, 0xD7A3), "hiragana": (0x3041, 0x3096),
    "katakana": (0x30A1, 0x30FA), "armenian": (0x0531, 0x0556), "georgian": (0x10D0, 0x10F0),
    "ethiopic": (0x1200, 0x1248),
}
SAMPLES = [
    "東京は日本の首都です。私は寿司が好きです。", "北京是中国的首都。我喜欢吃饺子。",
    "مرحبا بالعالم، كيف حالك اليوم؟", "नमस्ते दुनिया, आप कैसे हैं?", "สวัสดีชาวโลก คุณสบายดีไหม",
    "Привет, мир! Как дела? ЁЖИК в тумане.", "Γειά σου Κόσμε! Τι κάνεις;", "שלום עולם, מה שלומך?",
    "안녕하세요 세계! 잘 지내세요?", "カタカナとひらがなと漢字が混ざった文。", "Ça va? Größe, Straße, naïve café, résumé.",
    "Ω≈ç√∫˜µ≤≥÷ åß∂ƒ©˙∆˚¬…æ œ∑´®†¥¨ˆøπ“‘", "ſ ﬁ ﬀ K Å ǅ ǈ ΐ ẞ",
]
EMOJI = ["😀", "👍", "👋", "🎉", "❤️", "🔥", "🚀", "🧑‍💻", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷", "🇯🇵", "✋🏿",
         "👩🏽‍🔬", "🤷🏻‍♂️", "1️⃣", "©️", "🫠"]
SKIN = ["\U0001F3FB", "\U0001F3FC", "\U0001F3FD", "\U0001F3FE", "\U0001F3FF"]
WS = [" ", "  ", "\t", "\n", "\r\n", "\r", "\n\n", "\u00a0", "\u3000", "\u2009", "\u0085", "\u2028",
      "\u200b", "\x0b", "\x0c", "   \n", " \r\n \r\n", "\t \t"]


def _prose(r, n_words):
    out = []
    cap = True
    for _ in range(n_words):
        w = r.choice(WORDS)
        k = r.random()
        if k < 0.04:
            w = w + r.choice(CONTRACTIONS)
        elif k < 0.06:
            w = w.upper() + r.choice(CONTRACTIONS).upper()
        elif k < 0.08:
            w = w + "".join(c.upper() if r.random() < 0.5 else c for c in r.choice(CONTRACTIONS))
        if cap:
            w = w[:1].upper() + w[1:]
            cap = False
        out.append(w)
        k = r.random()
        if k < 0.08:
            out[-1] += "."
            cap = True
        elif k < 0.12:
            out[-1] += ","
        elif k < 0.13:
            out[-1] += r.choice(["!", "?", ";", ":", "...", "?!", ")", '"'])
        if r.random() < 0.01:
            out[-1] += "\n\n"
    return " ".join(out).replace("\n\n ", "\n\n")


CODE = [
    "int main(int argc, char **argv) {\n    for (int i = 0; i < argc; i++) printf(\"%s\\n\", argv[i]);\n    return 0;\n}\n",
    "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n\n",
    "const x = await fetch(`/api/v1/items?id=${id}&limit=100`);\nif (!x.ok) throw new Error('HTTP ' + x.status);\n",
    "SELECT name, COUNT(*) AS n FROM users WHERE age >= 18 GROUP BY name HAVING n > 3;\n",
    "<div class=\"row\"><span id='a1'>&nbsp;&lt;tag&gt;</span></div>\n",
    "x <<= 2; y >>>= 3; z = a->b->c ?? d || e && !f; // ops\n",
    "    if (ptr == NULL) { goto fail; }\n\t\treturn -EINVAL;\n",
    "fn main() -> Result<(), Box<dyn Error>> { let v: Vec<u8> = vec![0xff; 16]; Ok(()) }\n",
    "#include <stdio.h>\n#define MAX(a,b) ((a)>(b)?(a):(b))\n",
    "    \"key\": [1, 2.5e-10, -3, true, null, {\"nested\": \"value\"}],\n",
]


def _code(r, n):
    out = []
    for _ in range(n):
        s = r.choice(CODE)
        if r.random() < 0.3:
            s = s.replace("    ", "\t")
        if r.random() < 0.2:
            s = s.replace("\n", "\r\n")
        out.append(s)
    return "".join(out)


def _scripts(r, n):
    out = []
    names = sorted(SCRIPTS)
    for _ in range(n):
        k = r.random()
        if k < 0.4:
            out.append(r.choice(SAMPLES))
        else:
            lo, hi = SCRIPTS[r.choice(names)]
            out.append("".join(chr(r.randint(lo, hi)) for _ in range(r.randint(1, 12))))
        out.append(r.choice([" ", " ", ", ", "。", "\n", " 123 ", "", "-"]))
    return "".join(out)


def _emoji(r, n):
    out = []
    for _ in range(n):
        e = r.choice(EMOJI)
        if r.random() < 0.3:
            e = r.choice(["👍", "👋", "✋", "🧑", "👩"]) + r.choice(SKIN)
        if r.random() < 0.2:
            e = e + "\u200d" + r.choice(EMOJI)
        out.append(e)
        out.append(r.choice(["", " ", "  ", "!", "\n", "ok "]))
    return "".join(out)


def _combining(r, n):
    out = []
    for _ in range(n):
        base = r.choice("aeiouAEIOUnsyzαβ ")
        marks = "".join(chr(r.randint(0x300, 0x36F)) for _ in range(r.randint(1, 4)))
        out.append(base + marks + r.choice(["", " ", "x"]))
    return "".join(out)


def _numbers(r, n):
    out = []
    for _ in range(n):
        k = r.random()
        if k < 0.3:
            out.append("".join(r.choice("0123456789") for _ in range(r.randint(1, 25))))
        elif k < 0.5:
            out.append(f"{r.randint(0, 99999)}+{r.randint(0, 9999)}={r.randint(0, 999999)}")
        elif k < 0.6:
            out.append("3333+777")
        elif k < 0.7:
            out.append(f"{r.uniform(-1e6, 1e6):.{r.randint(0, 8)}f}")
        elif k < 0.8:
            out.append(f"{r.randint(1900, 2100)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}")
        elif k < 0.9:
            out.append("".join(chr(r.choice([0x660, 0x966, 0xFF10, 0x2160])) + chr(0) * 0 for _ in range(1))
                       + str(r.randint(0, 999)) + "٣٤٥" + "१२३" + "１２３" + "Ⅻ½²")
        else:
            out.append(f"0x{r.getrandbits(32):08x}")
        out.append(r.choice([" ", ", ", "\n", "", "$", "%", " * "]))
    return "".join(out)


def _whitespace(r, n):
    out = []
    for _ in range(n):
        out.append("".join(r.choice(WS) for _ in range(r.randint(1, 6))))
        out.append(r.choice(["a", "word", "Word", "!", "1", "", "'s", "日本", ".\n"]))
    out.append(" " * 3000 + "x" + "\n" * 2000 + "\r\n" * 500 + "y" + "\t" * 1000)
    return "".join(out)


def _contractions(r, n):
    out = []
    for _ in range(n):
        c = r.choice(CONTRACTIONS + ["'", "''", "'x"])
        c = "".join(ch.upper() if r.random() < 0.5 else ch for ch in c)
        out.append(r.choice(["", "it", "IT", "we", " ", "\n", "x'", "\u2019", "\u017f"]) + c)
        out.append(r.choice(["", " ", "'", "s", "\n"]))
    return "".join(out)


def _random_bmp(r, n):
    # assigned and stable code points only (Basic Latin .. Hangul, no surrogates / private use)
    out = []
    for _ in range(n):
        cp = r.randint(0x20, 0xD7A3)
        out.append(chr(cp))
        if r.random() < 0.1:
            out.append(" ")
    return "".join(out)


def _random_bytes(r, n):
    parts = []
    for _ in range(n):
        k = r.random()
        if k < 0.3:
            parts.append(bytes(r.getrandbits(8) for _ in range(r.randint(1, 12))))
        elif k < 0.5:
            parts.append(r.choice([b"\xe2\x82", b"\xf0\x9f\x98", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf",
                                   b"\xff\xfe", b"\x80\x80\x80", b"\xf4\x90\x80\x80"]))
        else:
            parts.append(_prose(r, r.randint(1, 6)).encode())
        parts.append(r.choice([b"", b" ", b"\n", b"a"]))
    return b"".join(parts)


def corpus_parts():
    r = random.Random(20240607)
    parts = [
        ("prose", _prose(r, 60000).encode()),
        ("code", _code(r, 900).encode()),
        ("scripts", _scripts(r, 9000).encode()),
        ("emoji", _emoji(r, 4000).encode()),
        ("combining", _combining(r, 4000).encode()),
        ("numbers", _numbers(r, 8000).encode()),
        ("whitespace", _whitespace(r, 6000).encode()),
        ("contractions", _contractions(r, 8000).encode()),
        ("random_bmp", _random_bmp(r, 20000).encode()),
        ("bytes", _random_bytes(r, 6000)),
    ]
    return parts


def corpus_bytes():
    return b"".join(p for _, p in corpus_parts())


# ---------------------------------------------------------------- reference (tiktoken)

LLAMA3_MODEL = "llama3-tokenizer/tokenizer.model"


def llama3_special_tokens():
    names = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
             "<|reserved_special_token_1|>", "<|reserved_special_token_2|>", "<|reserved_special_token_3|>",
             "<|start_header_id|>", "<|end_header_id|>", "<|reserved_special_token_4|>", "<|eot_id|>"]
    names += [f"<|reserved_special_token_{i}|>" for i in range(5, 256 - 5)]
    return {n: 128000 + i for i, n in enumerate(names)}


def llama3_reference(data_dir):
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe
    ranks = load_tiktoken_bpe(os.path.join(data_dir, LLAMA3_MODEL))
    return tiktoken.Encoding(name="llama3", pat_str=PAT, mergeable_ranks=ranks,
                             special_tokens=llama3_special_tokens())


def split_valid(data):
    """[(is_valid, bytes)]: maximal valid UTF-8 runs and runs of invalid bytes."""
    s = data.decode("utf-8", "surrogateescape")
    out = []
    cur, cur_valid = [], None
    for ch in s:
        v = not (0xDC80 <= ord(ch) <= 0xDCFF)
        if v != cur_valid and cur:
            out.append((cur_valid, "".join(cur)))
            cur = []
        cur_valid = v
        cur.append(ch)
    if cur:
        out.append((cur_valid, "".join(cur)))
    return [(v, t.encode("utf-8", "surrogateescape")) for v, t in out]


def ref_encode(enc, data):
    ids = []
    for valid, b in split_valid(data):
        if valid:
            ids += enc.encode_ordinary(b.decode("utf-8"))
        else:
            ids += enc._encode_single_piece(b)
    return ids
