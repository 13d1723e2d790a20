#!/bin/sh
# deps.sh GROUP... — make sure the Debian packages a part of the build needs
# are installed.  As root it installs what is missing (apt-get); otherwise it
# prints the exact command to run and exits 1.
#
# Groups: lib (the library and examples; libhiredis-dev for the Redis tier's
#         header — the library loads libhiredis only when a tier is attached),
#         tools (+ jemalloc, which the pagedkv
#         tool and the benchmarks link as their process allocator),
#         build (+ Check, python3, and redis-server + redis-tools for the
#         Redis tier's tests and benchmark: everything `make test` needs),
#         bench (OpenBLAS and redis-benchmark baselines), plot (gnuplot for --plot),
#         fuzz (clang + libFuzzer runtime), valgrind, python (the Python package's tests),
#         pyext (its compiled fast path: `make` builds it), all.
set -eu

pkgs_for() {
  case "$1" in
    lib)      echo "build-essential pkg-config libxxhash-dev libhiredis-dev" ;;
    tools)    echo "$(pkgs_for lib) libjemalloc-dev" ;;
    build)    echo "$(pkgs_for tools) check python3 redis-server redis-tools" ;;
    bench)    echo "libopenblas-dev redis-server redis-tools" ;;
    plot)     echo "gnuplot-nox" ;;
    fuzz)     echo "clang libclang-rt-14-dev" ;;
    valgrind) echo "valgrind" ;;
    python)   echo "python3 python3-numpy python3-pytest $(pkgs_for pyext)" ;;
    pyext)    echo "python3 python3-dev" ;;
    all)      for g in build bench plot fuzz valgrind python; do pkgs_for "$g"; done ;;
    *) echo "deps.sh: unknown group '$1' (lib, tools, build, bench, plot, fuzz, valgrind, python, pyext, all)" >&2; exit 2 ;;
  esac
}

[ $# -gt 0 ] || set -- build
want=""
for g in "$@"; do want="$want $(pkgs_for "$g")"; done

missing=""
for p in $want; do
  st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  case "$st" in *"install ok installed"*) ;; *) missing="$missing $p" ;; esac
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "deps.sh: installing:$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  # A fresh machine has no package lists yet.
  apt-get install -y -q --no-install-recommends $missing >&2 ||
    { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends $missing >&2; }
  exit 0
fi

echo "deps.sh: missing Debian packages:$missing" >&2
echo "deps.sh: install them with:  sudo apt-get install -y$missing" >&2
exit 1
