"""Grammar mask cost per token: llama3c (bench/bench_grammar.c) against llama.cpp's grammar sampler
(llama-cpp-python) with the same GBNF grammar on the same GGUF vocabularies. Not part of CI.

For each vocabulary -- a tiny GGUF carrying Meta's Llama 3 vocabulary (128,256 tokens, built with
tests/py/gen_models.py from ../shared/data/llama3-tokenizer/tokenizer.model) and SmolLM2-135M's
GGUF (49,152 tokens) -- a JSON document is walked token by token under llama.cpp's json.gbnf:
  llama.cpp: llama_sampler_apply of the grammar sampler on all n_vocab candidates (its mask), then
             llama_sampler_accept of the document's token;
  llama3c:   the full trie-walk mask without its state cache, with the cache, and the sampler path
             (bench_grammar.c prints them).
Usage: .venv/bin/python bench/bench_grammar.py [--doc FILE] [--grammar FILE] [--reps N]
Build first: make lib && cc ... bench/bench_grammar.c (see its header) -o build/bench_grammar.
"""
import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "py"))
DATA = os.environ.get("L3C_DATA", os.path.join(os.path.dirname(REPO), "shared", "data"))

DOC = ('{"name": "Ada Lovelace", "born": 1815, "fields": ["mathematics", "computing"], "notes": "Wrote the '
       'first published algorithm for Babbage\'s Analytical Engine; called \\"the Enchantress of Numbers\\".", '
       '"children": [{"name": "Byron", "born": 1836}, {"name": "Anne Isabella", "born": 1837}, {"name": '
       '"Ralph", "born": 1839}], "alive": false, "height_m": 1.65, "tags": {"era": "Victorian", "country": '
       '"UK"}}')


def llama_cpp_mask_times(gguf, grammar, doc):
    import llama_cpp as lc
    llm = lc.Llama(gguf, vocab_only=True, verbose=False)
    vocab = llm._model.vocab
    n = llm.n_vocab()
    toks = llm.tokenize(doc.encode(), add_bos=False, special=False)
    smpl = lc.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    Arr = lc.llama_token_data * n
    template = Arr()
    for i in range(n):
        template[i].id, template[i].logit, template[i].p = i, 0.0, 0.0
    arr = Arr()
    times = []
    for t in toks:
        ctypes.memmove(arr, template, ctypes.sizeof(arr))
        cur = lc.llama_token_data_array(data=arr, size=n, selected=-1, sorted=False)
        a = time.perf_counter()
        lc.llama_sampler_apply(smpl, ctypes.byref(cur))
        times.append((time.perf_counter() - a) * 1e3)
        if arr[t].logit == float("-inf"):
            raise SystemExit(f"llama.cpp rejects the document at token {t}")
        lc.llama_sampler_accept(smpl, t)
    lc.llama_sampler_free(smpl)
    return times, len(toks)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--grammar", default=os.path.join(REPO, "tests", "py", "data", "grammars", "json.gbnf"))
    ap.add_argument("--doc", default=None)
    ap.add_argument("--reps", type=int, default=3, help="runs per engine; the best median is reported")
    args = ap.parse_args()
    doc = open(args.doc).read() if args.doc else DOC
    grammar = open(args.grammar).read()
    bench = os.path.join(REPO, "build", "bench_grammar")
    tmp = tempfile.mkdtemp(prefix="l3c_gbench_")
    docf = os.path.join(tmp, "doc.json")
    open(docf, "w").write(doc)

    import gen_models
    llama3 = os.path.join(tmp, "llama3_vocab.gguf")
    spec = gen_models.ModelSpec(n_embd=64, n_layer=1, n_head=2, n_head_kv=2, n_ff=128, n_vocab=128256,
                                llama3_vocab=os.path.join(DATA, "llama3-tokenizer", "tokenizer.model"))
    gen_models.write_model(llama3, spec, "F32")
    smol = subprocess.check_output(["sh", os.path.join(REPO, "scripts", "default-model.sh")], text=True).strip()

    rows = []
    for name, gguf in (("Llama 3 (128,256)", llama3), ("SmolLM2 (49,152)", smol)):
        ours = []
        for _ in range(args.reps):
            out = subprocess.check_output([bench, gguf, args.grammar, docf, "--json"], text=True)
            ours.append(json.loads(out))
        best = min(ours, key=lambda r: r["mask_median_ms"])
        lc_runs = [llama_cpp_mask_times(gguf, grammar, doc) for _ in range(args.reps)]
        lc_med = min(statistics.median(t) for t, _ in lc_runs)
        lc_mean = min(statistics.mean(t) for t, _ in lc_runs)
        rows.append((name, best, lc_med, lc_mean))
    print(f"{'vocabulary':20} {'llama.cpp mask':>16} {'llama3c mask':>14} {'x faster':>9} {'llama3c cached':>15}"
          f" {'sample ok':>10} {'sample rej':>11} {'no grammar':>11}")
    print(f"{'':20} {'median / mean':>16} {'median / mean':>14} {'(median)':>9} {'median / mean':>15}"
          f" {'median':>10} {'median':>11} {'median':>11}")
    for name, r, lm, lmean in rows:
        print(f"{name:20} {lm:7.3f} / {lmean:6.3f} {r['mask_median_ms']:6.3f} / {r['mask_mean_ms']:5.3f} "
              f"{lm / r['mask_median_ms']:9.0f} {r['cached_median_ms']:6.4f} / {r['cached_mean_ms']:6.3f} "
              f"{r['sample_fast_median_ms']:10.4f} {r['sample_reject_median_ms']:11.4f} {r['plain_median_ms']:11.4f}")
    print("(milliseconds per token; document of", rows[0][1]["tokens"], "Llama 3 tokens)")


if __name__ == "__main__":
    main()
