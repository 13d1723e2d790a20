#!/bin/sh
# install-check.sh [MODE] — installs the library into a fresh temporary
# prefix (`make install PREFIX=$(mktemp -d)`), builds programs against that
# tree both ways — shared (`pkg-config --libs pagedkv`) and static
# (`pkg-config --static --libs pagedkv-static`) — and runs them with no
# LD_LIBRARY_PATH.  The programs: the README's example (examples/quickstart.c)
# and tests/host/host_link.c (the host keeps glibc's malloc).  The shared
# binaries must need libpagedkv.so.0 (found through the .pc's rpath), the
# static ones must not.  Prints one line per program; exits 1 on any failure.
set -u
mode=${1:-release}
cd "$(dirname "$0")/.."
cc=${CC:-cc}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

if ! make -s --no-print-directory MODE="$mode" install PREFIX="$prefix" >"$tmp/install.log" 2>&1; then
  cat "$tmp/install.log"; echo "install-check: make install PREFIX=$prefix failed"; exit 1
fi
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
unset LD_LIBRARY_PATH LD_PRELOAD

fail=0
check() { # name how src
  name=$1; how=$2; src=$3; bin=$tmp/$name
  case $how in
    shared) flags=$(pkg-config --cflags --libs pagedkv) ;;
    static) flags=$(pkg-config --static --cflags --libs pagedkv-static) ;;
  esac
  # shellcheck disable=SC2086  # pkg-config output is a list of flags
  if ! $cc -std=c11 -D_GNU_SOURCE -Wall -Werror -o "$bin" "$src" $flags -ldl >"$tmp/$name.log" 2>&1; then
    printf '%-32s FAILED to build: %s %s\n' "$name" "$cc $src" "$flags"; cat "$tmp/$name.log"
    fail=1; return
  fi
  needed=$(readelf -d "$bin" | grep -c 'NEEDED.*libpagedkv' || true)
  if [ "$how" = shared ] && [ "$needed" != 1 ]; then
    printf '%-32s FAILED: does not need libpagedkv.so\n' "$name"; fail=1; return
  fi
  if [ "$how" = static ] && [ "$needed" != 0 ]; then
    printf '%-32s FAILED: a static link that needs libpagedkv.so\n' "$name"; fail=1; return
  fi
  if out=$("$bin" 2>&1); then
    printf '%-32s ok (%s)\n' "$name" "$how"; printf '%s\n' "$out" | sed 's/^/    /'
  else
    printf '%-32s FAILED (%s)\n%s\n' "$name" "$how" "$out"; fail=1
  fi
}
for how in shared static; do
  check "quickstart_$how" $how examples/quickstart.c
  check "host_link_$how" $how tests/host/host_link.c
done
[ -x "$prefix/bin/pagedkv" ] && { "$prefix/bin/pagedkv" --help >/dev/null 2>&1 ||
  { echo "install-check: installed pagedkv --help failed"; fail=1; }; }
[ $fail = 0 ] && echo "install-check: ok ($prefix removed)"
exit $fail
