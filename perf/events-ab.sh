#!/bin/bash
# What events cost the message path: N 1 KiB messages over S sessions through the relay to a sink,
# with no webhook ("off") and with one webhook that answers 200 ("on"), interleaved REPS times.
# Prints per run: the intake rate and median accept latency (blast), the time until the sink has
# every message, and the relay's CPU seconds (user + system, from /proc) for the whole run.
# Usage: bash perf/events-ab.sh [BIN]   (REPS=3 N=20000 S=10 PORT=27025 in the environment)
set -u
BIN=${1:-$(dirname "$0")/../out/nativerelay}
REPS=${REPS:-3}; N=${N:-20000}; S=${S:-10}; PORT=${PORT:-27025}
SINK_PORT=$((PORT + 1)); HOOK_PORT=$((PORT + 2))
WORK=$(mktemp -d /tmp/events-ab.XXXX)
# The webhook receiver: answers every POST 200 (python3's http.server, one thread per connection).
cat > "$WORK/receiver.py" <<'PY'
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
python3 "$WORK/receiver.py" $HOOK_PORT & RECEIVER=$!
trap 'kill $RECEIVER 2>/dev/null; rm -rf "$WORK"' EXIT
echo secret > "$WORK/secret"
run() {
    local mode=$1 D; D=$(mktemp -d "$WORK/run.XXXX")
    "$BIN" sink --listen 127.0.0.1:$SINK_PORT --quiet --exit-after "$N" > "$D/sink.log" 2>&1 & local SINK=$!
    local ARGS=(--listen 127.0.0.1:$PORT --spool "$D/spool" --relay-to 127.0.0.1:$SINK_PORT --log-level warn)
    [ "$mode" = on ] && ARGS+=(--webhook http://127.0.0.1:$HOOK_PORT/hook --webhook-secret-file "$WORK/secret")
    "$BIN" serve "${ARGS[@]}" > "$D/relay.log" 2>&1 & local RELAY=$!
    for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
    local t0 t1 rate cpu
    t0=$(date +%s.%N)
    rate=$("$BIN" blast --to 127.0.0.1:$PORT --messages "$N" --sessions "$S" --size 1024 --quiet --json \
        | python3 -c "import json,sys; d=json.load(sys.stdin); print(d['msgs_per_s'], 'msg/s p50', d['accept_latency_ms']['p50'], 'ms')")
    wait $SINK; t1=$(date +%s.%N)
    cpu=$(awk '{print ($14+$15)/100}' /proc/$RELAY/stat)
    echo "$mode: intake $rate; end to end $(python3 -c "print(round($t1-$t0,2))") s; relay CPU $cpu s"
    kill $RELAY; wait $RELAY 2>/dev/null
    rm -rf "$D"
}
for _ in $(seq "$REPS"); do run off; run on; done
