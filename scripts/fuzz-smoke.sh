#!/bin/sh
# fuzz-smoke.sh [SECONDS] — builds the libFuzzer harnesses (make fuzz) and
# runs each one for a bounded time (default 60 s in all: 30 for the manager
# operations, 12 for the trace readers and the simulator on their traces, 10
# for the option parsers, 7 for the engine kernels) from a scratch copy of its
# seed corpus.  Fails on the first crash, sanitizer report, leak or timeout; the
# input that did it is left in build/fuzz/smoke-<harness>-crash-*.
set -eu
cd "$(dirname "$0")/.."
total=${1:-60}
scripts/deps.sh fuzz
make -s fuzz
for h in ops trace cli engine; do
  bin=build/fuzz/fuzz_$h
  [ -x "$bin" ] || { echo "fuzz-smoke: $bin missing" >&2; exit 1; }
  case $h in ops) secs=$((total / 2)) ;; trace) secs=$((total / 5)) ;; cli) secs=$((total / 6)) ;;
    *) secs=$((total / 8)) ;; esac
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
    exit 1
  fi
  grep -E '^stat::number_of_executed_units|^Done' build/fuzz/smoke_$h.log | tr '\n' ' '
  echo
done
echo "fuzz-smoke: clean"
