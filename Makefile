# pagedkv — build, test, run, bench.
#
#   make            library (static + shared), pagedkv tool, examples
#   make run        the default multi-sequence workload
#   make test       the whole Check suite + host tests (dlopen, ctypes, installed tree)
#   make debug      suite with PKV_DEBUG=2 (full validator after every mutation)
#   make asan       suite under ASan+UBSan
#   make tsan       concurrency tests under ThreadSanitizer
#   make fuzz       libFuzzer harnesses (clang) in build/fuzz; fuzz-long runs them
#   make valgrind   release suite under valgrind memcheck
#   make bench      performance suite (BENCH_JSON=FILE appends JSON lines)
#   make bench-build  the benchmarks built, not run (CI: in asan mode)
#   make bench-redis  the Redis tier beside redis-benchmark (own redis-server)
#   make test-python / bench-python   the Python package's tests / benchmark
#   make install PREFIX=/usr/local
#
# MODE selects the build directory and flags (release, debug, asan, tsan);
# the debug/asan/tsan targets set it themselves.

MODE    ?= release
PREFIX  ?= /usr/local
CC      ?= cc
BUILD   := build/$(MODE)
# The version is the header's (PKV_VERSION_*); the soname carries the major.
VERSION := $(shell sed -n 's/^\#define PKV_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\)$$/\2/p' include/pagedkv/pagedkv.h | paste -sd.)
SOMAJOR := $(firstword $(subst ., ,$(VERSION)))
LIB_MAP := libpagedkv/pagedkv.map

# Packages are asked for by the targets that need them (scripts/deps.sh
# groups, as order-only prerequisites below): the library needs only a
# compiler and libxxhash-dev; `make clean` needs nothing.  Check's flags are
# looked up only when a test is compiled or linked.
PKGS_CFLAGS := $(shell pkg-config --cflags libxxhash 2>/dev/null)
CHECK_CFLAGS = $(shell pkg-config --cflags check)
CHECK_LIBS   = $(shell pkg-config --libs check)

WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-missing-field-initializers
CSTD    := -std=c11 -D_GNU_SOURCE
CFLAGS_BASE := $(CSTD) $(WARN) -fvisibility=hidden -fPIC -pthread -Iinclude -Ilibpagedkv -Iengine $(PKGS_CFLAGS)
LDLIBS_BASE := -lxxhash -lm -pthread

# The library links no allocator (docs/DESIGN.md, "Memory"): it uses jemalloc
# only when its host process has it.  HOST_ALLOC is what our own programs
# (the pagedkv tool, benchmarks) link as their process allocator.
ifeq ($(MODE),release)
  OPT := -O2 -g -DPKV_DEBUG=0
  SAN_LIBS :=
  HOST_ALLOC := -ljemalloc
  KOPT := -O3
else ifeq ($(MODE),debug)
  OPT := -O0 -g -DPKV_DEBUG=2
  SAN_LIBS :=
  HOST_ALLOC := -ljemalloc
  KOPT := -O1
else ifeq ($(MODE),asan)
  # jemalloc would fight the sanitizer's malloc: libc's under sanitizers.
  OPT := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all -DPKV_DEBUG=1 -DPKV_SANITIZE=1
  SAN_LIBS := -fsanitize=address,undefined
  HOST_ALLOC :=
  # The engine at -O0: gcc 12 spends 5-18 CPU-minutes per kernel file
  # (kern_avx512.c, kern_avx2.c, kern_scalar.c) optimising kern_body.h's
  # instantiations under UBSan at -O1, and 25-32 s at -O0, every check kept.
  KOPT := -O0
else ifeq ($(MODE),tsan)
  OPT := -O1 -g -fno-omit-frame-pointer -fsanitize=thread -DPKV_DEBUG=1 -DPKV_SANITIZE=1
  SAN_LIBS := -fsanitize=thread
  HOST_ALLOC :=
  KOPT := -O1
