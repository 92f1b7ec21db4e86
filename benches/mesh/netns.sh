#!/bin/sh
# A→B through palisade A (outbound) and palisade B (inbound) vs A→B direct, in two netns.
# Usage (root): benches/mesh/netns.sh target/release/palisade 10s 16
# Needs: iproute2, iptables, nginx, oha (cargo install oha --locked), setpriv.
set -eu
BIN=$1; DUR=${2:-10s}; CONNS=${3:-16}
W=${TMPDIR:-/tmp}/palisade-mesh-bench; rm -rf $W; mkdir -p $W; chmod 755 $W
A=palbench-a; B=palbench-b
cleanup() {
  for p in $(cat $W/pids 2>/dev/null); do kill $p 2>/dev/null || true; done
  sleep 0.5
  ip netns del $A 2>/dev/null || true; ip netns del $B 2>/dev/null || true
}
trap cleanup EXIT
ip netns add $A; ip netns add $B
ip netns exec $A ip link set lo up; ip netns exec $B ip link set lo up
ip link add vbench-a netns $A type veth peer name vbench-b netns $B
ip netns exec $A ip addr add 10.88.0.1/24 dev vbench-a; ip netns exec $A ip link set vbench-a up
ip netns exec $B ip addr add 10.88.0.2/24 dev vbench-b; ip netns exec $B ip link set vbench-b up

# Certificates from `palisade demo --keep` (frontend = A, orders = B).
$BIN demo --keep > $W/demo.out 2>/dev/null & DEMO=$!
for i in $(seq 50); do grep -q certificates $W/demo.out 2>/dev/null && break; sleep 0.2; done
CERTS=$(awk '/certificates/ {print $2}' $W/demo.out)
cp -r $CERTS/frontend $W/a; cp -r $CERTS/orders $W/b; kill $DEMO; wait $DEMO 2>/dev/null || true
chmod -R a+rX $W
cat > $W/policy.yaml <<'POL'
apiVersion: policy.palisade.dev/v1alpha1
kind: ApiPolicy
metadata: { name: bench, namespace: shop }
spec:
  rules:
    - name: bench
      from: { principals: ["spiffe://cluster.local/ns/web/sa/frontend"] }
      to:
        - methods: [GET]
          paths: ["/bench"]
POL
cat > $W/nginx.conf <<NGX
worker_processes 1; daemon off; pid $W/nginx.pid; error_log stderr;
events { worker_connections 4096; }
http {
  access_log off; client_body_temp_path $W; proxy_temp_path $W; fastcgi_temp_path $W;
  uwsgi_temp_path $W; scgi_temp_path $W;
  server { listen 8080; location / { return 200 "ok\n"; } }
}
NGX
ip netns exec $B nginx -c $W/nginx.conf -p $W & echo $! >> $W/pids
sleep 0.5

run() {
  ip netns exec $A oha --no-tui -z $DUR -c $CONNS --output-format json http://10.88.0.2:8080/bench > $W/$1.json
  python3 - "$1" $W/$1.json <<'PY'
import json, sys
r = json.load(open(sys.argv[2]))
s, p = r["summary"], r["latencyPercentiles"]
codes = r.get("statusCodeDistribution", {})
print("%-8s rps=%9.0f  p50=%6.2fms  p99=%6.2fms  codes=%s" % (sys.argv[1], s["requestsPerSec"], p["p50"]*1000, p["p99"]*1000, codes))
PY
}
run direct

ip netns exec $A $BIN init --no-ipv6 >/dev/null 2>&1
ip netns exec $B $BIN init --no-ipv6 >/dev/null 2>&1
for ns in $A $B; do
  id=$([ $ns = $A ] && echo a || echo b)
  ip netns exec $ns setpriv --reuid 1337 --regid 1337 --clear-groups \
    $BIN proxy --policy $W/policy.yaml --identity-dir $W/$id --no-reload --workers 1 \
    --inbound 0.0.0.0:15006 --app 127.0.0.1:8080 \
    --outbound-listen 0.0.0.0:15001 --mesh-cidr 10.88.0.0/24 \
    2> $W/palisade-$id.log & echo $! >> $W/pids
done
sleep 1
run palisade
