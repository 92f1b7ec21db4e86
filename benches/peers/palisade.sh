# benches/peers/palisade.sh — palisade as a target of the peer harness in ../shared/bench
# (see its README): strict mTLS on 127.0.0.1:18445, the allowlist of allowlist.txt, forwarding
# to the app on 127.0.0.1:18080 over pooled HTTP/1.1, no access log; with the glibc malloc
# setting the image sets (deploy/Containerfile).
#
#   cargo build --release
#   TARGET_DIRS=$PWD/benches/peers PALISADE_BIN=$PWD/target/release/palisade ../shared/bench/check.sh palisade
#   TARGET_DIRS=$PWD/benches/peers PALISADE_BIN=$PWD/target/release/palisade REPEAT=3 MODES=pinned ../shared/bench/run.sh
T_NAME=palisade
T_URL_H1="https://127.0.0.1:${PALISADE_PORT}"
T_MTLS=1
T_POLICY=1
T_PROC=palisade
PALISADE_BIN="${PALISADE_BIN:-palisade}"
# As in the image (deploy/Containerfile); PALISADE_TUNABLES= runs palisade without it.
PALISADE_TUNABLES="${PALISADE_TUNABLES-glibc.malloc.tcache_count=64}"
# The allowlist in our policy language, beside this file (sourced by the harness).
PALISADE_POLICY="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/policy.yaml"
t_version() { "$PALISADE_BIN" --version 2>/dev/null | head -1 || true; }
T_DESC="$(t_version), ${PROXY_WORKERS} worker thread(s), rustls (ring)"

t_start() {
  command -v "$PALISADE_BIN" >/dev/null 2>&1 || [ -x "$PALISADE_BIN" ] ||
    { log "palisade: set PALISADE_BIN to the built binary"; return 1; }
  spawn palisade env GLIBC_TUNABLES="$PALISADE_TUNABLES" "$PALISADE_BIN" proxy \
      --workers "${PROXY_WORKERS}" \
      --inbound "127.0.0.1:${PALISADE_PORT}" \
      --app "127.0.0.1:${UPSTREAM_H1_PORT}" \
      --cert "$CERTS/server.crt" --key "$CERTS/server.key" --trust-bundle "$CERTS/ca.crt" \
      --policy "$PALISADE_POLICY"
  wait_port "$PALISADE_PORT" 15 palisade
}
