#!/usr/bin/env bash
# Load test of the admission webhook (issue 9): p50/p99 of 1 000 AdmissionReviews POSTed to a
# running `palisade inject` over real HTTPS (TLS 1.3, HTTP/1.1 keep-alive and HTTP/2), with
# oha. The review carries a Deployment's pod (two containers, HTTP and TCP probes on named
# ports, annotations), so each answer is a full patch with rewritten probes.
#
#   benches/inject_load.sh [path/to/palisade]     (default: target/release/palisade)
#   CONNECTIONS=1 benches/inject_load.sh ...       (one client: latency without queueing)
#   REQUESTS=1000 (default) reviews per case, after 100 warm-up ones.
#
# Needs oha and openssl. Runs well under a minute. Build first:
#   cargo build --release -p palisade --bin palisade
set -euo pipefail

PALISADE=${1:-target/release/palisade}
REQUESTS=${REQUESTS:-1000}
CONNECTIONS=${CONNECTIONS:-8}

for tool in oha openssl "$PALISADE"; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done

work=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# A self-signed leaf (CA:FALSE: rustls refuses a CA certificate as the server's), trusted
# directly by oha and curl.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=palisade-injector -addext "subjectAltName=IP:127.0.0.1" \
    -addext "basicConstraints=critical,CA:FALSE" -addext "extendedKeyUsage=serverAuth" \
    -keyout "$work/tls.key" -out "$work/tls.crt" 2>/dev/null

cat >"$work/review.json" <<'EOF'
{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
 "uid":"2b752327-a529-4ffd-b2e2-478455e80a0d",
 "kind":{"group":"","version":"v1","kind":"Pod"},
 "resource":{"group":"","version":"v1","resource":"pods"},
 "namespace":"shop","operation":"CREATE",
 "userInfo":{"username":"system:serviceaccount:kube-system:replicaset-controller"},
 "object":{"apiVersion":"v1","kind":"Pod",
  "metadata":{"generateName":"orders-7d9f8b-","namespace":"shop","labels":{"app":"orders"},
   "annotations":{"palisade.dev/exclude-outbound-cidrs":"169.254.169.254/32","palisade.dev/proxy-memory":"96Mi"}},
  "spec":{"containers":[
   {"name":"orders","image":"registry.example/orders:1.4",
    "ports":[{"name":"http","containerPort":8080},{"name":"health","containerPort":8081}],
    "readinessProbe":{"httpGet":{"path":"/healthz","port":"health"},"periodSeconds":5},
    "livenessProbe":{"httpGet":{"path":"/livez","port":8081},"timeoutSeconds":2},
    "startupProbe":{"tcpSocket":{"port":"http"}}},
   {"name":"log-shipper","image":"registry.example/ship:2",
    "livenessProbe":{"exec":{"command":["true"]}}}],
   "volumes":[{"name":"scratch","emptyDir":{}}]}}}}
EOF

"$PALISADE" inject --listen 127.0.0.1:0 --cert "$work/tls.crt" --key "$work/tls.key" \
    2>"$work/log" &
pid=$!
addr=
for _ in $(seq 100); do
    addr=$(sed -n 's/.*inject listening.*listen=\([^ ]*\).*/\1/p' "$work/log" | head -n1)
    [ -n "$addr" ] && break
    sleep 0.1
done
[ -n "$addr" ] || { cat "$work/log" >&2; echo "palisade inject did not start" >&2; exit 1; }
url="https://$addr/mutate"

# One answer checked by hand: allowed, with a patch.
curl -sS --cacert "$work/tls.crt" -H 'content-type: application/json' \
    --data-binary @"$work/review.json" "$url" | grep -q '"allowed":true' \
    || { echo "the webhook did not allow the pod" >&2; exit 1; }

run() {
    echo "== $1"
    shift
    oha --no-tui -n "$REQUESTS" -c "$CONNECTIONS" -m POST -T application/json \
        -D "$work/review.json" --cacert "$work/tls.crt" "$@" "$url" | tee "$work/out"
    grep -q "\[200\] $REQUESTS responses" "$work/out" || { echo "not every review got 200" >&2; exit 1; }
}
oha --no-tui -n 100 -c "$CONNECTIONS" -m POST -T application/json -D "$work/review.json" \
    --cacert "$work/tls.crt" "$url" >/dev/null   # warm-up
run "HTTP/1.1 keep-alive, $CONNECTIONS connections"
run "HTTP/2, $CONNECTIONS connections" --http2
run "a new TLS connection per review (HTTP/1.1), $CONNECTIONS at a time" --disable-keepalive
