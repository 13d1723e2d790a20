#!/bin/sh
# host-tests.sh BUILD_DIR — the library as hosts see it (tests/host/):
#   host_dlopen       a C host without pagedkv or jemalloc dlopens the .so
#                     (twice, two instances, two threads each, reload)
#   host_jemalloc     a host that links jemalloc itself: the library uses a
#                     private jemalloc arena
#   ctypes_load       /usr/bin/python3 loads the .so with ctypes, no LD_PRELOAD
#   install-check     hosts built against a `make install` tree, shared and
#                     static through pkg-config, keep glibc's malloc
#   abi_symbols       the .so exports exactly the PKV_API functions, versioned
#   host_abi          a caller compiled against 0.1's structs (frozen copy)
#                     works with this library, and with one built from
#                     headers that append a field to each struct
#   no_hiredis_needed the .so does not depend on libhiredis (the Redis tier
#                     loads it at run time): it loads where hiredis is absent
# Sanitizer builds are not loadable into an uninstrumented host, so for them
# it says so and counts them skipped.  Closes with
# "host: N passed, N failed, N skipped".
set -u
build=${1:?usage: host-tests.sh BUILD_DIR}
cd "$(dirname "$0")/.."
mode=$(basename "$build")
case $mode in asan|tsan)
  echo "host: 0 passed, 0 failed, 8 skipped: host_dlopen host_jemalloc ctypes_load install-check abi_symbols host_abi host_abi_appended no_hiredis_needed: skipping for $mode (an uninstrumented host cannot load a sanitizer build; make test runs them)"; exit 0 ;;
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

# 5. ABI: exported symbols, and an 0.1 caller on this and on a "later" library.
run abi_symbols /usr/bin/python3 tests/host/abi_symbols.py "$lib" include/pagedkv/*.h
if o=$($cc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -O1 -g -c -o "$tmp/host_abi.o" tests/host/host_abi.c 2>&1) &&
   o=$(build_c "$tmp/host_abi" "$tmp/host_abi.o" "$build/libpagedkv.a" -lxxhash -lm -pthread); then
  run host_abi "$tmp/host_abi" "$(sed -n 's/^#define PKV_CONFIG_VERSION \([0-9]*\)$/\1/p' include/pagedkv/pagedkv.h)"
else report host_abi build "$o"; fi
# The library compiled (debug checks on) against headers with appended fields.
if o=$(/usr/bin/python3 tests/host/abi_append.py include "$tmp/abi/include" 2>&1) && appended_version=$o &&
   o=$($cc -std=c11 -D_GNU_SOURCE -O0 -DPKV_DEBUG=1 -fvisibility=hidden -pthread \
         -I"$tmp/abi/include" -Ilibpagedkv -o "$tmp/host_abi_appended" "$tmp/host_abi.o" \
         libpagedkv/*.c libpagedkv/*/*.c -lxxhash -lm -pthread 2>&1); then
  run host_abi_appended "$tmp/host_abi_appended" "$appended_version"
else report host_abi_appended build "$o"; fi

# 6. The Redis tier is optional at run time: no DT_NEEDED on libhiredis.
needed=$(readelf -d "$lib" 2>&1 | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
case $needed in
  *hiredis*) report no_hiredis_needed 1 "NEEDED: $needed" ;;
  "") report no_hiredis_needed 1 "readelf -d $lib listed nothing" ;;
  *) report no_hiredis_needed 0 "NEEDED: $needed" ;;
esac

echo "host: $passed passed, $failed failed, 0 skipped"
[ $failed = 0 ]
