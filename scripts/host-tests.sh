#!/bin/sh
# host-tests.sh BUILD_DIR — the library as hosts see it (tests/host/):
#   host_dlopen       a C host without pagedkv or jemalloc dlopens the .so
#                     (twice, two instances, two threads each, reload)
#   host_jemalloc     a host that links jemalloc itself: the library uses a
#                     private jemalloc arena
#   ctypes_load       /usr/bin/python3 loads the .so with ctypes, no LD_PRELOAD
#   install-check     hosts built against a `make install` tree, shared and
#                     static through pkg-config, keep glibc's malloc
# Sanitizer builds are not loadable into an uninstrumented host, so for them
# it says so and runs nothing.  Closes with "host: N passed, N failed".
set -u
build=${1:?usage: host-tests.sh BUILD_DIR}
cd "$(dirname "$0")/.."
mode=$(basename "$build")
case $mode in asan|tsan)
  echo "host: not run for $mode (a sanitizer build needs its runtime loaded first; run make test)"; exit 0 ;;
esac
cc=${CC:-cc}
lib=$build/libpagedkv.so
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
unset LD_PRELOAD
passed=0; failed=0

report() { # name rc output
  if [ "$2" = 0 ]; then printf '%-32s ok\n' "$1"; passed=$((passed + 1))
  else printf '%-32s FAILED (exit %s)\n' "$1" "$2"; failed=$((failed + 1)); fi
  printf '%s\n' "$3" | sed 's/^/    /'
}
run() { # name command...
  name=$1; shift
  out=$("$@" 2>&1); report "$name" $? "$out"
}
build_c() { # out src flags... ; a build failure is a test failure
  out=$1; src=$2; shift 2
  $cc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -O1 -g -Iinclude -o "$out" "$src" "$@" 2>&1
}

# 1. dlopen from a host linked with neither pagedkv nor jemalloc.
cp "$lib" "$tmp/libpagedkv-copy.so"
if o=$(build_c "$tmp/host_dlopen" tests/host/host_dlopen.c -ldl -pthread); then
  run host_dlopen "$tmp/host_dlopen" "$lib" "$tmp/libpagedkv-copy.so"
else report host_dlopen build "$o"; fi

# 2. A host that chose jemalloc: the library finds it and uses its own arena.
if o=$(build_c "$tmp/host_jemalloc" tests/host/host_link.c -DHOST_WITH_JEMALLOC \
         "$build/libpagedkv.a" -lxxhash -lm -pthread -ldl -ljemalloc); then
  run host_jemalloc "$tmp/host_jemalloc"
else report host_jemalloc build "$o"; fi

# 3. Python, the interpreter the project uses.
run ctypes_load /usr/bin/python3 tests/host/ctypes_load.py "$lib"

# 4. Installed tree, shared and static through pkg-config.
run install-check scripts/install-check.sh "$mode"

echo "host: $passed passed, $failed failed"
[ $failed = 0 ]
