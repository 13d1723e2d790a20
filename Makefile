# pagedkv — build, test, run, bench.
#
#   make            library (static + shared), pagedkv tool, examples
#   make run        the default multi-sequence workload
#   make test       the whole Check suite (release build)
#   make debug      suite with PKV_DEBUG=2 (full validator after every mutation)
#   make asan       suite under ASan+UBSan
#   make tsan       concurrency tests under ThreadSanitizer
#   make fuzz       libFuzzer harnesses (clang) in build/fuzz; fuzz-long runs them
#   make valgrind   release suite under valgrind memcheck
#   make bench      performance suite (BENCH_JSON=FILE appends JSON lines)
#   make install PREFIX=/usr/local
#
# MODE selects the build directory and flags (release, debug, asan, tsan);
# the debug/asan/tsan targets set it themselves.

MODE    ?= release
PREFIX  ?= /usr/local
CC      ?= cc
BUILD   := build/$(MODE)
VERSION := 0.1.0
SOMAJOR := 0

DEPS_OK := $(shell scripts/deps.sh build >&2 && echo ok)
ifneq ($(DEPS_OK),ok)
$(error missing build dependencies (see the message above))
endif

PKGS_CFLAGS := $(shell pkg-config --cflags check libxxhash)
CHECK_LIBS  := $(shell pkg-config --libs check)

WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-missing-field-initializers
CSTD    := -std=c11 -D_GNU_SOURCE
CFLAGS_BASE := $(CSTD) $(WARN) -fvisibility=hidden -fPIC -pthread -Iinclude -Ilibpagedkv -Iengine $(PKGS_CFLAGS)
LDLIBS_BASE := -lxxhash -lm -pthread

ifeq ($(MODE),release)
  OPT := -O2 -g -DPKV_DEBUG=0
  ALLOC_LIBS := -ljemalloc
  KOPT := -O3
else ifeq ($(MODE),debug)
  OPT := -O0 -g -DPKV_DEBUG=2
  ALLOC_LIBS := -ljemalloc
  KOPT := -O1
else ifeq ($(MODE),asan)
  # jemalloc would fight the sanitizer's malloc: use libc's under sanitizers.
  OPT := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all -DPKV_DEBUG=1 -DPKV_NO_JEMALLOC -DPKV_SANITIZE=1
  ALLOC_LIBS := -fsanitize=address,undefined
  KOPT := -O1
else ifeq ($(MODE),tsan)
  OPT := -O1 -g -fno-omit-frame-pointer -fsanitize=thread -DPKV_DEBUG=1 -DPKV_NO_JEMALLOC -DPKV_SANITIZE=1
  ALLOC_LIBS := -fsanitize=thread
  KOPT := -O1
else
  $(error MODE must be release, debug, asan or tsan)
endif

CFLAGS  := $(CFLAGS_BASE) $(OPT) $(EXTRA_CFLAGS)
LDLIBS  := $(LDLIBS_BASE) $(ALLOC_LIBS)

# Per-file ISA flags: kernels are compiled once per back end and chosen at run
# time, so only these files may use the wider instructions.
AVX512_FLAGS := -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512bf16 -mfma -mf16c
AVX2_FLAGS   := -mavx2 -mfma -mf16c

