# fuzz.mk -- libFuzzer targets (included by the Makefile).
#   make fuzz                    builds build-fuzz/fuzz_gguf (clang, libFuzzer + ASan + UBSan) and
#                                runs it for FUZZ_SECONDS on a seed corpus written by test_gguf
#   make fuzz FUZZ_SECONDS=600
# The parser under test (src/io/gguf.c) and util.c are compiled with clang and instrumented; the
# rest (the type table) comes uninstrumented from the normal $(BUILD)/libllama3c.a, whose copies
# of those two objects the linker then leaves out. Findings (crash-*, leak-*, timeout-*) are
# written to build-fuzz/.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_DIR     := build-fuzz
FUZZ_SAN     := -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_GGUF_SRC := tests/fuzz/fuzz_gguf.c src/io/gguf.c src/util/util.c

$(FUZZ_DIR)/fuzz_gguf: $(FUZZ_GGUF_SRC) $(BUILD)/libllama3c.a $(wildcard include/*.h src/*/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -std=c11 -D_GNU_SOURCE -O1 -g -Wall -Wextra -Wno-unused-parameter -Iinclude -Isrc \
	  $(FUZZ_SAN) -o $@ $(FUZZ_GGUF_SRC) $(BUILD)/libllama3c.a $(LDLIBS)

$(FUZZ_DIR)/corpus/gguf: $(BUILD)/tests/test_gguf
	@mkdir -p $@
	$(BUILD)/tests/test_gguf --write-seeds $@

fuzz: $(FUZZ_DIR)/fuzz_gguf $(FUZZ_DIR)/corpus/gguf
	cd $(FUZZ_DIR) && ./fuzz_gguf -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -timeout=10 \
	  -rss_limit_mb=2048 -print_final_stats=1 corpus/gguf
