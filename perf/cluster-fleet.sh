#!/usr/bin/env bash
# Three relays sharing one site's limits through Redis (issue 28), on loopback: a redis-server,
# one smtp-sink, three `nativerelay serve --redis ... --node nN --shaping FILE` relays, each given
# M messages by its own smtp-source at once (backlogs on all three). Prints the fleet's rate,
# each relay's rate round trips and Redis "wait" answers, the most connections seen open to the
# sink at once (ss, every 20 ms), and the deliveries per second per node from the relays'
# delivery logs. OUTAGE=START:SECONDS kills Redis (kill -9) START seconds after the messages are
# given and starts it again SECONDS later, on the same port.
#
#   R=20 C=2 M=200 bash perf/cluster-fleet.sh
#   R=20 C=2 M=200 OUTAGE=8:12 bash perf/cluster-fleet.sh
#
# KEEP=1 keeps the work directory (relay logs, delivery logs). Every wait is bounded; only the processes this script starts are stopped, by pid.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
BIN=${NATIVERELAY_BIN:-$here/../out/nativerelay}
R=${R:-20}; C=${C:-2}; M=${M:-200}; OUTAGE=${OUTAGE:-}
command -v redis-server >/dev/null || { echo "cluster-fleet.sh: redis-server not found" >&2; exit 2; }
command -v smtp-source >/dev/null || { echo "cluster-fleet.sh: smtp-source not found (apt-get install postfix)" >&2; exit 2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work=$(mktemp -d /tmp/nativerelay-cluster-fleet.XXXXXX)
redis_port=$(free_port); sink_port=$(free_port)
pids=()
redis=
cleanup() {
  for p in "${pids[@]}" $redis; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}" $redis; do wait "$p" 2>/dev/null; done
  if [ -n "${KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
start_redis() {
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no --loglevel warning \
    >> "$work/redis.log" 2>&1 &
  redis=$!
  for _ in $(seq 100); do [ "$(redis-cli -p "$redis_port" ping 2>/dev/null)" = PONG ] && return; sleep 0.05; done
  echo "redis-server did not answer" >&2; exit 1
}
start_redis
smtp-sink -u nobody -c "127.0.0.1:$sink_port" 1000 > "$work/sink.out" 2>&1 &
pids+=($!)
printf '{ "default": { "messagesPerSecond": %s, "maxConnections": %s } }\n' "$R" "$C" > "$work/shaping.json"
for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$sink_port") 2>/dev/null && break; sleep 0.05; done
ports=(); metrics=()
for n in 1 2 3; do
  ports+=("$(free_port)"); metrics+=("$(free_port)")
  "$BIN" serve --listen "127.0.0.1:${ports[-1]}" --spool "$work/spool$n" --relay-to "127.0.0.1:$sink_port" \
    --hostname "n$n.fleet.test" --metrics "127.0.0.1:${metrics[-1]}" --shaping "$work/shaping.json" \
    --redis "127.0.0.1:$redis_port" --node "n$n" > "$work/relay$n.log" 2>&1 &
  pids+=($!)
done
for p in "${ports[@]}"; do
  for _ in $(seq 200); do (echo > "/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.05; done
done

t0=$(date +%s.%N)
( most=0; for _ in $(seq 6000); do
    [ -f "$work/done" ] && break
    n=$(ss -Htn state established "( dport = :$sink_port )" | wc -l); [ "$n" -gt "$most" ] && most=$n
    [ "$n" -gt "$C" ] && echo "+$(echo "$(date +%s.%N) - $t0" | bc) s: $n open" >> "$work/over"
    echo "$most" > "$work/most"; sleep 0.02
  done ) &
watcher=$!
if [ -n "$OUTAGE" ]; then
  ( sleep "${OUTAGE%:*}"; kill -9 "$redis"; echo "redis killed at +${OUTAGE%:*} s"; sleep "${OUTAGE#*:}"
    redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no --loglevel warning \
      >> "$work/redis.log" 2>&1 &
    echo $! > "$work/redis2.pid"; echo "redis started again at +$(( ${OUTAGE%:*} + ${OUTAGE#*:} )) s" ) &
  outage=$!
fi
sources=()
for p in "${ports[@]}"; do
  timeout 600 smtp-source -d -s 5 -m "$M" -l 512 -f a@fleet.test -t b@dest.test "127.0.0.1:$p" & sources+=($!)
done
wait "${sources[@]}"
total=$((3 * M))
for _ in $(seq 6000); do
  got=$(tr '\r' '\n' < "$work/sink.out" | tail -3 | sed -n 's/.*mesg=\([0-9]*\).*/\1/p' | tail -1)
  [ "${got:-0}" -ge "$total" ] && break; sleep 0.1
done
t1=$(date +%s.%N)
touch "$work/done"; wait "$watcher"
[ -n "$OUTAGE" ] && { wait "$outage"; [ -f "$work/redis2.pid" ] && redis=$(cat "$work/redis2.pid"); }
echo "fleet limit $R/s, $C connections; $total messages: ${got:-0} at the sink in $(echo "$t1 - $t0" | bc) s"
echo "most connections open to the sink at once (sampled every 20 ms): $(cat "$work/most")"
[ -f "$work/over" ] && { echo "samples over $C (from the messages' start):"; awk '$3 > m { m = $3; print }' "$work/over"; }
for n in 1 2 3; do
  echo "n$n: $( { exec 3<>"/dev/tcp/127.0.0.1/${metrics[$((n - 1))]}"; printf 'GET /metrics HTTP/1.1\r\nHost: f\r\nConnection: close\r\n\r\n' >&3; timeout 5 cat <&3; } 2>/dev/null \
    | tr -d '\r' | awk '$1 ~ /^nativerelay_cluster_(rate_round_trips|rate_waits|rate_fallback_tokens|leases_acquired|leases_refused)_total$/ { sub("nativerelay_cluster_", "", $1); printf "%s %s  ", $1, $2 }')"
done
python3 - "$work" <<'EOF'
import collections, json, sys
from datetime import datetime
work = sys.argv[1]
times = []
for n in (1, 2, 3):
    for line in open(f"{work}/spool{n}/delivery.log"):
        r = json.loads(line)
        if r.get("event") == "delivered":
            times.append((datetime.fromisoformat(r["time"].replace("Z", "+00:00")).timestamp(), n))
times.sort()
t0 = times[0][0]
per = collections.Counter((int(t - t0), n) for t, n in times)
print("second  n1  n2  n3  fleet   (from the first delivery)")
for s in range(int(times[-1][0] - t0) + 1):
    row = [per[(s, n)] for n in (1, 2, 3)]
    print(f"{s:6d} {row[0]:3d} {row[1]:3d} {row[2]:3d} {sum(row):6d}")
EOF
