#!/bin/sh
# with-redis.sh COMMAND... — runs COMMAND with PKV_TEST_REDIS=127.0.0.1:PORT
# naming a redis-server the Redis tier's tests (tests/check_redis.c, and
# check_sim's sim_redis_tier: sim --redis) use.
#
# If PKV_TEST_REDIS is already set (.ci/run starts one), COMMAND runs as is.
# Otherwise this starts a private redis-server on 127.0.0.1 at a free port,
# with no persistence (--save '' --appendonly no) and its files in a
# temporary directory, and stops it when COMMAND ends.  If redis-server is
# missing or will not start, PKV_TEST_REDIS stays unset and check_redis
# fails saying so (no silent skip); the other suites run normally.
set -u
if [ -n "${PKV_TEST_REDIS:-}" ]; then exec "$@"; fi
if ! command -v redis-server >/dev/null 2>&1; then
  echo "with-redis: redis-server not installed (scripts/deps.sh build installs it); check_redis will fail" >&2
  exec "$@"
fi
dir=$(mktemp -d "${TMPDIR:-/tmp}/pkv-redis.XXXXXX") || exit 1
pid=""
stop() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$dir"
}
trap stop EXIT
trap 'exit 130' INT TERM
# A free port: ask the kernel (bind port 0), then start on it; retry if
# another process took it in between.
for attempt in 1 2 3 4 5; do
  port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
    --dir "$dir" --logfile "$dir/redis.log" >/dev/null 2>&1 &
  pid=$!
  i=0
  while [ $i -lt 100 ]; do
    if redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; then
      PKV_TEST_REDIS=127.0.0.1:$port; export PKV_TEST_REDIS
      break 2
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05; i=$((i + 1))
  done
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; pid=""
done
if [ -z "${PKV_TEST_REDIS:-}" ]; then
  echo "with-redis: could not start redis-server (see $dir/redis.log); check_redis will fail" >&2
  cat "$dir/redis.log" >&2 2>/dev/null
fi
"$@"
