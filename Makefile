# llama3c build. `make` builds the library, the CLI and the unit tests into $(BUILD)/;
# `make test` runs every test; `make asan` builds and tests under ASan+UBSan in build-asan/.
# System packages (Debian): build-essential pkg-config libpcre2-dev libjansson-dev libmicrohttpd-dev libsqlite3-dev
# libedit-dev (chat's line editing) (scripts/setup.sh installs them).

CC      ?= cc
# MPI=1: the same program joined to an MPI job when started by mpirun (src/dist/comm_mpi.c, Open MPI:
# openmpi-bin libopenmpi-dev), built into its own folder; plain `make` uses src/dist/comm_none.c.
MPI     ?= 0
ifeq ($(MPI),1)
BUILD   ?= build-mpi
MPI_CFLAGS := $(shell pkg-config --cflags ompi-c 2>/dev/null)
MPI_LIBS   := $(shell pkg-config --libs ompi-c 2>/dev/null)
ifeq ($(MPI_LIBS),)
$(error MPI=1 needs Open MPI's development files (Debian: openmpi-bin libopenmpi-dev; pkg-config ompi-c))
endif
endif
BUILD   ?= build
OPT     ?= -O2
SANFLAGS ?=
PYTHON  ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)

# target architecture: the compiler's (CC=aarch64-linux-gnu-gcc gets the arm64 ISA flags), else uname
ARCH    := $(firstword $(subst -, ,$(shell $(CC) -dumpmachine 2>/dev/null)) $(shell uname -m))
CFLAGS_COMMON = -std=c11 -D_GNU_SOURCE $(OPT) -g -Wall -Wextra -Wno-unused-parameter \
                -fPIC -Iinclude -Isrc -pthread $(SANFLAGS) $(EXTRA_CFLAGS)
LIB_CFLAGS = $(CFLAGS_COMMON) -fvisibility=hidden
APP_CFLAGS = $(CFLAGS_COMMON)
# kernels/dispatch.c references the x86 ISA hooks strongly (those files always compile), so
# nothing extra is needed for them; an arm_neon.c hook would be weak, which does not pull its
# object out of a static archive: -u names it so the linker does.
ISA_HOOKS := $(patsubst src/kernels/arm_%.c,l3c_kernels_override_%,$(wildcard src/kernels/arm_neon.c))
LDLIBS  = -lpcre2-8 -ljansson -lpthread -lm $(ISA_HOOKS:%=-Wl,-u,%) $(MPI_LIBS)
APP_LDLIBS = -lmicrohttpd -lsqlite3 -ledit $(LDLIBS)