LIB_SRC   := $(sort $(wildcard libpagedkv/*.c) $(wildcard engine/*.c))
LIB_OBJ   := $(LIB_SRC:%.c=$(BUILD)/%.o)
TOOL_SRC  := $(sort $(wildcard tools/*.c))
TOOL_OBJ  := $(TOOL_SRC:%.c=$(BUILD)/%.o)
TEST_SRC  := $(sort $(wildcard tests/check_*.c))
TEST_BIN  := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
TEST_UTIL := $(sort $(wildcard tests/tu_*.c))
TEST_UOBJ := $(TEST_UTIL:%.c=$(BUILD)/%.o)
EX_SRC    := $(sort $(wildcard examples/*.c))
EX_BIN    := $(EX_SRC:examples/%.c=$(BUILD)/examples/%)
# Policies loadable with `pagedkv sim --policy-lib`: built as plugins too.
EX_SO     := $(patsubst examples/%.c,$(BUILD)/examples/%.so,$(wildcard examples/custom_policy.c))
BENCH_SRC := $(sort $(wildcard bench/bench_*.c))
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
BENCH_UTIL:= $(sort $(wildcard bench/bu_*.c))
BENCH_UOBJ:= $(BENCH_UTIL:%.c=$(BUILD)/%.o)

STATIC  := $(BUILD)/libpagedkv.a
SHARED  := $(BUILD)/libpagedkv.so.$(VERSION)
TOOL    := $(BUILD)/pagedkv

.PHONY: all lib run test check debug asan tsan bench bench-engine bench-manager \
        install uninstall clean deps examples tools fuzz fuzz-long valgrind
.DEFAULT_GOAL := all
# Keep object files of tests and benchmarks between runs.
.SECONDARY:

all: lib tools examples
lib: $(STATIC) $(SHARED) $(BUILD)/pagedkv.pc
tools: $(TOOL)
examples: $(EX_BIN) $(EX_SO)

$(BUILD)/%.o: %.c $(wildcard include/pagedkv/*.h libpagedkv/*.h engine/*.h tests/*.h bench/*.h tools/*.h) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(if $(findstring _avx512,$<),$(AVX512_FLAGS) $(KOPT),$(if $(findstring _avx2,$<),$(AVX2_FLAGS) $(KOPT),$(if $(findstring engine/,$<),$(KOPT)))) -c $< -o $@

$(STATIC): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(SHARED): $(LIB_OBJ)
	$(CC) -shared -Wl,-soname,libpagedkv.so.$(SOMAJOR) -o $@ $^ $(LDLIBS)
	ln -sf libpagedkv.so.$(VERSION) $(BUILD)/libpagedkv.so.$(SOMAJOR)
	ln -sf libpagedkv.so.$(VERSION) $(BUILD)/libpagedkv.so

# The .pc names the prefix it is installed under, so it is written for the
# PREFIX of each build or install command.
PC_TEXT = prefix=$(PREFIX)\nlibdir=$${prefix}/lib\nincludedir=$${prefix}/include\n\nName: pagedkv\nDescription: Paged KV-cache manager and CPU attention engine\nVersion: $(VERSION)\nLibs: -L$${libdir} -lpagedkv\nLibs.private: -lxxhash -ljemalloc -lm -pthread\nCflags: -I$${includedir}\n
$(BUILD)/pagedkv.pc: FORCE
	@mkdir -p $(dir $@)
	@printf '$(PC_TEXT)' > $@.tmp
	@if cmp -s $@.tmp $@; then rm $@.tmp; else mv $@.tmp $@; fi
.PHONY: FORCE
FORCE:

$(TOOL): $(TOOL_OBJ) $(STATIC)
	$(if $(TOOL_OBJ),$(CC) $(CFLAGS) -o $@ $(TOOL_OBJ) $(STATIC) $(LDLIBS) -ldl,@echo "no tools yet")

$(BUILD)/examples/%: examples/%.c $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(STATIC) $(LDLIBS)

$(BUILD)/examples/%.so: examples/%.c $(wildcard include/pagedkv/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -shared -DPKV_POLICY_PLUGIN -o $@ $<

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(TEST_UOBJ) $(STATIC)
	$(CC) $(CFLAGS) -o $@ $< $(TEST_UOBJ) $(STATIC) $(CHECK_LIBS) $(LDLIBS) -ldl

$(BUILD)/bench/%: $(BUILD)/bench/%.o $(BENCH_UOBJ) $(STATIC)
	$(CC) $(CFLAGS) -o $@ $< $(BENCH_UOBJ) $(STATIC) $(LDLIBS) $(if $(findstring engine,$@),$(shell pkg-config --libs openblas 2>/dev/null))

# OpenBLAS headers only for the engine benchmark (its baseline).
$(BUILD)/bench/bench_engine.o: CFLAGS += $(shell pkg-config --cflags openblas 2>/dev/null)

# ---------------------------------------------------------------- running
TESTS ?=
run: all
	@if [ -x $(TOOL) ] && $(TOOL) run --help >/dev/null 2>&1; then \
	  $(TOOL) run; \
	else \
	  $(BUILD)/examples/serve_sim; \
	fi

test check: lib $(TEST_BIN)
	@scripts/run-tests.sh $(BUILD)/tests $(TESTS)

debug:
	$(MAKE) MODE=debug test
asan:
	$(MAKE) MODE=asan test
tsan:
	$(MAKE) MODE=tsan lib $(patsubst build/release/%,build/tsan/%,$(filter %check_concurrency,$(TEST_BIN)))
	@if ls build/tsan/tests/check_concurrency >/dev/null 2>&1; then \
	  CK_FORK=no TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" scripts/run-tests.sh build/tsan/tests check_concurrency; \
	else echo "tsan: no concurrency tests yet"; fi

bench: lib $(BENCH_BIN)
	@scripts/deps.sh bench
	@# OpenBLAS is bench_engine's baseline: let it pick its own kernels there
	@# (the environment may force AVX2 ones); tests and CI keep the variables.
	@for b in $(BENCH_BIN); do echo "== $$b"; \
	  case $$b in *bench_engine) env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $$b ;; *) $$b ;; esac || exit 1; done
bench-manager: $(BUILD)/bench/bench_manager
	$<
bench-engine: $(BUILD)/bench/bench_engine
	@scripts/deps.sh bench
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $<

# The replay tests compile the fuzz harness bodies in.
$(BUILD)/tests/check_fuzz_replay.o: $(wildcard tests/fuzz/*.c tests/fuzz/*.h)
$(BUILD)/tests/check_engine_fuzz.o: tests/fuzz/fuzz_engine.c

# ---------------------------------------------------------------- fuzzing
# libFuzzer harnesses: clang compiles the library sources directly with the
# fuzzer and sanitizer flags (libc malloc, PKV_SANITIZE).  fuzz-long runs each
# harness FUZZ_SECONDS on a scratch copy of its seed corpus.
FUZZ_CC      ?= clang-14
FUZZ_SECONDS ?= 600
FUZZ_DIR     := build/fuzz
FUZZ_FLAGS   := $(CSTD) -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
                -fno-sanitize-recover=all -DPKV_NO_JEMALLOC -DPKV_SANITIZE=1 -DPKV_DEBUG=1 \
                -Iinclude -Ilibpagedkv -Iengine $(PKGS_CFLAGS)
FUZZ_HARN    := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BIN     := $(FUZZ_HARN:tests/fuzz/%.c=$(FUZZ_DIR)/%)
FUZZ_LIBSRC  := $(sort $(wildcard libpagedkv/*.c))

fuzz: $(FUZZ_BIN)

$(FUZZ_DIR)/fuzz_ops: tests/fuzz/fuzz_ops.c $(FUZZ_LIBSRC) $(wildcard include/pagedkv/*.h libpagedkv/*.h)
	@scripts/deps.sh fuzz
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< $(FUZZ_LIBSRC) -lxxhash -lm -pthread

# Engine kernels: every back end (each kern_*.c with its ISA flags, as in
# the library build) against the scalar reference.
FUZZ_ENGSRC := $(filter-out %_avx512.c %_avx2.c,$(sort $(wildcard engine/*.c)))
$(FUZZ_DIR)/fuzz_engine: tests/fuzz/fuzz_engine.c tests/tu_paged.c $(FUZZ_LIBSRC) $(wildcard engine/*.c engine/*.h include/pagedkv/*.h libpagedkv/*.h)
	@scripts/deps.sh fuzz
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) $(AVX512_FLAGS) -c engine/kern_avx512.c -o $@-kern_avx512.o
	$(FUZZ_CC) $(FUZZ_FLAGS) $(AVX2_FLAGS) -c engine/kern_avx2.c -o $@-kern_avx2.o
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< tests/tu_paged.c $(FUZZ_ENGSRC) $(FUZZ_LIBSRC) \
	  $@-kern_avx512.o $@-kern_avx2.o -lxxhash -lm -pthread

# Trace parsers: the harness plus the tools' parser (and what it needs).
$(FUZZ_DIR)/fuzz_trace: tests/fuzz/fuzz_trace.c $(wildcard tools/trace.c tools/*.h)
	@scripts/deps.sh fuzz
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< tools/trace.c -lm

fuzz-long: $(FUZZ_BIN)
	@for b in $(FUZZ_BIN); do n=$$(basename $$b); c=tests/fuzz/corpus_$${n#fuzz_}; \
	  mkdir -p $(FUZZ_DIR)/work_$$n && cp -n $$c/* $(FUZZ_DIR)/work_$$n/ 2>/dev/null; \
	  echo "== $$n for $(FUZZ_SECONDS)s"; \
	  $$b -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/$$n- \
	      $(FUZZ_DIR)/work_$$n $$c || exit 1; done

# ---------------------------------------------------------------- valgrind
# The release suite under memcheck (no fork: valgrind follows one process).
valgrind: lib $(TEST_BIN)
	@scripts/deps.sh valgrind
	@fail=0; for t in $(TEST_BIN); do \
	  printf '%-32s ' $$(basename $$t); \
	  if CK_FORK=no valgrind -q --error-exitcode=1 --leak-check=full \
	       --errors-for-leak-kinds=definite,indirect,possible $$t > $(BUILD)/$$(basename $$t).vg 2>&1; \
	  then echo ok; else echo "FAILED (see $(BUILD)/$$(basename $$t).vg)"; fail=1; fi; done; \
	  exit $$fail

# ---------------------------------------------------------------- install
install: lib
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include/pagedkv $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 include/pagedkv/*.h $(DESTDIR)$(PREFIX)/include/pagedkv/
	install -m 644 $(STATIC) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(SHARED) $(DESTDIR)$(PREFIX)/lib/
	ln -sf libpagedkv.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libpagedkv.so.$(SOMAJOR)
	ln -sf libpagedkv.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libpagedkv.so
	install -m 644 $(BUILD)/pagedkv.pc $(DESTDIR)$(PREFIX)/lib/pkgconfig/
	if [ -x $(TOOL) ]; then install -d $(DESTDIR)$(PREFIX)/bin && install -m 755 $(TOOL) $(DESTDIR)$(PREFIX)/bin/; fi

uninstall:
	rm -rf $(DESTDIR)$(PREFIX)/include/pagedkv
	rm -f $(DESTDIR)$(PREFIX)/lib/libpagedkv.* $(DESTDIR)$(PREFIX)/lib/pkgconfig/pagedkv.pc $(DESTDIR)$(PREFIX)/bin/pagedkv

deps:
	scripts/deps.sh all

clean:
	rm -rf build

# Tool tests compile the tool sources they exercise (#include "../tools/x.c").
$(TEST_SRC:tests/%.c=$(BUILD)/tests/%.o): $(wildcard tools/*.c)
