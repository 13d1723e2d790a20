#!/bin/sh
# run-tests.sh DIR [NAME...] — runs every Check binary in DIR (or the named
# ones), prints each one's summary, and closes with "N passed, N failed".
set -u
dir=$1; shift
passed=0; failed=0; bad=""
if [ $# -gt 0 ]; then bins=""; for n in "$@"; do bins="$bins $dir/$n"; done
else bins=$(ls "$dir"/check_* 2>/dev/null | grep -v '\.o$' || true); fi
for b in $bins; do
  [ -x "$b" ] || { echo "run-tests: $b missing" >&2; failed=$((failed+1)); bad="$bad $b"; continue; }
  out=$("$b" 2>&1); rc=$?
  line=$(printf '%s\n' "$out" | grep -E '^[0-9]+%: Checks: ' | tail -1)
  printf '%-32s %s\n' "$(basename "$b")" "${line:-"(no Check summary, exit $rc)"}"
  n=$(printf '%s' "$line" | sed -n 's/.*Checks: \([0-9]*\), Failures: \([0-9]*\), Errors: \([0-9]*\).*/\1 \2 \3/p')
  if [ -n "$n" ]; then
    set -- $n
    passed=$((passed + $1 - $2 - $3)); failed=$((failed + $2 + $3))
  fi
  if [ $rc -ne 0 ] || [ -z "$n" ]; then
    [ -z "$n" ] && failed=$((failed+1))
    bad="$bad $(basename "$b")"
    printf '%s\n' "$out" | grep -vE '^[0-9]+%: Checks: |:P:' | tail -40
  fi
done
echo "tests: $passed passed, $failed failed"
[ $failed -eq 0 ] && [ -z "$bad" ]
