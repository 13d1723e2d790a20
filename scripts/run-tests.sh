#!/bin/sh
# run-tests.sh DIR [NAME...] — runs every Check binary in DIR (or the named
# ones) and prints, per suite, how many tests ran, failed and skipped, then
# "tests: N passed, N failed, N skipped".
#
# A skip is a test (or part of one) that could not run here and said so on
# stderr with a line containing ": skipping " (e.g. a SIMD back end this CPU
# lacks); each distinct such line counts once and is shown.  Data a test
# needs is in the repository: missing data is a failure, never a skip.
set -u
dir=$1; shift
passed=0; failed=0; skipped=0; bad=""
if [ $# -gt 0 ]; then bins=""; for n in "$@"; do bins="$bins $dir/$n"; done
else bins=$(ls "$dir"/check_* 2>/dev/null | grep -v '\.o$' || true); fi
for b in $bins; do
  [ -x "$b" ] || { echo "run-tests: $b missing" >&2; failed=$((failed+1)); bad="$bad $b"; continue; }
  out=$("$b" 2>&1); rc=$?
  line=$(printf '%s\n' "$out" | grep -E '^[0-9]+%: Checks: ' | tail -1)
  skips=$(printf '%s\n' "$out" | grep -F ': skipping ' | sort -u)
  n_skip=$(printf '%s' "$skips" | grep -c . || true)
  n=$(printf '%s' "$line" | sed -n 's/.*Checks: \([0-9]*\), Failures: \([0-9]*\), Errors: \([0-9]*\).*/\1 \2 \3/p')
  if [ -n "$n" ]; then
    set -- $n
    printf '%-32s ran %3d, failed %d, skipped %d\n' "$(basename "$b")" "$1" $(($2 + $3)) "$n_skip"
    passed=$((passed + $1 - $2 - $3)); failed=$((failed + $2 + $3))
  else
    printf '%-32s (no Check summary, exit %d)\n' "$(basename "$b")" $rc
  fi
  skipped=$((skipped + n_skip))
  [ -n "$skips" ] && printf '%s\n' "$skips" | sed 's/^/    /'
  if [ $rc -ne 0 ] || [ -z "$n" ]; then
    [ -z "$n" ] && failed=$((failed+1))
    bad="$bad $(basename "$b")"
    printf '%s\n' "$out" | grep -vE '^[0-9]+%: Checks: |:P:' | tail -40
  fi
done
echo "tests: $passed passed, $failed failed, $skipped skipped"
[ $failed -eq 0 ] && [ -z "$bad" ]