LIB_SRC  := $(filter-out src/dist/comm_$(if $(filter 1,$(MPI)),none,mpi).c,$(sort $(wildcard src/*.c src/*/*.c)))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
APP_SRC  := $(sort $(wildcard apps/cli/*.c apps/server/*.c apps/rag/*.c))
APP_OBJ  := $(APP_SRC:%.c=$(BUILD)/%.o)
TEST_SRC := $(sort $(wildcard tests/unit/test_*.c))
TEST_BIN := $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/%)
TEST_HELPERS := $(filter-out $(TEST_SRC),$(wildcard tests/unit/*.c))
# test drivers that are not unit tests (run by the Python tests)
TRAIN_DUMP := $(BUILD)/tests/train_dump
DATA_DUMP := $(BUILD)/tests/data_dump

# Per-ISA kernel files get their own flags; the code inside picks them at run time (dispatch.c).
ifeq ($(ARCH),x86_64)
$(BUILD)/src/kernels/x86_avx2.o:   ISA_FLAGS = -mavx2 -mfma -mf16c
$(BUILD)/src/kernels/x86_avx512.o: ISA_FLAGS = -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512dq \
                                               -mavx512vl -mavx512vnni -mavx512bf16
$(BUILD)/src/kernels/x86_amx_emu.o: ISA_FLAGS = -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512dq \
                                               -mavx512vl -mavx512vnni -mavx512bf16
$(BUILD)/src/kernels/x86_amx.o:    ISA_FLAGS = -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512dq \
                                               -mavx512vl -mavx512vnni -mavx512bf16 -mamx-tile \
                                               -mamx-int8 -mamx-bf16 -fno-tree-dse -fno-dse
endif
# the one file that includes mpi.h (per-file flags, like the ISA files)
$(BUILD)/src/dist/comm_mpi.o: ISA_FLAGS = $(MPI_CFLAGS)
ifeq ($(ARCH),aarch64)
# dispatch.c offers the neon path only where AT_HWCAP reports the dot-product extension
$(BUILD)/src/kernels/arm_neon.o:   ISA_FLAGS = -march=armv8.2-a+dotprod
endif

.PHONY: all lib cli tests test test-unit test-py test-arm64 asan asan-ci fuzz clean demo compile_commands \
        shared install uninstall

all: lib cli tests

lib: $(BUILD)/libllama3c.a
cli: $(BUILD)/llama3c
tests: $(TEST_BIN) $(TRAIN_DUMP) $(DATA_DUMP) $(BUILD)/bench/rag_scale

$(BUILD)/%.o: %.c $(wildcard include/*.h src/*/*.h src/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(if $(filter src/%,$<),$(LIB_CFLAGS),$(APP_CFLAGS)) $(ISA_FLAGS) -c $< -o $@

$(APP_OBJ): $(wildcard apps/*/*.h)

$(BUILD)/libllama3c.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

# The shared library: the same objects (all -fPIC), only the public l3c_* symbols exported
# (-fvisibility=hidden + L3C_API, and the version script as a second fence), soname libllama3c.so.MAJOR.
VERSION := $(shell sed -n 's/.*l3c_version(void) { return "\([0-9.]*\)"; }.*/\1/p' src/util/util.c)
SOMAJOR := $(firstword $(subst ., ,$(VERSION)))
SONAME  := libllama3c.so.$(SOMAJOR)
SHLIB   := $(BUILD)/libllama3c.so.$(VERSION)
shared: $(SHLIB)
$(SHLIB): $(LIB_OBJ) src/llama3c.map
	$(CC) $(CFLAGS_COMMON) -shared -Wl,-soname,$(SONAME) -Wl,--version-script=src/llama3c.map \
	  -Wl,--no-undefined -o $@ $(LIB_OBJ) $(LDLIBS)

$(BUILD)/llama3c: $(APP_OBJ) $(BUILD)/libllama3c.a
	$(CC) $(APP_CFLAGS) -o $@ $(APP_OBJ) $(BUILD)/libllama3c.a $(APP_LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(TEST_HELPERS) $(BUILD)/libllama3c.a $(wildcard tests/unit/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(APP_CFLAGS) -Itests/unit -o $@ $< $(TEST_HELPERS) $(BUILD)/libllama3c.a $(LDLIBS)

# the RAG store's unit test includes apps/rag/ sources, which use SQLite
$(BUILD)/tests/test_rag_pool: LDLIBS += -lsqlite3
$(BUILD)/tests/test_rag_pool: $(wildcard apps/rag/*.c apps/rag/*.h)

$(TRAIN_DUMP): tests/train/train_dump.c $(BUILD)/libllama3c.a
	@mkdir -p $(dir $@)
	$(CC) $(APP_CFLAGS) -o $@ $< $(BUILD)/libllama3c.a $(LDLIBS)

$(DATA_DUMP): tests/train/data_dump.c $(BUILD)/libllama3c.a
	@mkdir -p $(dir $@)
	$(CC) $(APP_CFLAGS) -o $@ $< $(BUILD)/libllama3c.a $(LDLIBS)

# bench/rag_scale.c: the RAG index's vector search at 10k..1M chunks (docs/RAG.md; not a test)
RAG_OBJ := $(filter $(BUILD)/apps/rag/%,$(APP_OBJ))
$(BUILD)/bench/rag_scale: bench/rag_scale.c $(RAG_OBJ) $(BUILD)/libllama3c.a
	@mkdir -p $(dir $@)
	$(CC) $(APP_CFLAGS) -o $@ $< $(RAG_OBJ) $(BUILD)/libllama3c.a $(APP_LDLIBS)

test-unit: $(TEST_BIN)
	@sh tests/run_unit.sh $(TEST_BIN)

test-py: $(BUILD)/llama3c
	L3C_BUILD=$(BUILD) $(PYTHON) -m pytest -q tests/py $(PYTEST_ARGS)

test: all
	@$(MAKE) --no-print-directory test-unit
	@$(MAKE) --no-print-directory test-py

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer.
asan:
	$(MAKE) BUILD=build-asan OPT=-O1 \
	  SANFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	  test

# CI's sanitizer pass: every C unit test and the Python tests not marked slow, on the ASan build.
ASAN_MAKE = $(MAKE) --no-print-directory BUILD=build-asan OPT=-O1 \
  SANFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
asan-ci:
	$(ASAN_MAKE) all
	$(ASAN_MAKE) test-unit
	$(ASAN_MAKE) test-py PYTEST_ARGS='-m "not slow"'

# arm64 under user-mode qemu (Debian: gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user):
# the library without the tokenizer (no arm64 pcre2 in the cross sysroot) and the unit tests that
# need no tokenizer, cross-compiled into build-arm64/, linked statically (qemu needs no sysroot)
# and run on an emulated CPU with the dot-product extension (`-cpu max`: the neon path is tested
# against ref), once forced to the reference kernels, and test_kernels on a Cortex-A72 (no
# dot-product: dispatch must fall back to ref).
ARM64_CC    ?= aarch64-linux-gnu-gcc
QEMU_ARM64  ?= qemu-aarch64
# the tests only (not the library): Debian's cross GCC 12.2 crashes vectorizing loops in
# test_kernels.c, test_ops.c and test_model.c (ICE in vect_transform_reduction)
ARM64_TEST_CFLAGS ?= -fno-tree-vectorize
ARM64_TESTS := test_kernels test_simd test_ops test_gguf test_sampler
ARM64_BIN    = $(ARM64_TESTS:%=build-arm64/tests/%)
test-arm64:
	@$(MAKE) --no-print-directory BUILD=build-arm64 CC=$(ARM64_CC) ARCH=aarch64 \
	  LIB_SRC="$(filter-out src/tokenizer/%,$(LIB_SRC))" \
	  APP_CFLAGS='$$(CFLAGS_COMMON) $(ARM64_TEST_CFLAGS)' \
	  LDLIBS="-static -lpthread -lm $(ISA_HOOKS:%=-Wl,-u,%)" $(ARM64_BIN)
	@echo "== arm64 (qemu -cpu max: neon with dot-product)"
	@L3C_TEST_WRAPPER="$(QEMU_ARM64) -cpu max" sh tests/run_unit.sh $(ARM64_BIN)
	@echo "== arm64, L3C_KERNELS=ref"
	@L3C_KERNELS=ref L3C_TEST_WRAPPER="$(QEMU_ARM64) -cpu max" sh tests/run_unit.sh $(ARM64_BIN)
	@echo "== arm64 on a Cortex-A72 (no dot-product): dispatch falls back to ref"
	@out=$$($(QEMU_ARM64) -cpu cortex-a72 build-arm64/tests/test_kernels 2>&1) || { echo "$$out"; exit 1; }; \
	  echo "$$out" | grep "paths available: ref;"

# make install [PREFIX=/usr/local] [DESTDIR=]: the program, the header, the static and the shared
# library (with its soname links) and llama3c.pc for pkg-config (docs/INSTALL.md). `make uninstall`
# removes exactly those files.
PREFIX  ?= /usr/local
LIBDIR  ?= $(PREFIX)/lib
INCDIR  ?= $(PREFIX)/include
BINDIR  ?= $(PREFIX)/bin
PCDIR   ?= $(LIBDIR)/pkgconfig
install: $(BUILD)/libllama3c.a $(SHLIB) $(BUILD)/llama3c scripts/llama3c.pc.in
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(INCDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PCDIR)
	install -m 755 $(BUILD)/llama3c $(DESTDIR)$(BINDIR)/llama3c
	install -m 644 include/llama3c.h $(DESTDIR)$(INCDIR)/llama3c.h
	install -m 644 $(BUILD)/libllama3c.a $(DESTDIR)$(LIBDIR)/libllama3c.a
	install -m 755 $(SHLIB) $(DESTDIR)$(LIBDIR)/libllama3c.so.$(VERSION)
	ln -sf libllama3c.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libllama3c.so
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCDIR@|$(INCDIR)|' \
	    -e 's|@VERSION@|$(VERSION)|' scripts/llama3c.pc.in >$(DESTDIR)$(PCDIR)/llama3c.pc
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/llama3c $(DESTDIR)$(INCDIR)/llama3c.h $(DESTDIR)$(LIBDIR)/libllama3c.a \
	      $(DESTDIR)$(LIBDIR)/libllama3c.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME) \
	      $(DESTDIR)$(LIBDIR)/libllama3c.so $(DESTDIR)$(PCDIR)/llama3c.pc

demo: $(BUILD)/llama3c
	./$(BUILD)/llama3c chat -m "$$(sh scripts/default-model.sh)" -n 128 \
	  -p "What is the capital of France? Answer in one sentence."

compile_commands:
	bear -- $(MAKE) -B all

clean:
	rm -rf build build-asan build-fuzz build-arm64 build-mpi

-include fuzz.mk
