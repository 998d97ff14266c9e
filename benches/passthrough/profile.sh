#!/usr/bin/env bash
# A CPU profile of syncgate's pass-through path under load (issue 13): a static 1 KB JSON
# upstream (nginx), syncgate as shipped in front of it, wrk on 32 keep-alive connections, and
# `perf record` (the cpu-clock event, which works without hardware counters) on syncgate for 8 s.
# Prints where the time went, by binary and by symbol; the perf data stays in $OUT.
#
#   cargo build --release && benches/passthrough/profile.sh [target/release/syncgate]
set -euo pipefail
SYNCGATE="${1:-target/release/syncgate}"
OUT="${OUT:-$(mktemp -d)}"
for tool in nginx wrk perf; do
  command -v "$tool" >/dev/null || { echo "profile.sh needs $tool (apt-get install nginx wrk linux-perf)"; exit 1; }
done
UP=39990 SG=39991
user=""; [ "$(id -u)" = 0 ] && user="user root;"
body='{"value":['
for i in $(seq 0 13); do body+="{\"id\":\"$(printf %08d "$i")-0000-4000-8000-000000000000\",\"displayName\":\"User $i\"},"; done
body="${body%,}]}"
cat > "$OUT/upstream.conf" <<CONF
$user
worker_processes 1;
pid upstream.pid;
error_log upstream.err warn;
events { worker_connections 4096; }
http { access_log off;
  server { listen 127.0.0.1:$UP; keepalive_requests 1000000;
    location / { default_type application/json; return 200 '$body'; } } }
CONF
nginx -p "$OUT" -c "$OUT/upstream.conf" -g 'daemon off;' &
NGINX=$!
HOME="$OUT" RUST_LOG=info "$SYNCGATE" serve --listen 127.0.0.1:$SG --admin-listen 127.0.0.1:0 \
  --upstream http://127.0.0.1:$UP --db "$OUT/syncgate.db" >"$OUT/syncgate.out" 2>"$OUT/syncgate.log" &
SYNCGATE_PID=$!
trap 'kill $SYNCGATE_PID 2>/dev/null; kill -TERM $NGINX 2>/dev/null' EXIT
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$SG) 2>/dev/null && break; sleep 0.1; done
wrk -t2 -c32 -d12s http://127.0.0.1:$SG/v1.0/users >"$OUT/wrk.txt" &
WRK=$!
sleep 2
perf record -e cpu-clock -F 499 -g -p $SYNCGATE_PID -o "$OUT/perf.data" -- sleep 8 2>"$OUT/perf.err"
wait $WRK
grep 'Requests/sec' "$OUT/wrk.txt"
echo "-- by binary"
perf report -i "$OUT/perf.data" --stdio --no-children --sort dso -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -6
echo "-- by symbol"
perf report -i "$OUT/perf.data" --stdio --no-children --sort symbol -g none 2>/dev/null \
  | grep -v '^#' | grep -v '^$' | sed 's/  */ /g' | cut -c1-110 | head -30
echo "perf data: $OUT/perf.data"
