#!/bin/bash
# benches/perf/instructions.sh — CPU cost of one proxied request, the two ways issue 4 measures it
# on a VM without hardware counters:
#
#   instructions  user-space instructions per request under callgrind (deterministic: compare
#                 builds with this, not with req/s)
#   cpu           CPU-ms of the proxy process per 1000 requests (/proc/PID/stat utime+stime,
#                 kernel included), proxy and app pinned to CPU 0, oha on CPU 1
#   syscalls      system calls per request by name (strace -c attached to the proxy during the run)
#
#   cargo build --release
#   benches/perf/instructions.sh instructions target/release/palisade h1 3000
#   CG_OUT=/tmp/h2.cg benches/perf/instructions.sh instructions target/release/palisade h2 3000  # keep the profile
#   CONNS=64 benches/perf/instructions.sh cpu target/release/palisade h1 30000
#   benches/perf/instructions.sh syscalls target/release/palisade h2 3000
#   PERF_OUT=/tmp/h1.perf CONNS=64 benches/perf/instructions.sh cpu target/release/palisade h1 30000  # + kernel profile
#   benches/perf/instructions.sh instructions haproxy h2 3000   # the same measurement of the peer
#
# In place of the binary, `haproxy` measures HAProxy doing the same job with the peer
# harness's configuration (../shared/bench/targets/haproxy.sh: verify required, ALPN h2 and
# http/1.1, the allowlist as ACLs, keep-alive to the app, one thread).
#
# Same job as the peer harness (../shared/bench): strict mTLS, the allowlist policy, an nginx
# app answering 200; its own ports (APP_PORT 28080, PROXY_PORT 28445) so it never clashes
# with a running harness. RATE=1000 makes the h1 load a fixed rate (latency-corrected).
# palisade runs with the image's GLIBC_TUNABLES (PALISADE_TUNABLES= runs it without). Needs
# nginx, oha, valgrind (instructions), strace (syscalls), perf (PERF_OUT), taskset, python3
# (and haproxy to measure it). Stops exactly the processes it starts.
set -euo pipefail
APP_PORT="${APP_PORT:-28080}"; PROXY_PORT="${PROXY_PORT:-28445}"
MODE="$1"; BIN="$2"; SCENARIO="${3:-h1}"; N="${4:-3000}"
[ "$BIN" = haproxy ] || BIN="$(realpath "$BIN")"
HERE="$(cd "$(dirname "$0")" && pwd)"
BENCH="${BENCH:-$HERE/../../../shared/bench}"
# shellcheck source=benches/perf/setup.sh
source "$HERE/setup.sh"
SETENV=()

if [ "$BIN" = haproxy ]; then
  # The harness's own HAProxy target, so that the job is exactly the harness's: its `spawn`
  # only hands over the command line here, to run the way this mode runs the proxy.
  spawn() { shift; PROXY=("$@"); }
  wait_port() { :; }
  log() { echo "$*" >&2; }
  RUN="$WORK" CERTS="$C" HAPROXY_PORT="$PROXY_PORT" UPSTREAM_H1_PORT="$APP_PORT" PROXY_WORKERS=1
  # shellcheck source=/dev/null
  source "$BENCH/targets/haproxy.sh"
  t_start
else
  # palisade runs with the glibc malloc setting its image sets (deploy/Containerfile);
  # PALISADE_TUNABLES= measures it without.
  SETENV=(env GLIBC_TUNABLES="${PALISADE_TUNABLES-glibc.malloc.tcache_count=64}")
  PROXY=("$BIN" proxy --workers 1 --inbound 127.0.0.1:${PROXY_PORT} --app 127.0.0.1:${APP_PORT}
    --cert "$C/server.crt" --key "$C/server.key" --trust-bundle "$C/ca.crt"
    --policy "$HERE/../peers/policy.yaml" --admin 127.0.0.1:0)
fi
case "$MODE" in
  instructions) "${SETENV[@]}" valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" "${PROXY[@]}" >"$WORK/proxy.log" 2>&1 & ;;
  cpu|syscalls) "${SETENV[@]}" taskset -c 0 "${PROXY[@]}" >"$WORK/proxy.log" 2>&1 & ;;
  *) echo "mode: instructions | cpu | syscalls" >&2; exit 2 ;;
esac
P=$!; PIDS=("$P" "${PIDS[@]}")
for _ in $(seq 300); do (echo > /dev/tcp/127.0.0.1/${PROXY_PORT}) 2>/dev/null && break; sleep 0.2; done

