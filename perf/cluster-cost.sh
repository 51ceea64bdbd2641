#!/usr/bin/env bash
# What sharing limits through Redis costs per message (issue 28): one relay with a shaping file
# whose limits are never reached (every message still takes a token of the site's rate and every
# connection a slot of its connection limit), run alternately without a fleet ("local") and as a
# node of one (`--redis`, "cluster") against a private redis-server, REPS times each. Each run:
# `nativerelay blast` sends N messages over S sessions to the relay, which relays them to
# `nativerelay sink --exit-after N`. Prints per run, on one line:
#   e2e        messages/s from the first message sent to the sink's last
#   relay_us   the relay's utime+stime per message (/proc/PID/stat, fields 14 and 15)
#   rt/msg     Redis round trips per message, by the relay's own count
#              (nativerelay_cluster_redis_calls_total from --metrics, heartbeats included)
#   cmd/msg    commands Redis executed per message during the run (INFO commandstats, summed),
#              which also counts the scripts' inner calls as one EVALSHA each
# then the medians per variant. The issue's target: at most one round trip per 20 messages at
# full speed (cluster.rateBatch, 32 by default: one token batch per 32 messages, the rest of the
# round trips connection leases and heartbeats).
#
#   bash perf/cluster-cost.sh [BIN]        (REPS=3 N=20000 S=10 SIZE=1024 PORT=27125 RATE_BATCH=32)
#
# Bounded: every wait has a time limit (a run that does not finish in 120 s is reported and
# stopped); only the processes this script starts are stopped, by pid; the work directory is
# removed at the end (KEEP=1 keeps it).
set -uo pipefail

BIN=${1:-$(dirname "$0")/../out/nativerelay}
REPS=${REPS:-3}; N=${N:-20000}; S=${S:-10}; SIZE=${SIZE:-1024}; PORT=${PORT:-27125}
RATE_BATCH=${RATE_BATCH:-32}
SINK_PORT=$((PORT + 1)); METRICS_PORT=$((PORT + 2)); REDIS_PORT=$((PORT + 3))
command -v redis-server >/dev/null || { echo "cluster-cost.sh: redis-server not found (apt-get install redis-server)" >&2; exit 2; }
command -v redis-cli >/dev/null || { echo "cluster-cost.sh: redis-cli not found (apt-get install redis-tools)" >&2; exit 2; }
[ -x "$BIN" ] || { echo "cluster-cost.sh: no binary at $BIN (make publish)" >&2; exit 2; }

WORK=$(mktemp -d /tmp/cluster-cost.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  [ "${KEEP:-0}" = 1 ] && echo "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --protected-mode no \
  --loglevel warning > "$WORK/redis.log" 2>&1 &
REDIS=$!; PIDS+=("$REDIS")
for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
redis-cli -p "$REDIS_PORT" ping | grep -q PONG || { echo "cluster-cost.sh: redis-server did not answer" >&2; exit 1; }

# Limits far above what the machine can send: taken on every message and connection, never reached.
cat > "$WORK/shaping.json" <<'JSON'
{ "default": { "maxConnections": 64, "messagesPerSecond": 1000000, "messagesPerConnection": 100000 } }
JSON
cat > "$WORK/cluster.json" <<JSON
{ "cluster": { "rateBatch": $RATE_BATCH } }
JSON

cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
HZ=$(getconf CLK_TCK)
scrape() { # the value of one sample of the relay's metrics endpoint (0 when absent)
  { exec 3<>"/dev/tcp/127.0.0.1/$METRICS_PORT"; } 2>/dev/null || { echo 0; return; }
  printf 'GET /metrics HTTP/1.1\r\nHost: perf\r\nConnection: close\r\n\r\n' >&3
  timeout 5 cat <&3 | tr -d '\r' | awk -v m="$1" '$1 == m { v = $2 } END { print v + 0 }'
  exec 3>&-
}
redis_commands() { redis-cli -p "$REDIS_PORT" info commandstats | tr -d '\r' | awk -F'[=,]' '/^cmdstat_/ { s += $2 } END { print s + 0 }'; }

run() {
  local mode=$1 D; D=$(mktemp -d "$WORK/run.XXXX")
  timeout 150 "$BIN" sink --listen 127.0.0.1:$SINK_PORT --quiet --exit-after "$N" > "$D/sink.log" 2>&1 & local SINK=$!
  PIDS+=("$SINK")
  local ARGS=(serve --listen 127.0.0.1:$PORT --spool "$D/spool" --relay-to 127.0.0.1:$SINK_PORT --log-level warn
              --metrics 127.0.0.1:$METRICS_PORT --shaping "$WORK/shaping.json")
  [ "$mode" = cluster ] && ARGS+=(--config "$WORK/cluster.json" --redis 127.0.0.1:$REDIS_PORT --node perf1)
  "$BIN" "${ARGS[@]}" > "$D/relay.log" 2>&1 & local RELAY=$!
  PIDS+=("$RELAY")
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
  local calls0 cmds0 cpu0 t0 t1 calls1 cmds1 cpu1
  calls0=$(scrape nativerelay_cluster_redis_calls_total); cmds0=$(redis_commands); cpu0=$(cpu_ticks "$RELAY")
  t0=$(date +%s.%N)
  if ! timeout 120 "$BIN" blast --to 127.0.0.1:$PORT --messages "$N" --sessions "$S" --size "$SIZE" --quiet > "$D/blast.log" 2>&1; then
    echo "$mode: blast failed or timed out: $(tail -3 "$D/blast.log" | tr '\n' ' ')"
  fi
  if ! wait "$SINK"; then echo "$mode: the sink did not get $N messages within its time"; fi
  t1=$(date +%s.%N)
  calls1=$(scrape nativerelay_cluster_redis_calls_total); cmds1=$(redis_commands); cpu1=$(cpu_ticks "$RELAY")
  kill "$RELAY" 2>/dev/null; wait "$RELAY" 2>/dev/null
  awk -v m="$mode" -v n="$N" -v t="$(echo "$t1 - $t0" | bc)" -v c=$((cpu1 - cpu0)) -v hz="$HZ" \
      -v rt=$((calls1 - calls0)) -v cmd=$((cmds1 - cmds0)) \
      'BEGIN { printf "%-8s e2e %7.0f msg/s  relay_us %6.1f  rt/msg %.4f  cmd/msg %.4f  (%d round trips, %d commands, %.2f s)\n",
               m, n / t, c * 1e6 / hz / n, rt / n, (m == "local" ? 0 : cmd / n), rt, (m == "local" ? 0 : cmd), t }' | tee -a "$WORK/results"
  [ "${KEEP:-0}" = 1 ] || rm -rf "$D"
}

echo "cluster-cost: N=$N S=$S SIZE=$SIZE REPS=$REPS rateBatch=$RATE_BATCH, $(basename "$BIN") $(stat -c %s "$BIN") bytes, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for _ in $(seq "$REPS"); do run local; run cluster; done
echo "medians:"
for mode in local cluster; do
  grep "^$mode " "$WORK/results" | awk -v m="$mode" '
    { e[NR] = $3; r[NR] = $6; t[NR] = $8 }
    function med(a, n,   i, j, x) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { x = a[i]; a[i] = a[j]; a[j] = x }
                                    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
    END { if (NR) printf "  %-8s e2e %7.0f msg/s  relay_us %6.1f  rt/msg %.4f (%s)\n", m, med(e, NR), med(r, NR), med(t, NR), (med(t, NR) > 0 ? sprintf("one per %.0f messages", 1 / med(t, NR)) : "no round trip") }'
done
