# benches/perf/setup.sh — sourced by benches/perf/instructions.sh and link/order.sh, which set
# BENCH (the peer harness) and APP_PORT: a work directory removed on exit, the harness's test
# PKI in $C, and the harness's app (nginx, one worker, answering 200 on 127.0.0.1:$APP_PORT,
# on CPU 0). Every process a script starts goes into PIDS and is stopped on exit.
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
    server { listen 127.0.0.1:${APP_PORT} backlog=4096;
             location / { default_type application/json; return 200 '{"ok":true,"items":[]}'; } }
}
CONF
taskset -c 0 nginx -e "$WORK/app/error.log" -p "$WORK/app" -c "$WORK/app/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