A=(--no-tui --output-format json --cacert "$C/ca.crt" --cert "$C/client.crt" --key "$C/client.key")
case "$SCENARIO" in
  h1) A+=(--http-version 1.1 -c "${CONNS:-16}" ${RATE:+-q "$RATE" --latency-correction}) ;;
  h2) A+=(--http2 -c "${H2_CONNS:-2}" -p 8) ;;
  *) echo "scenario: h1 | h2" >&2; exit 2 ;;
esac
URL=https://127.0.0.1:${PROXY_PORT}/api/v1/items/42
oha "${A[@]}" -n 500 "$URL" >/dev/null 2>&1            # warm-up: pool, allocator, caches
ticks() { awk '{print $14+$15, $14, $10}' "/proc/$P/stat"; }
switches() { awk '/ctxt_switches/ {s += $2} END {print s}' "/proc/$P/status"; }
packets() { awk '$1 == "lo:" {print $3}' /proc/net/dev; }   # loopback packets: data and pure ACKs, all sockets
per_request() { awk -v a="$1" -v b="$2" -v n="$N" -v f="$3" 'BEGIN {printf f, (b - a) / n}'; }  # BEFORE AFTER FORMAT
if [ "$MODE" = instructions ]; then
  callgrind_control -z "$P" >/dev/null 2>&1
  oha "${A[@]}" -n "$N" "$URL" > "$WORK/oha.json"
  callgrind_control -d "$P" >/dev/null 2>&1
  sleep 1
  IR=$(grep -h -m1 '^summary:' "$WORK"/cg.out.* | awk '{print $2}')
  echo "user-space instructions per request: $((IR / N)) ($N requests, new connections' handshakes included)"
  if [ -n "${CG_OUT:-}" ]; then cp "$(grep -l -m1 "^summary:" "$WORK"/cg.out.* | head -1)" "$CG_OUT"; echo "callgrind profile: $CG_OUT (callgrind_annotate $CG_OUT)"; fi
elif [ "$MODE" = syscalls ]; then
  strace -c -f -p "$P" -o "$WORK/strace.txt" 2>/dev/null &
  S=$!; sleep 1
  taskset -c "${CLIENT_CPUS:-1}" oha "${A[@]}" -n "$N" "$URL" > "$WORK/oha.json"
  kill -INT "$S"; wait "$S" 2>/dev/null || true
  echo "system calls per request ($N requests):"
  awk -v n="$N" '$4 ~ /^[0-9]+$/ && $NF != "total" { printf "  %-16s %6.2f\n", $NF, $4 / n }
                 $NF == "total" { printf "  %-16s %6.2f\n", "all", $4 / n }' "$WORK/strace.txt"
else
  if [ -n "${PERF_OUT:-}" ]; then perf record -q -e cpu-clock -F 4000 -g -p "$P" -o "$PERF_OUT" 2>/dev/null & R=$!; sleep 0.5; fi
  read -r t0 u0 f0 < <(ticks); s0=$(switches); k0=$(packets)
  taskset -c "${CLIENT_CPUS:-1}" oha "${A[@]}" -n "$N" "$URL" > "$WORK/oha.json"
  read -r t1 u1 f1 < <(ticks); s1=$(switches); k1=$(packets)
  echo "context switches per request: $(per_request "$s0" "$s1" %.2f)," \
    "loopback packets per request: $(per_request "$k0" "$k1" %.2f)," \
    "page faults per request: $(per_request "$f0" "$f1" %.3f)"
  if [ -n "${PERF_OUT:-}" ]; then kill -INT "$R"; wait "$R" 2>/dev/null || true; echo "perf profile: $PERF_OUT (perf report -i $PERF_OUT --no-children)"; fi
  python3 - "$t0" "$t1" "$(getconf CLK_TCK)" "$N" "$WORK/oha.json" "$u0" "$u1" <<'PY'
import json, sys
t0, t1, hz, n = map(int, sys.argv[1:5])
u0, u1 = map(int, sys.argv[6:8])
j = json.load(open(sys.argv[5]))
print(f"proxy CPU ms per 1000 requests: {(t1 - t0) * 1e6 / hz / n:.1f} "
      f"(user {(u1 - u0) * 1e6 / hz / n:.1f})  "
      f"req/s {j['summary']['requestsPerSec']:.0f}  p99 {j['latencyPercentiles']['p99'] * 1000:.2f} ms  "
      f"statuses {j.get('statusCodeDistribution')}")
PY
fi
