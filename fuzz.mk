# fuzz.mk -- libFuzzer targets (included by the Makefile).
#   make fuzz                 builds build-fuzz/fuzz_gguf with clang (libFuzzer + ASan + UBSan) and
#                             runs it for FUZZ_SECONDS on a seed corpus written by test_gguf
#   make fuzz FUZZ_SECONDS=600
# The library is rebuilt with clang into build-fuzz/ with -fsanitize=fuzzer-no-link so the
# reader's code paths count as coverage. Findings (crash-*, leak-*) land in build-fuzz/.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_DIR     := build-fuzz
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer

$(FUZZ_DIR)/libllama3c.a: FORCE_FUZZ_LIB
	$(MAKE) --no-print-directory BUILD=$(FUZZ_DIR) CC=$(FUZZ_CC) OPT=-O1 \
	  SANFLAGS="$(FUZZ_SAN) -fsanitize=fuzzer-no-link" $(FUZZ_DIR)/libllama3c.a

$(FUZZ_DIR)/fuzz_gguf: tests/fuzz/fuzz_gguf.c $(FUZZ_DIR)/libllama3c.a
	$(FUZZ_CC) -std=c11 -D_GNU_SOURCE -O1 -g -Iinclude -Isrc $(FUZZ_SAN) -fsanitize=fuzzer \
	  -o $@ $< $(FUZZ_DIR)/libllama3c.a $(LDLIBS)

$(FUZZ_DIR)/corpus/gguf: $(BUILD)/tests/test_gguf
	@mkdir -p $@
	$(BUILD)/tests/test_gguf --write-seeds $@

fuzz: $(FUZZ_DIR)/fuzz_gguf $(FUZZ_DIR)/corpus/gguf
	cd $(FUZZ_DIR) && ./fuzz_gguf -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -timeout=10 \
	  -rss_limit_mb=2048 corpus/gguf

.PHONY: FORCE_FUZZ_LIB
FORCE_FUZZ_LIB:
