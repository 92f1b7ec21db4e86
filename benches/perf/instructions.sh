#!/bin/bash
# benches/perf/instructions.sh — CPU cost of one proxied request, the two ways issue 4 measures it
# on a VM without hardware counters:
#
#   instructions  user-space instructions per request under callgrind (deterministic: compare
#                 builds with this, not with req/s)
#   cpu           CPU-ms of the proxy process per 1000 requests (/proc/PID/stat utime+stime,
#                 kernel included), proxy and app pinned to CPU 0, oha on CPU 1
#
#   cargo build --release
#   benches/perf/instructions.sh instructions target/release/palisade h1 3000
#   CONNS=64 benches/perf/instructions.sh cpu target/release/palisade h1 30000
#
# Same job as the peer harness (../shared/bench): strict mTLS, the allowlist policy, an nginx
# app answering 200; its own ports (28080 app, 28445 proxy) so it never clashes with a running
# harness. Needs nginx, oha, valgrind (instructions), taskset, python3. Stops exactly the
# processes it starts.
set -euo pipefail
MODE="$1"; BIN="$(realpath "$2")"; SCENARIO="${3:-h1}"; N="${4:-3000}"
HERE="$(cd "$(dirname "$0")" && pwd)"
BENCH="${BENCH:-$HERE/../../../shared/bench}"
WORK="$(mktemp -d /tmp/palisade-perf.XXXXXX)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
"$BENCH/gen-certs.sh" "$WORK/certs" >/dev/null 2>&1
C="$WORK/certs"

mkdir -p "$WORK/app/tmp"
cat > "$WORK/app/nginx.conf" <<CONF
worker_processes 1;
pid $WORK/app/nginx.pid;
error_log $WORK/app/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/app/tmp/body; proxy_temp_path $WORK/app/tmp/proxy;
    fastcgi_temp_path $WORK/app/tmp/fastcgi; uwsgi_temp_path $WORK/app/tmp/uwsgi;
    scgi_temp_path $WORK/app/tmp/scgi;
    keepalive_requests 10000000; keepalive_timeout 120s;
    server { listen 127.0.0.1:28080 backlog=4096;
             location / { default_type application/json; return 200 '{"ok":true,"items":[]}'; } }
}
CONF
taskset -c 0 nginx -e "$WORK/app/error.log" -p "$WORK/app" -c "$WORK/app/nginx.conf" -g 'daemon off;' &
PIDS+=($!)

PROXY=("$BIN" proxy --workers 1 --inbound 127.0.0.1:28445 --app 127.0.0.1:28080
  --cert "$C/server.crt" --key "$C/server.key" --trust-bundle "$C/ca.crt"
  --policy "$HERE/../peers/policy.yaml" --admin 127.0.0.1:0)
case "$MODE" in
  instructions) valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" "${PROXY[@]}" >"$WORK/proxy.log" 2>&1 & ;;
  cpu) taskset -c 0 "${PROXY[@]}" >"$WORK/proxy.log" 2>&1 & ;;
  *) echo "mode: instructions | cpu" >&2; exit 2 ;;
esac
P=$!; PIDS=("$P" "${PIDS[@]}")
for _ in $(seq 300); do (echo > /dev/tcp/127.0.0.1/28445) 2>/dev/null && break; sleep 0.2; done

A=(--no-tui --output-format json --cacert "$C/ca.crt" --cert "$C/client.crt" --key "$C/client.key")
case "$SCENARIO" in
  h1) A+=(--http-version 1.1 -c "${CONNS:-16}") ;;
  h2) A+=(--http2 -c "${H2_CONNS:-2}" -p 8) ;;
  *) echo "scenario: h1 | h2" >&2; exit 2 ;;
esac
URL=https://127.0.0.1:28445/api/v1/items/42
oha "${A[@]}" -n 500 "$URL" >/dev/null 2>&1            # warm-up: pool, allocator, caches
ticks() { awk '{print $14+$15}' "/proc/$P/stat"; }
if [ "$MODE" = instructions ]; then
  callgrind_control -z "$P" >/dev/null 2>&1
  oha "${A[@]}" -n "$N" "$URL" > "$WORK/oha.json"
  callgrind_control -d "$P" >/dev/null 2>&1
  sleep 1
  IR=$(grep -h -m1 '^summary:' "$WORK"/cg.out.* | awk '{print $2}')
  echo "user-space instructions per request: $((IR / N)) ($N requests, new connections' handshakes included)"
else
  t0=$(ticks)
  taskset -c "${CLIENT_CPUS:-1}" oha "${A[@]}" -n "$N" "$URL" > "$WORK/oha.json"
  t1=$(ticks)
  python3 - "$t0" "$t1" "$(getconf CLK_TCK)" "$N" "$WORK/oha.json" <<'PY'
import json, sys
t0, t1, hz, n = map(int, sys.argv[1:5])
j = json.load(open(sys.argv[5]))
print(f"proxy CPU ms per 1000 requests: {(t1 - t0) * 1e6 / hz / n:.1f}  "
      f"req/s {j['summary']['requestsPerSec']:.0f}  p99 {j['latencyPercentiles']['p99'] * 1000:.2f} ms  "
      f"statuses {j.get('statusCodeDistribution')}")
PY
fi
