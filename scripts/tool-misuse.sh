#!/bin/sh
# tool-misuse.sh [PAGEDKV] [--markdown] — the pagedkv tool given bad flags and
# malformed traces.  Each case must exit with its expected status (2: usage,
# 1: bad input file), never by a signal, and say on stderr what was wrong.
# With --markdown, prints the table of cases and messages for
# docs/RELIABILITY.md.  Run it on an ASan build (make MODE=asan tools) to
# check the parsers' error paths for memory errors too.
set -u
cd "$(dirname "$0")/.."
bin=build/release/pagedkv; md=0
for a in "$@"; do case $a in --markdown) md=1 ;; *) bin=$a ;; esac; done
[ -x "$bin" ] || { echo "tool-misuse: $bin missing (make tools)" >&2; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# Malformed traces.
printf '{"timestamp": 0, "input_length": 600, "output_length": 3, "hash_ids": [1]}\n' > "$tmp/short_ids.jsonl"
printf '{"timestamp": 0, "input_length": -5, "output_length": 3, "hash_ids": []}\n' > "$tmp/negative.jsonl"
printf '{"timestamp": 0, "input_length": 10, "output_length": 3\n' > "$tmp/truncated.jsonl"
printf '{"timestamp": 0, "input_length": 99999999999999999999, "output_length": 1, "hash_ids": [1]}\n' > "$tmp/overflow.jsonl"
printf '{"timestamp": 5, "input_length": 10, "output_length": 1, "hash_ids": [1]}\n{"timestamp": 1, "input_length": 10, "output_length": 1, "hash_ids": [2]}\n' > "$tmp/backwards.jsonl"
printf 'not json at all\n' > "$tmp/garbage.jsonl"
: > "$tmp/empty.jsonl"
printf 'TIMESTAMP,ContextTokens\n' > "$tmp/header.csv"
printf 'TIMESTAMP,ContextTokens,GeneratedTokens\n2023-13-45 99:99:99.0,10,1\n' > "$tmp/badtime.csv"
printf 'TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,-4,44\n' > "$tmp/negative.csv"
printf 'TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,10,44,7\n' > "$tmp/columns.csv"
printf 'TIMESTAMP,ContextTokens,GeneratedTokens\n' > "$tmp/noreqs.csv"
printf 'TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,10,44\000\n' > "$tmp/nul.csv"
good=tests/data/traces/synthetic_trace.jsonl  # the repository's excerpt
[ -f "$good" ] || { echo "tool-misuse: test data missing: $good (run from the project root)"; exit 1; }

fail=0
[ $md = 1 ] && { echo '| command | exit | stderr |'; echo '|---|---|---|'; }
t() { # expected-status args...
  want=$1; shift
  timeout 120 "$bin" "$@" > /dev/null 2> "$tmp/err"; rc=$?
  msg=$(grep -v '^Try ' "$tmp/err" | head -3 | tr '\n' ' ' | sed "s|$tmp/||g; s/|/\//g; s/ *$//")
  shown=$(echo "$*" | sed "s|$tmp/||g")
  if [ $md = 1 ]; then echo "| \`pagedkv $shown\` | $rc | $msg |"; fi
  if [ $rc -ne "$want" ] || [ -z "$msg" ]; then
    echo "tool-misuse: 'pagedkv $shown' exited $rc (want $want): $msg" >&2; fail=1
  fi
}
t 2
t 2 --nope
t 2 frobnicate
t 2 run --requests -3
t 2 run --requests abc
t 2 run --block-size 0
t 2 run --block-size 70000
t 2 run --policy nope
t 2 run --model gpt9
t 2 run --dtype f64
t 2 run --memory 12Q
t 2 run --prompt-len 9-3
t 2 run --threads -1
t 2 run --blocks
t 1 run --trace /nonexistent.csv
t 2 sim
t 1 sim /nonexistent.jsonl
t 1 sim "$tmp/trace.txt"
t 2 sim "$good" --capacity 0
t 2 sim "$good" --policy lru,nope
t 2 sim "$good" --jobs 0
t 2 sim "$good" --format xml
t 1 sim "$good" --policy-lib /nonexistent.so
for f in short_ids negative truncated overflow backwards garbage empty; do t 1 sim "$tmp/$f.jsonl"; done
for f in header badtime negative columns noreqs nul; do t 1 sim "$tmp/$f.csv"; done
t 1 run --trace "$tmp/garbage.jsonl"
t 1 run --trace "$tmp/badtime.csv"
[ $fail = 0 ] && [ $md = 0 ] && echo "tool-misuse: all cases refused cleanly"
exit $fail