else
  $(error MODE must be release, debug, asan or tsan)
endif

CFLAGS  := $(CFLAGS_BASE) $(OPT) $(EXTRA_CFLAGS)
LDLIBS  := $(LDLIBS_BASE) $(SAN_LIBS)

# Per-file ISA flags: kernels are compiled once per back end and chosen at run
# time, so only these files may use the wider instructions.
AVX512_FLAGS := -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512bf16 -mfma -mf16c
AVX2_FLAGS   := -mavx2 -mfma -mf16c

LIB_SRC   := $(sort $(wildcard libpagedkv/*.c libpagedkv/*/*.c) $(wildcard engine/*.c))
LIB_OBJ   := $(LIB_SRC:%.c=$(BUILD)/%.o)
TOOL_SRC  := $(sort $(wildcard tools/*.c))
TOOL_OBJ  := $(TOOL_SRC:%.c=$(BUILD)/%.o)
# The tools' pieces as an internal archive (not installed): the pagedkv
# command links it with main.o; tests and benchmarks link what they use.
TOOL_LIB  := $(BUILD)/libpkvtools.a
TOOL_LOBJ := $(filter-out $(BUILD)/tools/main.o,$(TOOL_OBJ))
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
PC_FILES:= $(BUILD)/pagedkv.pc $(BUILD)/pagedkv-static.pc

.PHONY: test-python bench-python layer-check
.PHONY: all lib run test check debug asan tsan bench bench-engine bench-manager bench-redis \
        install uninstall clean deps examples tools fuzz fuzz-long valgrind bench-build
.DEFAULT_GOAL := all
# Keep object files of tests and benchmarks between runs.
.SECONDARY:

all: lib tools examples pyext
lib: $(STATIC) $(SHARED) $(PC_FILES)
tools: $(TOOL)
examples: $(EX_BIN) $(EX_SO)

$(BUILD)/%.o: %.c $(wildcard include/pagedkv/*.h libpagedkv/*.h libpagedkv/*/*.h engine/*.h tests/*.h bench/*.h tools/*.h) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(if $(filter tests/%,$<),$(CHECK_CFLAGS)) $(if $(findstring _avx512,$<),$(AVX512_FLAGS) $(KOPT),$(if $(findstring _avx2,$<),$(AVX2_FLAGS) $(KOPT),$(if $(findstring engine/,$<),$(KOPT)))) -c $< -o $@

$(STATIC): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(SHARED): $(LIB_OBJ) $(LIB_MAP)
	$(CC) -shared -Wl,-soname,libpagedkv.so.$(SOMAJOR) -Wl,--version-script=$(LIB_MAP) -o $@ $(LIB_OBJ) $(LDLIBS)
	ln -sf libpagedkv.so.$(VERSION) $(BUILD)/libpagedkv.so.$(SOMAJOR)
	ln -sf libpagedkv.so.$(VERSION) $(BUILD)/libpagedkv.so

# The .pc files name the prefix they are installed under, so they are written
# for the PREFIX of each build or install command.  pagedkv.pc links the
# shared library with an rpath to it (a program built with it runs without
# LD_LIBRARY_PATH); pagedkv-static.pc links the archive:
#   cc app.c $(pkg-config --cflags --libs pagedkv)
#   cc app.c $(pkg-config --static --cflags --libs pagedkv-static)
PC_HEAD = prefix=$(PREFIX)\nlibdir=$${prefix}/lib\nincludedir=$${prefix}/include\n\nVersion: $(VERSION)\nCflags: -I$${includedir}\nLibs.private: -lxxhash -lm -pthread\n
PC_TEXT_pagedkv = $(PC_HEAD)Name: pagedkv\nDescription: Paged KV-cache manager and CPU attention engine\nLibs: -L$${libdir} -Wl,-rpath,$${libdir} -lpagedkv\n
PC_TEXT_pagedkv-static = $(PC_HEAD)Name: pagedkv-static\nDescription: pagedkv, linked statically (use with pkg-config --static)\nLibs: -L$${libdir} -l:libpagedkv.a\n
$(PC_FILES): $(BUILD)/%.pc: FORCE
	@mkdir -p $(dir $@)
	@printf '$(PC_TEXT_$*)' > $@.tmp
	@if cmp -s $@.tmp $@; then rm $@.tmp; else mv $@.tmp $@; fi
.PHONY: FORCE
FORCE:

$(TOOL_LIB): $(TOOL_LOBJ)
	rm -f $@ && ar rcs $@ $^

$(TOOL): $(BUILD)/tools/main.o $(TOOL_LIB) $(STATIC)
	$(CC) $(CFLAGS) -o $@ $(BUILD)/tools/main.o $(TOOL_LIB) $(STATIC) $(LDLIBS) $(HOST_ALLOC) -ldl

$(BUILD)/examples/%: examples/%.c $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(STATIC) $(LDLIBS)

$(BUILD)/examples/%.so: examples/%.c $(wildcard include/pagedkv/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -shared -DPKV_POLICY_PLUGIN -o $@ $<

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(TEST_UOBJ) $(TOOL_LIB) $(STATIC)
	$(CC) $(CFLAGS) $(CHECK_CFLAGS) -o $@ $< $(TEST_UOBJ) $(TOOL_LIB) $(STATIC) $(CHECK_LIBS) $(LDLIBS) -ldl

$(BUILD)/bench/%: $(BUILD)/bench/%.o $(BENCH_UOBJ) $(TOOL_LIB) $(STATIC)
	$(CC) $(CFLAGS) -o $@ $< $(BENCH_UOBJ) $(TOOL_LIB) $(STATIC) $(LDLIBS) $(HOST_ALLOC) -ldl $(if $(findstring engine,$@),$(shell pkg-config --libs openblas 2>/dev/null))

# The Redis suite plants bad values with a plain hiredis client (the library
# itself loads libhiredis at run time and links nothing).
$(BUILD)/tests/check_redis: LDLIBS += -lhiredis

# OpenBLAS headers only for the engine benchmark (its baseline).
$(BUILD)/bench/bench_engine.o: CFLAGS += $(shell pkg-config --cflags openblas 2>/dev/null)

# What each part asks scripts/deps.sh for (the groups are listed there).
.PHONY: deps-lib deps-tools deps-build
deps-lib deps-tools deps-build: deps-%:
	@scripts/deps.sh $*
$(LIB_OBJ) $(STATIC) $(SHARED) $(EX_BIN) $(EX_SO): | deps-lib
$(TOOL_OBJ) $(TOOL_LIB) $(TOOL) $(BENCH_BIN): | deps-tools
$(TEST_BIN) $(TEST_SRC:tests/%.c=$(BUILD)/tests/%.o) $(TEST_UOBJ): | deps-build

# ---------------------------------------------------------------- running
TESTS ?=
run: all
	@if [ -x $(TOOL) ] && $(TOOL) run --help >/dev/null 2>&1; then \
	  $(TOOL) run; \
	else \
	  $(BUILD)/examples/serve_sim; \
	fi

# The Check suites, then (for the whole suite) the library as hosts load it:
# dlopen, Python ctypes, programs built against an installed tree.
test check: lib $(TEST_BIN) layer-check
	@rc=0; scripts/with-redis.sh scripts/run-tests.sh $(BUILD)/tests $(TESTS) || rc=1; \
	  if [ -z "$(TESTS)" ]; then scripts/host-tests.sh $(BUILD) || rc=1; fi; exit $$rc
	@$(if $(TESTS),,$(MAKE) --no-print-directory test-python)

# The Python package's compiled fast path (python/pagedkv/_fastpath.c, the
# vLLM manager's decode step), built for $(PYTHON) beside the .py files with
# fixed flags (not MODE's: the interpreter loads no sanitizer runtime).
PYTHON ?= /usr/bin/python3
PYEXT_SUFFIX = $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
PYEXT_INC    = $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
PYEXT        = python/pagedkv/_fastpath$(PYEXT_SUFFIX)
.PHONY: pyext deps-pyext
pyext: $(PYEXT)
deps-pyext:
	@scripts/deps.sh pyext
$(PYEXT): python/pagedkv/_fastpath.c Makefile | deps-pyext
	$(CC) -std=c11 -O2 -g -Wall -Wextra -Werror -Wno-missing-field-initializers -fPIC -shared \
	  -fvisibility=hidden -I$(PYEXT_INC) $< -o $@

# The Python package (python/) under pytest, against this build's shared
# library.  Not under asan/tsan: their .so needs the sanitizer runtime
# preloaded into the interpreter.  A library that does not load fails.
test-python: lib pyext
	@scripts/deps.sh python
	@if [ "$(MODE)" = asan ] || [ "$(MODE)" = tsan ]; then \
	  echo "python tests: not run in MODE=$(MODE) (run them in release)"; \
	else echo "== python tests (pytest, $(BUILD)/libpagedkv.so)"; \
	  PAGEDKV_LIB=$(CURDIR)/$(BUILD)/libpagedkv.so PAGEDKV_MODE=$(MODE) PYTHONDONTWRITEBYTECODE=1 \
	  $(PYTHON) -m pytest -q -rs -p no:cacheprovider python/tests; fi

# No cycle between the files of libpagedkv/, engine/ and tools/: the graph
# of who calls whom, read from the objects' symbols (docs/DESIGN.md, "Map").
# scripts/layer-check.allow lists the known cycles still to untie.
layer-check: lib $(TOOL_OBJ)
	@$(PYTHON) scripts/layer-check.py --quiet --build $(BUILD) --allow scripts/layer-check.allow

debug:
	$(MAKE) MODE=debug test
asan:
	$(MAKE) MODE=asan test
# check_redis runs only its "threads" case here (threads on two caches
# sharing a redis-server, which scripts/with-redis.sh starts).
tsan:
	$(MAKE) MODE=tsan lib $(patsubst build/release/%,build/tsan/%,$(filter %check_concurrency %check_redis,$(TEST_BIN)))
	@if ls build/tsan/tests/check_concurrency >/dev/null 2>&1; then \
	  CK_FORK=no TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" scripts/run-tests.sh build/tsan/tests check_concurrency; \
	else echo "tsan: no concurrency tests yet"; fi
	@CK_FORK=no CK_RUN_CASE=threads TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
	  scripts/with-redis.sh scripts/run-tests.sh build/tsan/tests check_redis

bench: lib $(BENCH_BIN)
	@scripts/deps.sh bench
	@# OpenBLAS is bench_engine's baseline: let it pick its own kernels there
	@# (the environment may force AVX2 ones); tests and CI keep the variables.
	@for b in $(BENCH_BIN); do echo "== $$b"; \
	  case $$b in *bench_engine) env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $$b ;; \
	    *bench_redis) scripts/with-redis.sh $$b ;; *) $$b ;; esac || exit 1; done
	@$(MAKE) --no-print-directory bench-python

# One vLLM scheduler decode step for 256 requests: the Python protocol on the
# library, the C batch call, and a pure-Python manager (bench/bench_vllm.py).
bench-python: lib pyext
	@scripts/deps.sh python
	@echo "== bench/bench_vllm.py"
	@PAGEDKV_LIB=$(CURDIR)/$(BUILD)/libpagedkv.so PYTHONDONTWRITEBYTECODE=1 $(PYTHON) bench/bench_vllm.py

# Builds every benchmark without running it (CI builds them in asan mode).
bench-build: lib $(BENCH_BIN)
bench-manager: $(BUILD)/bench/bench_manager
	$<
bench-redis: $(BUILD)/bench/bench_redis
	@scripts/deps.sh build
	scripts/with-redis.sh $<
bench-engine: $(BUILD)/bench/bench_engine
	@scripts/deps.sh bench
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $<

# The replay tests compile the fuzz harness bodies in.
$(BUILD)/tests/check_fuzz_replay.o $(BUILD)/tests/check_sim.o: $(wildcard tests/fuzz/*.c tests/fuzz/*.h)
$(BUILD)/tests/check_engine_fuzz.o: tests/fuzz/fuzz_engine.c

# ---------------------------------------------------------------- fuzzing
# libFuzzer harnesses: clang compiles each source once into build/fuzz/obj
# with the fuzzer and sanitizer flags (libc malloc, PKV_SANITIZE), and the
# harnesses link the objects they need, so `make -j` builds them in parallel
# and the library is compiled once for all four.  The engine's ISA kernels
# (kern_avx2.c, kern_avx512.c) get AddressSanitizer without UBSan: UBSan's
# checks on their always-inline intrinsic bodies cost clang-14 about ten
# CPU-minutes per file; UBSan covers those kernels in `make asan` (built at
# -O0 there, see MODE=asan), where check_engine_fuzz replays the fuzz_engine
# harness through every back end.
# fuzz-long runs each harness FUZZ_SECONDS on a scratch copy of its corpus.
FUZZ_CC      ?= clang-14
FUZZ_SECONDS ?= 600
FUZZ_DIR     := build/fuzz
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_CFLAGS  := $(CSTD) -g -O1 -fno-omit-frame-pointer -DPKV_SANITIZE=1 -DPKV_DEBUG=1 \
                -Iinclude -Ilibpagedkv -Iengine $(PKGS_CFLAGS) -MMD -MP
FUZZ_LDFLAGS := -fsanitize=fuzzer $(FUZZ_SAN)
FUZZ_HARN    := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BIN     := $(FUZZ_HARN:tests/fuzz/%.c=$(FUZZ_DIR)/%)
FUZZ_OBJ      = $(patsubst %.c,$(FUZZ_DIR)/obj/%.o,$(1))
FUZZ_LIBSRC  := $(sort $(wildcard libpagedkv/*.c libpagedkv/*/*.c))
FUZZ_ENGSRC  := $(sort $(wildcard engine/*.c)) tests/tu_paged.c
# Trace readers and the simulator's stream and replays built on them.
FUZZ_SIMSRC  := tools/trace.c tools/sim_stream.c tools/sim_replay.c tools/sim_manager.c tools/sim_cluster.c tools/tiers.c tools/cli.c
# Option parsers of run and sim (the tier flags' helpers and the config
# preset reach into the library).
FUZZ_CLISRC  := tools/opts.c tools/run_opts.c tools/sim_opts.c tools/cli.c tools/trace.c tools/tiers.c

fuzz: $(FUZZ_BIN)
fuzz-deps:
	@scripts/deps.sh fuzz
.PHONY: fuzz-deps

$(FUZZ_DIR)/obj/%.o: %.c | fuzz-deps
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link \
	  $(if $(findstring /kern_avx,$<),-fsanitize=address,$(FUZZ_SAN)) \
	  $(if $(findstring _avx512,$<),$(AVX512_FLAGS),$(if $(findstring _avx2,$<),$(AVX2_FLAGS))) -c $< -o $@
-include $(shell find $(FUZZ_DIR)/obj -name '*.d' 2>/dev/null)

$(FUZZ_DIR)/fuzz_ops: $(call FUZZ_OBJ,tests/fuzz/fuzz_ops.c $(FUZZ_LIBSRC))
	$(FUZZ_CC) $(FUZZ_LDFLAGS) -o $@ $^ -lxxhash -lm -pthread
# Engine kernels: every back end against the scalar reference.
$(FUZZ_DIR)/fuzz_engine: $(call FUZZ_OBJ,tests/fuzz/fuzz_engine.c $(FUZZ_ENGSRC) $(FUZZ_LIBSRC))
	$(FUZZ_CC) $(FUZZ_LDFLAGS) -o $@ $^ -lxxhash -lm -pthread
$(FUZZ_DIR)/fuzz_trace: $(call FUZZ_OBJ,tests/fuzz/fuzz_trace.c $(FUZZ_SIMSRC) $(FUZZ_LIBSRC))
	$(FUZZ_CC) $(FUZZ_LDFLAGS) -o $@ $^ -lxxhash -lm -pthread -ldl
$(FUZZ_DIR)/fuzz_cli: $(call FUZZ_OBJ,tests/fuzz/fuzz_cli.c $(FUZZ_CLISRC) $(FUZZ_LIBSRC))
	$(FUZZ_CC) $(FUZZ_LDFLAGS) -o $@ $^ -lxxhash -lm -pthread -ldl

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
	@scripts/with-redis.sh $(MAKE) --no-print-directory valgrind-run
# (with-redis.sh: check_redis needs a redis-server, as in `make test`)
.PHONY: valgrind-run
valgrind-run:
	@fail=0; for t in $(TEST_BIN); do \
	  printf '%-32s ' $$(basename $$t); \
	  if CK_FORK=no valgrind -q --error-exitcode=1 --leak-check=full \
	       --errors-for-leak-kinds=definite,indirect,possible $$t > $(BUILD)/$$(basename $$t).vg 2>&1; \
	  then echo ok; else echo "FAILED (see $(BUILD)/$$(basename $$t).vg)"; fail=1; fi; done; \
	  exit $$fail

# ---------------------------------------------------------------- install
# The Python package goes where Debian's python3 looks for PREFIX=/usr/local
# (other prefixes: PYTHONPATH=$(PREFIX)/lib/python3/dist-packages); it loads
# the library installed beside it.
PYDIR ?= $(PREFIX)/lib/python3/dist-packages
install: lib
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include/pagedkv $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 include/pagedkv/*.h $(DESTDIR)$(PREFIX)/include/pagedkv/
	install -m 644 $(STATIC) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(SHARED) $(DESTDIR)$(PREFIX)/lib/
	ln -sf libpagedkv.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libpagedkv.so.$(SOMAJOR)
	ln -sf libpagedkv.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libpagedkv.so
	install -m 644 $(PC_FILES) $(DESTDIR)$(PREFIX)/lib/pkgconfig/
	if [ -x $(TOOL) ]; then install -d $(DESTDIR)$(PREFIX)/bin && install -m 755 $(TOOL) $(DESTDIR)$(PREFIX)/bin/; fi
	install -d $(DESTDIR)$(PYDIR)/pagedkv
	install -m 644 python/pagedkv/*.py $(DESTDIR)$(PYDIR)/pagedkv/
	if [ -f $(PYEXT) ]; then install -m 644 $(PYEXT) $(DESTDIR)$(PYDIR)/pagedkv/; fi
	printf 'LIBRARY = %s\n' "'$(PREFIX)/lib/libpagedkv.so.$(SOMAJOR)'" > $(DESTDIR)$(PYDIR)/pagedkv/_install.py

uninstall:
	rm -rf $(DESTDIR)$(PREFIX)/include/pagedkv $(DESTDIR)$(PYDIR)/pagedkv
	rm -f $(DESTDIR)$(PREFIX)/lib/libpagedkv.* $(DESTDIR)$(PREFIX)/lib/pkgconfig/pagedkv.pc $(DESTDIR)$(PREFIX)/lib/pkgconfig/pagedkv-static.pc $(DESTDIR)$(PREFIX)/bin/pagedkv

deps:
	scripts/deps.sh all

clean:
	rm -rf build $(PYEXT)
