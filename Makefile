# llama3c build. `make` builds the library, the CLI and the unit tests into $(BUILD)/;
# `make test` runs every test; `make asan` builds and tests under ASan+UBSan in build-asan/.
# System packages (Debian): build-essential libpcre2-dev libjansson-dev libmicrohttpd-dev
# (scripts/setup.sh installs them).

CC      ?= cc
BUILD   ?= build
OPT     ?= -O2
SANFLAGS ?=
PYTHON  ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)

ARCH    := $(shell uname -m)
CFLAGS_COMMON = -std=c11 -D_GNU_SOURCE $(OPT) -g -Wall -Wextra -Wno-unused-parameter \
                -fPIC -Iinclude -Isrc -pthread $(SANFLAGS) $(EXTRA_CFLAGS)
LIB_CFLAGS = $(CFLAGS_COMMON) -fvisibility=hidden
APP_CFLAGS = $(CFLAGS_COMMON)
# kernels/dispatch.c references the x86 ISA hooks strongly (those files always compile), so
# nothing extra is needed for them; an arm_neon.c hook would be weak, which does not pull its
# object out of a static archive: -u names it so the linker does.
ISA_HOOKS := $(patsubst src/kernels/arm_%.c,l3c_kernels_override_%,$(wildcard src/kernels/arm_neon.c))
LDLIBS  = -lpcre2-8 -ljansson -lpthread -lm $(ISA_HOOKS:%=-Wl,-u,%)
APP_LDLIBS = -lmicrohttpd $(LDLIBS)

LIB_SRC  := $(sort $(wildcard src/*.c src/*/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
APP_SRC  := $(sort $(wildcard apps/cli/*.c apps/server/*.c))
APP_OBJ  := $(APP_SRC:%.c=$(BUILD)/%.o)
TEST_SRC := $(sort $(wildcard tests/unit/test_*.c))
TEST_BIN := $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/%)
TEST_HELPERS := $(filter-out $(TEST_SRC),$(wildcard tests/unit/*.c))

# Per-ISA kernel files get their own flags; the code inside picks them at run time (dispatch.c).
ifeq ($(ARCH),x86_64)
$(BUILD)/src/kernels/x86_avx2.o:   ISA_FLAGS = -mavx2 -mfma -mf16c
$(BUILD)/src/kernels/x86_avx512.o: ISA_FLAGS = -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512dq \
                                               -mavx512vl -mavx512vnni -mavx512bf16
$(BUILD)/src/kernels/x86_amx.o:    ISA_FLAGS = -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512dq \
                                               -mavx512vl -mavx512vnni -mavx512bf16 -mamx-tile \
                                               -mamx-int8 -mamx-bf16 -fno-tree-dse -fno-dse
endif

.PHONY: all lib cli tests test test-unit test-py asan asan-ci fuzz clean demo compile_commands

all: lib cli tests

lib: $(BUILD)/libllama3c.a
cli: $(BUILD)/llama3c
tests: $(TEST_BIN)

$(BUILD)/%.o: %.c $(wildcard include/*.h src/*/*.h src/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(if $(filter src/%,$<),$(LIB_CFLAGS),$(APP_CFLAGS)) $(ISA_FLAGS) -c $< -o $@

$(APP_OBJ): $(wildcard apps/*/*.h)

$(BUILD)/libllama3c.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/llama3c: $(APP_OBJ) $(BUILD)/libllama3c.a
	$(CC) $(APP_CFLAGS) -o $@ $(APP_OBJ) $(BUILD)/libllama3c.a $(APP_LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(TEST_HELPERS) $(BUILD)/libllama3c.a $(wildcard tests/unit/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(APP_CFLAGS) -Itests/unit -o $@ $< $(TEST_HELPERS) $(BUILD)/libllama3c.a $(LDLIBS)

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

demo: $(BUILD)/llama3c
	./$(BUILD)/llama3c chat -m "$$(sh scripts/default-model.sh)" -n 128 \
	  -p "What is the capital of France? Answer in one sentence."

compile_commands:
	bear -- $(MAKE) -B all

clean:
	rm -rf build build-asan build-fuzz

-include fuzz.mk
