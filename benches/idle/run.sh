#!/usr/bin/env bash
# benches/idle/run.sh — memory per idle mutual-TLS connection, palisade beside the peers.
#
# For each target of the peer harness (../shared/bench): start it fresh, read its RSS, open
# N mTLS connections with one keep-alive GET each (conns.py, Python's ssl with the harness's
# client certificate), read the RSS again while all N sit idle, close them, stop the target.
# KiB per connection = (RSS with N idle connections - RSS before) / N. "Anonymous" is the part
# of the RSS before that is the process's own memory (heap, stacks), not pages of its binary
# and libraries mapped from the page cache (which every process running them shares).
#
#   cargo build --release
#   TARGET_DIRS=$PWD/benches/peers PALISADE_BIN=$PWD/target/release/palisade \
#     N=2000 benches/idle/run.sh [TARGETS...]     # default: haproxy nginx palisade
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PEERS_DIR="${PEERS_DIR:-$(cd "$HERE/../../../shared/bench" && pwd)}"
# shellcheck source=/dev/null
. "$PEERS_DIR/lib.sh"
N="${N:-2000}"
need python3
need nginx "the harness's app is nginx"

harness_init
start_upstream

tree_anon_kb() { # PID -> summed RssAnon (kB) of the process tree
  local s=0 p v
  for p in $(tree_pids "$1"); do
    v="$(awk '/^RssAnon:/ {print $2}' "/proc/$p/status" 2>/dev/null)"; s=$((s + ${v:-0}))
  done
  echo "$s"
}

targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(haproxy nginx palisade)

printf '| target | RSS before | of which anonymous | RSS with %s idle mTLS conns | per connection |\n|---|---|---|---|---|\n' "$N" > "$RUN/table"
for t in "${targets[@]}"; do
  load_target "$t"
  t_start || die "$T_NAME did not start (logs: $RUN/logs/)"
  pid="$(pid_of "$T_PROC")"
  sleep 1
  before="$(tree_rss_kb "$pid")"; anon="$(tree_anon_kb "$pid")"
  rm -f "$RUN/ready" "$RUN/release"
  python3 "$HERE/conns.py" 127.0.0.1 "${T_URL_H1##*:}" "$N" "$CERTS/ca.crt" \
      "$CERTS/client.crt" "$CERTS/client.key" "$RUN/ready" "$RUN/release" &
  client=$!
  for _ in $(seq 1 900); do      # up to 90 s to open N connections
    [ -e "$RUN/ready" ] && break
    kill -0 "$client" 2>/dev/null || break
    sleep 0.1
  done
  [ -e "$RUN/ready" ] || { kill "$client" 2>/dev/null || true; die "$T_NAME: the client could not open $N connections"; }
  sleep 1
  with="$(tree_rss_kb "$pid")"
  touch "$RUN/release"
  wait "$client"
  stop_one "$T_PROC"
  per=$(( (with - before) * 1024 / N ))
  log "$T_NAME: ${before} kB before, ${with} kB with $N idle connections: $((per / 1024)).$(( (per % 1024) * 10 / 1024 )) KiB each"
  printf '| %s | %s KiB | %s KiB | %s KiB | %s.%s KiB |\n' "$T_NAME" "$before" "$anon" "$with" \
      "$((per / 1024))" "$(( (per % 1024) * 10 / 1024 ))" >> "$RUN/table"
done
cat "$RUN/table"
