#!/bin/bash
# link/order.sh — regenerate link/palisade.order, the order in which the linker lays out the
# functions of the release binary (lld's --symbol-ordering-file; build.rs passes it).
#
# It runs the release binary under callgrind doing the peer harness's job (strict mTLS, the
# allowlist policy, an nginx app) and lists, by their symbol names:
#   1. the functions that serve requests (HTTP/1.1 and h2, allowed and denied), most executed
#      first, so the request path shares as few pages (and cache lines) as it can;
#   2. the functions that only start the proxy up, so that start-up maps a few pages of the
#      binary instead of a 64 KiB window here and there (those windows were most of the idle RSS).
# Functions that never ran keep the compiler's order after these.
#
#   cargo build --release && link/order.sh target/release/palisade
#   link/order.sh --check target/release/palisade    # how much of the list the binary has
#
# Symbol names carry hashes that change with the compiler and the dependencies: a stale list
# only loses its effect (lld skips names it does not find), it never breaks the build. Re-run
# after upgrading either; `--check` fails when under 90% of the listed functions are found.
# Needs nginx, oha, valgrind, python3 (as benches/perf/instructions.sh); `--check` needs nm.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ORDER="$HERE/palisade.order"
if [ "${1:-}" = --check ]; then
  found=$(nm "${2:-target/release/palisade}" | awk 'NF == 3 && $2 ~ /[tT]/ {print $3}' | sort -u |
    comm -12 - <(sort -u "$ORDER") | wc -l)
  total=$(sort -u "$ORDER" | wc -l)
  echo "link/palisade.order: $found of $total functions found in the binary"
  [ $((found * 10)) -ge $((total * 9)) ] || { echo "stale: run link/order.sh on a fresh release build" >&2; exit 1; }
  exit 0
fi
BIN="$(realpath "${1:-target/release/palisade}")"
BENCH="${BENCH:-$HERE/../../shared/bench}"
APP_PORT="${APP_PORT:-28081}"; PROXY_PORT="${PROXY_PORT:-28446}"; N="${N:-2000}"
# shellcheck source=benches/perf/setup.sh
source "$HERE/../benches/perf/setup.sh"

# Part 1 of the profile is start-up (dumped once the port is open), part 2 the requests.
valgrind --tool=callgrind --demangle=no --callgrind-out-file="$WORK/cg.out" \
  "$BIN" proxy --workers 1 --inbound 127.0.0.1:${PROXY_PORT} --app 127.0.0.1:${APP_PORT} \
  --cert "$C/server.crt" --key "$C/server.key" --trust-bundle "$C/ca.crt" \
  --policy "$HERE/../benches/peers/policy.yaml" --admin 127.0.0.1:0 >"$WORK/proxy.log" 2>&1 &
P=$!; PIDS=("$P" "${PIDS[@]}")
for _ in $(seq 300); do (echo > /dev/tcp/127.0.0.1/${PROXY_PORT}) 2>/dev/null && break; sleep 0.2; done
sleep 1
callgrind_control -d "$P" >/dev/null
A=(--no-tui --cacert "$C/ca.crt" --cert "$C/client.crt" --key "$C/client.key")
URL=https://127.0.0.1:${PROXY_PORT}
oha "${A[@]}" --http-version 1.1 -c 16 -n "$N" "$URL/api/v1/items/42" >/dev/null
oha "${A[@]}" --http2 -c 2 -p 8 -n "$N" "$URL/api/v1/items/42" >/dev/null
oha "${A[@]}" --http-version 1.1 -c 4 -n $((N / 10)) "$URL/admin/users" >/dev/null
oha "${A[@]}" --http2 -c 1 -p 4 -n $((N / 10)) -m POST -d '{"id":1}' "$URL/api/v1/orders" >/dev/null
callgrind_control -d "$P" >/dev/null
sleep 1

python3 - "$BIN" "$WORK"/cg.out*.1 "$WORK"/cg.out*.2 > "$ORDER" <<'PY'
import re, sys
def self_cost(path, binary):
    """Instructions per function of `binary` in one callgrind dump (compressed names)."""
    names, cost, obj, fn, after_call = {}, {}, None, None, False
    def name(kind, text):
        m = re.match(r"\((\d+)\)(?: (.*))?", text.strip())
        if m.group(2): names[kind, m.group(1)] = m.group(2)
        return names[kind, m.group(1)]
    for line in open(path, errors="replace"):
        if line.startswith("ob="): obj = name("ob", line[3:])
        elif line.startswith("cob="): name("ob", line[4:])
        elif line.startswith("fn="): fn = re.sub(r"'\d+$", "", name("fn", line[3:]))
        elif line.startswith("cfn="): name("fn", line[4:])
        elif line.startswith("calls="): after_call = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            if after_call: after_call = False; continue
            parts = line.split()
            if obj == binary and fn and len(parts) > 1: cost[fn] = cost.get(fn, 0) + int(parts[1])
    return cost
binary = sys.argv[1]
start, serve = self_cost(sys.argv[2], binary), self_cost(sys.argv[3], binary)
order = [f for f, _ in sorted(serve.items(), key=lambda kv: -kv[1])]
seen = set(order)
order += [f for f, _ in sorted(start.items(), key=lambda kv: -kv[1]) if f not in seen]
print("\n".join(order))
PY
echo "link/palisade.order: $(wc -l < "$ORDER") functions" >&2
