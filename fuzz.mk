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

# ---- tokenizer and model loading (tests/fuzz/fuzz_tokenizer.c, fuzz_model.c)
#   make fuzz-tokenizer / fuzz-model / fuzz-all (every harness) [FUZZ_SECONDS=n]
# Instrumented: the harness, the GGUF seed writer (tests/unit/gguf_builder.c), the tokenizer, the
# GGUF reader and util (both), and for the model harness src/model/*.c and src/chat.c; kernels
# come uninstrumented from $(BUILD)/libllama3c.a. Seeds come from each harness's --write-seeds
# mode. fuzz_tokenizer reads the Llama 3 tokenizer.model from L3C_FUZZ_TOKENIZER (default
# /work/shared/data/llama3-tokenizer/tokenizer.model) and the SmolLM2 vocabulary from
# L3C_FUZZ_GGUF_VOCAB (default: scripts/default-model.sh); a missing one only skips its mode.
# -malloc_limit_mb makes one absurd allocation a finding even when the RSS would stay low.
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -O1 -g -Wall -Wextra -Wno-unused-parameter -Iinclude -Isrc \
               -Itests/unit -pthread
FUZZ_TOK_SRC := tests/fuzz/fuzz_tokenizer.c tests/unit/gguf_builder.c $(sort $(wildcard src/tokenizer/*.c)) \
                src/io/gguf.c src/util/util.c
FUZZ_MODEL_SRC := tests/fuzz/fuzz_model.c tests/unit/gguf_builder.c $(sort $(wildcard src/model/*.c)) \
                  $(sort $(wildcard src/tokenizer/*.c)) src/chat.c src/io/gguf.c src/util/util.c
FUZZ_RUN = -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
           -print_final_stats=1

$(FUZZ_DIR)/fuzz_tokenizer: $(FUZZ_TOK_SRC) $(BUILD)/libllama3c.a tests/unit/gguf_builder.h \
                            $(wildcard include/*.h src/*/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SAN) -o $@ $(FUZZ_TOK_SRC) $(BUILD)/libllama3c.a $(LDLIBS)

$(FUZZ_DIR)/fuzz_model: $(FUZZ_MODEL_SRC) $(BUILD)/libllama3c.a tests/unit/gguf_builder.h \
                        $(wildcard include/*.h src/*/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SAN) -o $@ $(FUZZ_MODEL_SRC) $(BUILD)/libllama3c.a $(LDLIBS)

$(FUZZ_DIR)/corpus/tokenizer: $(FUZZ_DIR)/fuzz_tokenizer
	$(FUZZ_DIR)/fuzz_tokenizer --write-seeds $@

$(FUZZ_DIR)/corpus/model: $(FUZZ_DIR)/fuzz_model
	$(FUZZ_DIR)/fuzz_model --write-seeds $@

fuzz-tokenizer: $(FUZZ_DIR)/fuzz_tokenizer $(FUZZ_DIR)/corpus/tokenizer
	cd $(FUZZ_DIR) && ./fuzz_tokenizer $(FUZZ_RUN) -max_len=4096 corpus/tokenizer

fuzz-model: $(FUZZ_DIR)/fuzz_model $(FUZZ_DIR)/corpus/model
	cd $(FUZZ_DIR) && ./fuzz_model $(FUZZ_RUN) -max_len=16384 corpus/model

fuzz-all: fuzz fuzz-tokenizer fuzz-model fuzz-server fuzz-chat fuzz-lora fuzz-grammar fuzz-eval

.PHONY: fuzz-tokenizer fuzz-model fuzz-all

# ---- safetensors reader (tests/fuzz/fuzz_safetensors.c)
#   make fuzz-safetensors [FUZZ_SECONDS=n]
# Instrumented: the harness, src/io/safetensors.c and util; jansson and the type table come
# uninstrumented. Seeds come from test_safetensors --write-seeds.
FUZZ_ST_SRC := tests/fuzz/fuzz_safetensors.c src/io/safetensors.c src/util/util.c

$(FUZZ_DIR)/fuzz_safetensors: $(FUZZ_ST_SRC) $(BUILD)/libllama3c.a $(wildcard include/*.h src/*/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SAN) -o $@ $(FUZZ_ST_SRC) $(BUILD)/libllama3c.a $(LDLIBS)

$(FUZZ_DIR)/corpus/safetensors: $(BUILD)/tests/test_safetensors
	@mkdir -p $@
	$(BUILD)/tests/test_safetensors --write-seeds $@

fuzz-safetensors: $(FUZZ_DIR)/fuzz_safetensors $(FUZZ_DIR)/corpus/safetensors
	cd $(FUZZ_DIR) && ./fuzz_safetensors $(FUZZ_RUN) -max_len=4096 corpus/safetensors

.PHONY: fuzz-safetensors

# ---- server request bodies and chat formatting (tests/fuzz/fuzz_server_request.c, fuzz_chat.c)
#   make fuzz-server / fuzz-chat [FUZZ_SECONDS=n]
# Both load the default model once (L3C_FUZZ_MODEL, else scripts/default-model.sh) and exit 1
# without it. fuzz_server_request: apps/server/openai.c's api_parse_request on arbitrary bodies,
# then every response writer; fuzz_chat: l3c_chat_format / l3c_chat_tokenize with every template
# (it #includes src/chat.c to reach the static default-system parser). Instrumented: the harness,
# openai.c, chat.c, the tokenizer, the GGUF reader and util; the model loader and kernels come
# uninstrumented from $(BUILD)/libllama3c.a.
FUZZ_SERVER_SRC := tests/fuzz/fuzz_server_request.c apps/server/openai.c apps/server/api_error.c \
                   apps/server/tools.c \
                   apps/server/grammar_cache.c src/chat.c src/io/pyjson.c \
                   $(sort $(wildcard src/tokenizer/*.c)) src/io/gguf.c src/util/util.c
FUZZ_CHAT_SRC := tests/fuzz/fuzz_chat.c $(sort $(wildcard src/tokenizer/*.c)) src/io/gguf.c src/util/util.c

$(FUZZ_DIR)/fuzz_server_request: $(FUZZ_SERVER_SRC) $(BUILD)/libllama3c.a $(wildcard apps/server/*.h) \
                                 tests/fuzz/fuzz_model_path.h $(wildcard include/*.h src/*/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -Iapps/server $(FUZZ_SAN) -o $@ $(FUZZ_SERVER_SRC) $(BUILD)/libllama3c.a $(LDLIBS)

$(FUZZ_DIR)/fuzz_chat: $(FUZZ_CHAT_SRC) src/chat.c $(BUILD)/libllama3c.a $(wildcard include/*.h src/*/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SAN) -o $@ $(FUZZ_CHAT_SRC) $(BUILD)/libllama3c.a $(LDLIBS)

$(FUZZ_DIR)/corpus/server: $(FUZZ_DIR)/fuzz_server_request
	@mkdir -p $@
	$(FUZZ_DIR)/fuzz_server_request --write-seeds $@

$(FUZZ_DIR)/corpus/chat: $(FUZZ_DIR)/fuzz_chat
	@mkdir -p $@
	$(FUZZ_DIR)/fuzz_chat --write-seeds $@

fuzz-server: $(FUZZ_DIR)/fuzz_server_request $(FUZZ_DIR)/corpus/server
	cd $(FUZZ_DIR) && ./fuzz_server_request $(FUZZ_RUN) -max_len=8192 corpus/server

fuzz-chat: $(FUZZ_DIR)/fuzz_chat $(FUZZ_DIR)/corpus/chat
	cd $(FUZZ_DIR) && ./fuzz_chat $(FUZZ_RUN) -max_len=4096 corpus/chat

# ---- CI: every harness built and run for FUZZ_CI_SECONDS each (default 20); any finding (crash,
# leak, timeout, out-of-memory) fails, and so does a harness whose reference vocabulary is missing
# (L3C_FUZZ_STRICT=1). The test data folder follows L3C_DATA as the tests do. Corpora grow in
# build-fuzz/corpus/ between runs; findings are left in build-fuzz/ (crash-*, leak-*, ...).
FUZZ_CI_SECONDS ?= 20
FUZZ_DATA ?= $(or $(L3C_DATA),$(if $(wildcard ../shared/data),../shared/data,shared/data))
FUZZ_CI_ENV = L3C_FUZZ_STRICT=1 L3C_FUZZ_TOKENIZER=$(abspath $(FUZZ_DATA))/llama3-tokenizer/tokenizer.model
fuzz-ci:
	$(MAKE) --no-print-directory $(FUZZ_DIR)/fuzz_gguf $(FUZZ_DIR)/fuzz_tokenizer $(FUZZ_DIR)/fuzz_model \
	  $(FUZZ_DIR)/fuzz_server_request $(FUZZ_DIR)/fuzz_chat $(FUZZ_DIR)/fuzz_safetensors $(FUZZ_DIR)/fuzz_lora \
	  $(FUZZ_DIR)/fuzz_grammar $(FUZZ_DIR)/fuzz_eval_files
	rm -f $(FUZZ_DIR)/crash-* $(FUZZ_DIR)/leak-* $(FUZZ_DIR)/timeout-* $(FUZZ_DIR)/oom-*
	$(FUZZ_CI_ENV) $(MAKE) --no-print-directory FUZZ_SECONDS=$(FUZZ_CI_SECONDS) fuzz fuzz-tokenizer fuzz-model \
	  fuzz-server fuzz-chat fuzz-safetensors fuzz-lora fuzz-grammar fuzz-eval

.PHONY: fuzz-server fuzz-chat fuzz-ci

# ---- the files `llama3c perplexity` reads (tests/fuzz/fuzz_eval_files.c)
#   make fuzz-eval [FUZZ_SECONDS=n]
# --kl-base files (header, token ids, rows scored by kl_row) and --multiple-choice JSONL
# (tokenized with the default model's vocabulary: L3C_FUZZ_MODEL, else scripts/default-model.sh;
# exit 1 without it). Instrumented: the harness (which #includes apps/cli/cmd_perplexity.c),
# apps/cli/common.c and logprob.c, the tokenizer, the GGUF reader and util.
FUZZ_EVAL_SRC := tests/fuzz/fuzz_eval_files.c apps/cli/common.c apps/cli/logprob.c \
                 $(sort $(wildcard src/tokenizer/*.c)) src/io/gguf.c src/util/util.c

$(FUZZ_DIR)/fuzz_eval_files: $(FUZZ_EVAL_SRC) apps/cli/cmd_perplexity.c apps/cli/common.h apps/cli/logprob.h tests/fuzz/fuzz_model_path.h \
                             $(BUILD)/libllama3c.a $(wildcard include/*.h src/*/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SAN) -o $@ $(FUZZ_EVAL_SRC) $(BUILD)/libllama3c.a $(LDLIBS)

$(FUZZ_DIR)/corpus/eval: $(FUZZ_DIR)/fuzz_eval_files
	@mkdir -p $@
	$(FUZZ_DIR)/fuzz_eval_files --write-seeds $@

fuzz-eval: $(FUZZ_DIR)/fuzz_eval_files $(FUZZ_DIR)/corpus/eval
	cd $(FUZZ_DIR) && ./fuzz_eval_files $(FUZZ_RUN) -max_len=8192 corpus/eval

.PHONY: fuzz-eval

# ---- GGUF LoRA adapters (tests/fuzz/fuzz_lora.c)
#   make fuzz-lora [FUZZ_SECONDS=n]
# Instrumented: the harness, the seed writer, src/model/lora.c and lora_io.c, the GGUF reader,
# safetensors, hf.c (the q / k permutation) and util; the rest from $(BUILD)/libllama3c.a.
FUZZ_LORA_SRC := tests/fuzz/fuzz_lora.c tests/unit/gguf_builder.c src/model/lora.c src/model/lora_io.c \
                 src/model/hf.c src/io/gguf.c src/io/gguf_write.c src/io/safetensors.c src/util/util.c

$(FUZZ_DIR)/fuzz_lora: $(FUZZ_LORA_SRC) $(BUILD)/libllama3c.a tests/unit/gguf_builder.h \
                       $(wildcard include/*.h src/*/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SAN) -o $@ $(FUZZ_LORA_SRC) $(BUILD)/libllama3c.a $(LDLIBS)

$(FUZZ_DIR)/corpus/lora: $(FUZZ_DIR)/fuzz_lora
	@mkdir -p $(FUZZ_DIR)/corpus
	$(FUZZ_DIR)/fuzz_lora --write-seeds $@

fuzz-lora: $(FUZZ_DIR)/fuzz_lora $(FUZZ_DIR)/corpus/lora
	cd $(FUZZ_DIR) && ./fuzz_lora $(FUZZ_RUN) -max_len=8192 corpus/lora

.PHONY: fuzz-lora

# ---- grammars (tests/fuzz/fuzz_grammar.c)
#   make fuzz-grammar [FUZZ_SECONDS=n]
# GBNF text and JSON Schemas (jansson uninstrumented), then the matcher driven over a synthetic
# vocabulary with masks checked against per-token checks. Instrumented: the harness,
# src/grammar/*.c and util; the rest from $(BUILD)/libllama3c.a. Seeds: fuzz_grammar --write-seeds.
FUZZ_GRAMMAR_SRC := tests/fuzz/fuzz_grammar.c $(sort $(wildcard src/grammar/*.c)) src/util/util.c

$(FUZZ_DIR)/fuzz_grammar: $(FUZZ_GRAMMAR_SRC) $(BUILD)/libllama3c.a $(wildcard include/*.h src/*/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SAN) -o $@ $(FUZZ_GRAMMAR_SRC) $(BUILD)/libllama3c.a $(LDLIBS)

$(FUZZ_DIR)/corpus/grammar: $(FUZZ_DIR)/fuzz_grammar
	@mkdir -p $(FUZZ_DIR)/corpus
	$(FUZZ_DIR)/fuzz_grammar --write-seeds $@

fuzz-grammar: $(FUZZ_DIR)/fuzz_grammar $(FUZZ_DIR)/corpus/grammar
	cd $(FUZZ_DIR) && ./fuzz_grammar $(FUZZ_RUN) -max_len=4096 corpus/grammar

.PHONY: fuzz-grammar
