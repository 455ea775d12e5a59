"""Tokenizer throughput: llama3c vs tiktoken (single thread), Llama 3 vocabulary, same run.

Builds ~10 MB of mixed text (the test corpus, valid UTF-8 parts, repeated), then times
  - `llama3c tokenize --ids --time -f FILE --tokenizer tokenizer.model` (load and tokenize times
    are reported separately by the CLI; MB/s counts tokenize only),
  - tiktoken Encoding.encode_ordinary on the same text (one thread),
and checks both give the same number of tokens. Usage:
  python3 bench/bench_tokenizer.py [--mb 10] [--build build] [--data ../shared/data]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "py"))
import tokenizer_corpus as tc  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=10)
    ap.add_argument("--build", default=os.environ.get("L3C_BUILD", "build"))
    ap.add_argument("--data", default=os.environ.get("L3C_DATA", os.path.join(os.path.dirname(REPO), "shared", "data")))
    a = ap.parse_args()
    model = os.path.join(a.data, tc.LLAMA3_MODEL)
    binary = os.path.join(REPO, a.build, "llama3c")
    base = b"".join(b for name, b in tc.corpus_parts() if name != "bytes")
    reps = max(1, int(a.mb * 1e6 / len(base)))
    data = base * reps
    text = data.decode()
    with tempfile.NamedTemporaryFile(suffix=".txt", delete=False) as f:
        f.write(data)
        path = f.name
    try:
        p = subprocess.run([binary, "tokenize", "--tokenizer", model, "--ids", "--time", "-f", path],
                           capture_output=True, text=True, check=True)
        m = re.search(r"load ([\d.]+) s, tokenize ([\d.]+) s", p.stderr)
        load_s, tok_s = float(m.group(1)), float(m.group(2))
        n_ours = len(p.stdout.split())
    finally:
        os.unlink(path)
    enc = tc.llama3_reference(a.data)
    t = time.perf_counter()
    ids = enc.encode_ordinary(text)
    tt_s = time.perf_counter() - t
    mb = len(data) / 1e6
    print(f"text: {mb:.2f} MB, {len(ids)} tokens (llama3c {n_ours}{'' if n_ours == len(ids) else ' MISMATCH'})")
    print(f"llama3c : load {load_s:.3f} s, tokenize {tok_s:.3f} s -> {mb / tok_s:.2f} MB/s "
          f"({mb / (tok_s + load_s):.2f} MB/s including load)")
    print(f"tiktoken: encode_ordinary {tt_s:.3f} s -> {mb / tt_s:.2f} MB/s (single thread)")
    print(f"ratio llama3c/tiktoken: {tt_s / tok_s:.2f}x")
    return 0 if n_ours == len(ids) else 1


if __name__ == "__main__":
    sys.exit(main())
