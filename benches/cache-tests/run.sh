#!/bin/bash
# Runs the HTTP caching test suite (../shared/vendor/cache-tests, a snapshot of
# http-tests/cache-tests) against `stackway serve --cache 64MiB` in front of the suite's
# own server, and prints the counts beside the published ones of the reverse proxies.
# Usage: benches/cache-tests/run.sh [RESULTS.json]   (from the repository's root;
# `cargo build --release -p stackway-cli` first, or STACKWAY=path/to/stackway;
# CACHE_DIR=DIR runs the cache on disk there)
set -euo pipefail
root=$(pwd)
out=${1:-$root/target/cache-tests.json}
suite=$(mktemp -d)
# The suite's server runs as npm's grandchild: its own process group, killed whole.
server_group=""
trap 'kill ${server_group:+-- -$server_group} $(jobs -p) 2>/dev/null; rm -rf "$suite"' EXIT
cp -r "$root/../shared/vendor/cache-tests/." "$suite"
chmod -R u+w "$suite"
(cd "$suite" && npm i --no-audit --no-fund --silent >/dev/null 2>&1) || {
  echo "npm i failed in the suite's copy" >&2
  exit 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
origin=$(free_port)
front=$(free_port)
(cd "$suite" && exec setsid npm run --silent server --port="$origin" >/dev/null 2>&1) &
server_group=$!
"${STACKWAY:-$root/target/release/stackway}" serve --bind "127.0.0.1:$front" --cache 64MiB \
  ${CACHE_DIR:+--cache-dir "$CACHE_DIR"} --mount "/=http://127.0.0.1:$origin" >"$suite/stackway.log" 2>&1 &
for _ in $(seq 50); do
  curl -s -o /dev/null "http://127.0.0.1:$front/" && break
  sleep 0.2
done
(cd "$suite" && npm run --silent cli --base="http://127.0.0.1:$front") >"$out"
node "$root/benches/cache-tests/summary.mjs" "$suite" "$out"
