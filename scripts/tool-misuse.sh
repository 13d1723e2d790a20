#!/bin/sh
# tool-misuse.sh [PAGEDKV] [--markdown] — the pagedkv tool given bad flags,
# malformed and hostile traces, broken policy plug-ins and hostile paths.
# Each refusal must exit with its expected status (2: usage, 1: bad input
# file or plug-in), never by a signal, say on stderr what was wrong, and
# leave no sanitizer report; each accepted hostile case (huge capacity,
# Azure trace, '--json -', a quote in a --plot path) must print what its
# label says.  With --markdown, prints the table of refusals for
# docs/RELIABILITY.md.  Run it on an ASan build (make MODE=asan tools) to
# check the error paths for memory errors too.  Its data is in the
# repository (tests/data/tools/); it never reads ../shared.
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
# Integer fields beyond their range, in every format, and an over-long line.
printf 'TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,4294967295,44\n' > "$tmp/hugectx.csv"
printf 'TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,10,4294967296\n' > "$tmp/hugegen.csv"
printf '{"timestamp": 0, "input_length": 16777217, "output_length": 1, "hash_ids": [1]}\n' > "$tmp/hugein.jsonl"
printf '{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [18446744073709551615]}\n' > "$tmp/hugeid.jsonl"
printf '{"timestamp": 99999999999999999, "input_length": 10, "output_length": 1, "hash_ids": [1]}\n' > "$tmp/hugets.jsonl"
{ printf 'TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,10,4\n2023-11-16 18:15:47.0,10,'
  head -c 4194400 /dev/zero | tr '\0' '7'; printf '\n'; } > "$tmp/longline.csv"
good=tests/data/tools/mooncake_small.jsonl
azure=tests/data/tools/azure_small.csv
[ -f "$good" ] && [ -f "$azure" ] || { echo "tool-misuse: tests/data/tools/ is missing" >&2; exit 1; }
# Broken policy plug-ins (tests/data/tools/bad_policy.c), built here.
for v in CRASH VICTIM LATE LATECRASH NONE BIGFAIL VERSION; do
  ${CC:-cc} -shared -fPIC -Iinclude -DBAD_$v -o "$tmp/bad_$v.so" tests/data/tools/bad_policy.c ||
    { echo "tool-misuse: cannot build the bad plug-ins" >&2; exit 1; }
done

