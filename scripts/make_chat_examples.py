#!/usr/bin/env python3
"""Deterministic chat fine-tuning examples (JSONL, {"messages": [...]} per line) whose answers are
trivially true, so a LoRA fine-tune measurably changes a model's answers without teaching it
anything false: arithmetic, unit conversions, words spelled backwards, and, given the King James
Bible as printed by `bible -f` (Debian bible-kjv, public domain), verse lookups
("Quote John 3:16 (KJV)." -> the verse).

  scripts/make_chat_examples.py [-n 300] [--seed 0] [--kjv kjv_refs.txt] [-o out.jsonl]

Same arguments, same bytes. The answers keep one fixed style ("37 + 48 = 85.") so that the style
itself is what training changes. examples/train/chat_small.jsonl is `-n 300 --seed 0`.
"""
import argparse
import json
import random
import re
import sys

WORDS = ("garden river mountain window candle harvest silver morning thunder forest valley lantern "
         "meadow bridge castle shepherd kingdom vineyard wilderness fountain orchard harbour compass "
         "feather whisper journey blanket pebble sparrow island granite cabinet pocket ladder marble "
         "saddle kettle mirror pillow rabbit ribbon shadow tunnel violin wagon yellow zebra anchor").split()

UNITS = [  # (from, to, factor, question noun)
    ("km", "m", 1000, "metres"), ("m", "cm", 100, "centimetres"), ("kg", "g", 1000, "grams"),
    ("h", "min", 60, "minutes"), ("L", "mL", 1000, "millilitres"), ("min", "s", 60, "seconds"),
]

BOOKS = {"Ge": "Genesis", "Exo": "Exodus", "Psa": "Psalms", "Prv": "Proverbs", "Eccl": "Ecclesiastes",
         "Isa": "Isaiah", "Mat": "Matthew", "Mark": "Mark", "Luke": "Luke", "John": "John", "Rom": "Romans"}

SYSTEMS = [None, None, "Answer with the result only, in one short sentence.", "You are a precise assistant."]


def fmt_num(x):
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def arithmetic(r):
    a, b = r.randint(2, 99), r.randint(2, 99)
    op = r.choice("+-*")
    if op == "-" and b > a:
        a, b = b, a
    val = a + b if op == "+" else a - b if op == "-" else a * b
    sym = {"+": "+", "-": "-", "*": "×"}[op]
    q = r.choice([f"What is {a} {sym} {b}?", f"Compute {a} {sym} {b}.", f"{a} {sym} {b} = ?"])
    return q, f"{a} {sym} {b} = {val}."


def conversion(r):
    src, dst, f, noun = r.choice(UNITS)
    v = r.choice([r.randint(1, 40), r.randint(1, 95) / 10])
    return f"Convert {fmt_num(v)} {src} to {noun}.", f"{fmt_num(v)} {src} = {fmt_num(round(v * f, 6))} {dst}."


def backwards(r):
    w = r.choice(WORDS)
    return f"Spell '{w}' backwards.", f"'{w}' backwards is '{w[::-1]}'."


def load_verses(path):
    verses = []
    pat = re.compile(r"^([1-3]?[A-Za-z]+)(\d+):(\d+) (.+)$")
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = pat.match(line.rstrip("\n"))
            if m and m.group(1) in BOOKS and len(m.group(4)) <= 160:
                verses.append((BOOKS[m.group(1)], int(m.group(2)), int(m.group(3)), m.group(4)))
    return verses


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kjv", help="`bible -f` output (verse references kept) for verse-lookup examples")
    ap.add_argument("-o", "--out", help="output file (default stdout)")
    a = ap.parse_args()
    r = random.Random(a.seed)
    kinds = [arithmetic, conversion, backwards]
    verses = load_verses(a.kjv) if a.kjv else []
    seen, out = set(), []
    while len(out) < a.n:
        if verses and r.random() < 0.3:
            book, ch, vs, text = r.choice(verses)
            q, ans = f"Quote {book} {ch}:{vs} (KJV).", text
        else:
            q, ans = r.choice(kinds)(r)
        if q in seen:
            continue
        seen.add(q)
        msgs = []
        sys_msg = r.choice(SYSTEMS)
        if sys_msg:
            msgs.append({"role": "system", "content": sys_msg})
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": ans}]
        out.append(json.dumps({"messages": msgs}, ensure_ascii=False))
    f = open(a.out, "w", encoding="utf-8") if a.out else sys.stdout
    f.write("\n".join(out) + "\n")
    if a.out:
        f.close()


if __name__ == "__main__":
    main()
