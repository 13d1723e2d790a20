#!/bin/sh
# fuzz-smoke.sh [SECONDS] — builds the libFuzzer harnesses (make fuzz) and
# runs each one for a bounded time from a scratch copy of its seed corpus:
# of SECONDS (default 60) half for the manager operations, a fifth each for
# the trace readers and simulator and for the engine kernels, a tenth for the
# option parsers.  Two lanes run side by side (ops | trace, cli, engine), so
# the wall time is about SECONDS / 2 on two cores.  Fails on the first crash,
# sanitizer report, leak or timeout; the input that did it is left in
# build/fuzz/smoke-<harness>-crash-*.
set -eu
cd "$(dirname "$0")/.."
total=${1:-60}
scripts/deps.sh fuzz
make -s fuzz

one() { # one HARNESS: run it, print its summary, fail loudly
  h=$1
  bin=build/fuzz/fuzz_$h
  [ -x "$bin" ] || { echo "fuzz-smoke: $bin missing" >&2; return 1; }
  case $h in ops) secs=$((total / 2)) ;; trace|engine) secs=$((total / 5)) ;; *) secs=$((total / 10)) ;; esac
  work=build/fuzz/smoke_$h
  rm -rf "$work" && mkdir -p "$work"
  cp tests/fuzz/corpus_$h/* "$work"/
  [ -d tests/fuzz/regress_$h ] && cp tests/fuzz/regress_$h/* "$work"/ 2>/dev/null || true
  echo "fuzz-smoke: $h for ${secs}s"
  if ! "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix=build/fuzz/smoke-$h- "$work" \
        > build/fuzz/smoke_$h.log 2>&1; then
    tail -40 build/fuzz/smoke_$h.log >&2
    echo "fuzz-smoke: fuzz_$h FAILED (log: build/fuzz/smoke_$h.log)" >&2
    return 1
  fi
  echo "fuzz-smoke: $h: $(grep -E '^stat::number_of_executed_units|^Done' build/fuzz/smoke_$h.log | tr '\n' ' ')"
}

one ops & lane1=$!
lane2=0
{ one trace && one cli && one engine; } || lane2=1
rc1=0; wait "$lane1" || rc1=1
[ "$rc1" = 0 ] && [ "$lane2" = 0 ] || { echo "fuzz-smoke: FAILED" >&2; exit 1; }
echo "fuzz-smoke: clean"
