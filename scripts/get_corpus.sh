#!/bin/sh
# Public-domain training corpus: the King James Bible from Debian's bible-kjv (`bible`, installed by
# scripts/setup.sh), written to OUT (default build/corpus):
#   kjv_refs.txt   `bible -f "Gen1:1-Rev22:21"` as printed: "Ge1:1 In the beginning ..." (4.4 MB)
#   kjv.txt        the text for `llama3c train --data`: verse references stripped, one verse per
#                  line, a blank line between chapters (references would teach the model "Ge1:1"
#                  tokens rather than prose)
#   kjv_chat.jsonl 300 chat examples (scripts/make_chat_examples.py --kjv: arithmetic, unit
#                  conversions, words backwards, ~30% "Quote John 3:16 (KJV)." verse lookups)
# The same inputs give the same bytes; sha256 sums are printed.
#   usage: scripts/get_corpus.sh [OUT]
set -eu
root=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
out=${1:-$root/build/corpus}
command -v bible >/dev/null 2>&1 || {
    echo "get_corpus.sh: 'bible' not found: install the Debian packages bible-kjv bible-kjv-text (scripts/setup.sh does)" >&2
    exit 1
}
mkdir -p "$out"
bible -f "Gen1:1-Rev22:21" > "$out/kjv_refs.txt.tmp"
n=$(wc -l < "$out/kjv_refs.txt.tmp")
[ "$n" -eq 31102 ] || { echo "get_corpus.sh: expected 31102 verses from bible, got $n" >&2; exit 1; }
mv "$out/kjv_refs.txt.tmp" "$out/kjv_refs.txt"
# "Ge1:1 text" -> "text"; a blank line before each new chapter
LC_ALL=C awk '{
    ref = $1; sub(/:[0-9]+$/, "", ref)
    if (NR > 1 && ref != prev) print ""
    prev = ref
    sub(/^[^ ]+ /, "")
    print
}' "$out/kjv_refs.txt" > "$out/kjv.txt"
py=python3
[ -x "$root/.venv/bin/python" ] && py="$root/.venv/bin/python"
"$py" "$root/scripts/make_chat_examples.py" -n 300 --seed 0 --kjv "$out/kjv_refs.txt" -o "$out/kjv_chat.jsonl"
cd "$out" && sha256sum kjv_refs.txt kjv.txt kjv_chat.jsonl