fail=0
[ $md = 1 ] && { echo '| command | exit | stderr |'; echo '|---|---|---|'; }
# No sanitizer report, whatever the exit status.
sanitizer_clean() {
  if grep -qE 'Sanitizer|runtime error:' "$tmp/err"; then
    echo "tool-misuse: 'pagedkv $1' left a sanitizer report:" >&2; head -5 "$tmp/err" >&2; fail=1
  fi
}
t() { # expected-status args...  (a refusal: exit status and a message)
  want=$1; shift
  timeout 120 "$bin" "$@" > "$tmp/out" 2> "$tmp/err"; rc=$?
  msg=$(grep -v '^Try ' "$tmp/err" | head -3 | tr '\n' ' ' | sed "s|$tmp/||g; s/|/\//g; s/ *$//" | cut -c1-220)
  shown=$(printf '%s' "$*" | sed "s|$tmp/||g" | tr '\n' '~')
  if [ $md = 1 ]; then echo "| \`pagedkv $shown\` | $rc | $msg |"; fi
  if [ $rc -ne "$want" ] || [ -z "$msg" ]; then
    echo "tool-misuse: 'pagedkv $shown' exited $rc (want $want): $msg" >&2; fail=1
  fi
  if [ "$want" -ne 0 ] && [ -s "$tmp/out" ]; then
    echo "tool-misuse: 'pagedkv $shown' refused but printed a result:" >&2; head -3 "$tmp/out" >&2; fail=1
  fi
  sanitizer_clean "$shown"
}
ok() { # stdout-must-match stdout-must-not-match args...  (accepted: exit 0)
  want=$1; nope=$2; shift 2
  timeout 120 "$bin" "$@" > "$tmp/out" 2> "$tmp/err"; rc=$?
  shown=$(echo "$*" | sed "s|$tmp/||g")
  [ $md = 1 ] && return 0
  if [ $rc -ne 0 ]; then
    echo "tool-misuse: 'pagedkv $shown' exited $rc (want 0): $(head -2 "$tmp/err")" >&2; fail=1
  elif [ -n "$want" ] && ! grep -qE -- "$want" "$tmp/out"; then
    echo "tool-misuse: 'pagedkv $shown' printed no '$want'" >&2; fail=1
  elif [ -n "$nope" ] && grep -qE -- "$nope" "$tmp/out"; then
    echo "tool-misuse: 'pagedkv $shown' printed '$nope':" >&2; grep -E -- "$nope" "$tmp/out" | head -2 >&2; fail=1
  fi
  sanitizer_clean "$shown"
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
t 2 sim "$good" --policy ""
t 2 sim "$good" --policy ", ,"
t 2 run --policy ""
t 2 sim "$good" --jobs 0
t 2 sim "$good" --format xml
t 1 sim "$good" --policy-lib /nonexistent.so
for f in short_ids negative truncated overflow backwards garbage empty; do t 1 sim "$tmp/$f.jsonl"; done
for f in header badtime negative columns noreqs nul; do t 1 sim "$tmp/$f.csv"; done
t 1 run --trace "$tmp/garbage.jsonl"
t 1 run --trace "$tmp/badtime.csv"
# Every integer field of every format is range-checked; a long line is an error.
for f in hugectx.csv hugegen.csv hugein.jsonl hugeid.jsonl hugets.jsonl longline.csv; do t 1 sim "$tmp/$f"; done
t 1 run --trace "$tmp/hugectx.csv" --dry
# Option values out of range.
t 2 sim "$good" --capacity 2147483648
t 2 sim "$good" --capacity 1,,2
t 2 sim "$good" --hold 1000001
t 2 sim "$good" --model simple --hold 2
t 2 sim "$good" --block-size 65537
t 2 sim "$good" --csv - --json -
t 2 run --prompt-len 16777217
t 2 run --max-len 0
t 2 run --requests 10000001
t 2 run --memory 100T --dry
t 2 run --chunk 0
t 2 run --dtype fp8
t 2 run --dtype I8
# The cluster view (--nodes): counts, routes, bound, remote tier, capacities.
t 2 sim "$good" --nodes 0
t 2 sim "$good" --nodes 1025
t 2 sim "$good" --nodes 2,,4
t 2 sim "$good" --nodes 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17
t 2 sim "$good" --nodes 2 --route roundrobin
t 2 sim "$good" --nodes 2 --route ""
t 2 sim "$good" --route rr
t 2 sim "$good" --shared-remote 1G
# The Redis tier flag: address and prefix checked before the run.
t 2 run --redis ""
t 2 run --redis :6379/pfx
t 2 run --redis 127.0.0.1:6379/
t 2 run --redis localhost
t 2 run --redis "h;rm:80"
t 2 run --redis 127.0.0.1:0
t 2 run --redis "127.0.0.1:6379/a b"
t 2 run --redis unix:relative.sock
t 2 run --dry --redis 127.0.0.1:6379
# sim's real tiers: sizes, directory and server checked before any replay.
: > "$tmp/afile"
t 2 sim "$good" --redis 127.0.0.1:1
t 2 sim "$good" --redis localhost
t 2 sim "$good" --redis "127.0.0.1:6379/a b"
t 2 sim "$good" --file-dir "$tmp/afile/x"
t 2 sim "$good" --file-dir ""
t 2 sim "$good" --file-dir "$tmp/fd" --file-bytes 12x
t 2 sim "$good" --file-dir "$tmp/fd" --file-bytes 1000
t 2 sim "$good" --file-bytes 1G
t 2 sim "$good" --host-bytes 1G --host-blocks 3
t 2 sim "$good" --host-bytes lots
t 2 sim "$good" --host-bytes 1K
t 2 sim "$good" -m simple --file-dir "$tmp/fd"
t 2 sim "$good" --host-policy lru
t 2 sim "$good" --nodes 2 --shared-remote 1G --redis 127.0.0.1:1
t 2 sim "$good" --nodes 2 --route-load-bound 0.99
t 2 sim "$good" --nodes 2 --route-load-bound 1001
t 2 sim "$good" --nodes 2 --route-load-bound nan
t 2 sim "$good" --nodes 2 --shared-remote 0
t 2 sim "$good" --nodes 2 --shared-remote 1K
t 2 sim "$good" --nodes 2 --kv-bytes-per-token 0
t 2 sim "$good" --nodes 2 -c 10,20,30
t 2 sim "$good" --nodes 2,4 -c 10,20
t 2 sim "$good" --nodes 2 -p lru,fifo
t 2 sim "$good" --nodes 2 -m simple
# --policy-args names one policy; arguments it refuses are refused first.
t 2 sim "$good" -p lru,fwlru --policy-args cold=1
t 2 sim "$good" -p lru --policy-args fwlru:cold=1
t 2 sim "$good" -p fwlru --policy-args fwlru:nope=1
t 2 sim "$good" -p fwlru --policy-args fwlru:cold=1 --policy-args fwlru:cold=2
# Broken plug-ins: crash in create, garbage victim, garbage under traffic,
t 1 sim "$good" -c 50 --policy-lib "$tmp/bad_CRASH.so"
t 1 sim "$good" -c 50 --policy-lib "$tmp/bad_VICTIM.so"
t 1 sim "$good" -q -c 50 -p lru --policy-lib "$tmp/bad_LATE.so"
# ... a crash under real traffic (after the probe), no victim with blocks
# evictable, create failing at the real size, an unknown vtable version.
t 1 sim "$good" -q -c 50 -p lru --policy-lib "$tmp/bad_LATECRASH.so"
t 1 sim "$good" -q -c 50 -p lru --policy-lib "$tmp/bad_NONE.so"
t 1 sim "$good" -q -c 50 -p lru --policy-lib "$tmp/bad_BIGFAIL.so"
t 1 sim "$good" -q -c 50 -p lru --policy-lib "$tmp/bad_VERSION.so"
# Paths that would reach gnuplot: control characters refused before running.
nl='
'
t 2 sim "$good" --plot "a${nl}b.png"
t 2 run --dry --plot "a${nl}system 'id'.png"
t 2 sim "$good" --plot -
# gnuplot missing: said before the run, not after it.
if [ $md = 0 ]; then
  env PATH=/nonexistent "$bin" sim "$good" -c 50 -q --plot "$tmp/x.png" > "$tmp/out" 2> "$tmp/err"; rc=$?
  if [ $rc -ne 1 ] || ! grep -q 'needs gnuplot' "$tmp/err" || [ -s "$tmp/out" ]; then
    echo "tool-misuse: a missing gnuplot was not reported before the run (exit $rc)" >&2; fail=1
  fi
fi

# Accepted hostile cases print what their labels say.
ok 'replayed at 1533 blocks' '' sim "$good" -q -c 2147483647 -p lru
ok 'hits cannot exist in this format' '' sim "$azure" -q -c 10 -p lru
ok 'counted in .dropped.' '' sim "$good" -q -c 50 -p lru
ok '' '^50 +lru .*[[:space:]]50 +lru ' sim "$good" -q -c 50,50 -p lru,lru
ok 'none possible' 'tok/s' run --trace "$azure" --dry -q
ok 'n/a: [0-9]+ of 40 requests need more than --max-len 100' 'inf' run --trace "$azure" --dry -q --contiguous-baseline --max-len 100
ok 'n/a: --max-len 8192 is more than the whole pool' 'inf|nan' run --dry -q --blocks 1 --contiguous-baseline
ok 'at most --max-seqs 256' 'inf|nan' run --dry -q --contiguous-baseline --requests 8
ok ',prefix_hit_tokens,prefix_hit_ratio,' 'block_hit_tokens|^trace ' sim "$good" -q -c 50 -p lru --csv -
ok ',block_hit_tokens,block_hit_token_ratio,' 'prefix_hit|^trace ' sim "$good" -q -m simple -c 50 -p lru --csv -
ok '^\{' '^trace ' sim "$good" -q -c 50 -p lru --json -
ok '^\{' '^model ' run --dry -q --requests 4 --json -
ok 'i8 K/V' '' run -q --dtype i8 --requests 4 --blocks 64
ok 'fp8_e5m2 K/V' '' run -q --dtype fp8_e5m2 --requests 4 --blocks 64
ok '^2 +prefix ' '' sim "$good" -q --nodes 2 -c 50,60
ok '^4 +rr .*^4 +prefix|per node' '' sim "$good" -q --nodes 4 -c 50 --shared-remote 1G --kv-bytes-per-token 1024
ok '^policy,nodes,route,' '^trace ' sim "$good" -q --nodes 2 -c 50 --csv -
ok '^50 +lru +0\.[0-9]+ +0\.[0-9]+ +0\.[0-9]+ +0\.[0-9]+ +- +0$' '' sim "$good" -q -c 50 -p lru --no-belady --host-blocks 20 --file-dir "$tmp/fd"
ok ',seconds,device_hit_tokens,host_hit_tokens,file_hit_tokens,redis_hit_tokens,tier_errors' '' sim "$good" -q -c 50 -p lru --host-bytes 2G --csv -
ok '"device_hit_tokens": [0-9]+, "host_hit_tokens": [0-9]+, "file_hit_tokens": [0-9]+, "redis_hit_tokens": 0, "tier_errors": 0' '^trace ' sim "$good" -q -c 200 -p lru --host-blocks 5 --file-dir "$tmp/fd" --json -
ok '^2 +rr +all +0\.[0-9]+ +0\.[0-9]+ +0\.[0-9]+ +0\.[0-9]+ +- +0$' '' sim "$good" -q --nodes 2 -c 200 --host-bytes 1G --file-dir "$tmp/fdn"
# Redis unreachable (nobody listens on port 1): the run goes on, failures counted.
ok 'tier redis +0 stored, 0 promoted, [1-9][0-9]* errors' '' run -q --requests 16 --memory 1000000 --redis 127.0.0.1:1
[ -e ./- ] && { echo "tool-misuse: '--json -' wrote a file named '-'" >&2; fail=1; }
if command -v gnuplot > /dev/null 2>&1; then
  # A quote in a --plot path: the file is written under that name, nothing runs.
  q="$tmp/o'; system 'touch pkv-misuse-pwned'; '.png"
  ok '' '' sim "$good" -q -c 50,200 -p lru --plot "$q"
  ok '' '' run --dry -q --requests 4 --plot "$tmp/r'\\\".png"
  [ -e pkv-misuse-pwned ] && { rm -f pkv-misuse-pwned; echo "tool-misuse: a --plot path ran a command" >&2; fail=1; }
  [ -s "$q" ] || { echo "tool-misuse: --plot with a quote did not write its file" >&2; fail=1; }
fi
[ $fail = 0 ] && [ $md = 0 ] && echo "tool-misuse: all cases refused cleanly"
exit $fail
