#!/usr/bin/env bash
# The soak (issue 30): the relay under steady mixed load for a long time, with its next hop
# restarted every ten minutes and its configuration reloaded (SIGHUP) every five, while its
# resident memory, file descriptors, threads and spool size are sampled every ten seconds.
#
#   bash perf/soak.sh [BINARY]                       one hour (DURATION=3600), the issue's run
#   DURATION=600 bash perf/soak.sh out/nativerelay   ten minutes, a smoke run
#
# The load: `nativerelay blast` in one-minute rounds at half the peak rate measured first (the
# same blast, 1 KiB, as fast as it goes), split over four streams that run side by side: plain
# 1 KiB (50 % of the messages), STARTTLS 1 KiB (30 %), STARTTLS 10 KiB (15 %) and plain 100 KiB
# (5 %), four recipients per message. The next hop is `nativerelay sink` refusing 5 % of
# recipients (550 5.1.1: bounced, with a DSN to the sender, which the sink takes too) and
# deferring 5 % (451 4.2.0, drawn again on every attempt: retried until it passes or draws a
# refusal).
#
# At the end: the samples as perf/soak-DATE.csv and a plot (perf/soak-DATE.png, with gnuplot when
# it is installed: apt-get install gnuplot-nox), whether each series stayed flat after warm-up
# (the first ten minutes, or a sixth of a shorter run) within 10 % (max / min <= 1.10; the spool
# size is reported, not judged, since it follows the retry backlog), and the accounting: every
# recipient the relay acknowledged is delivered, failed (with its DSN) or still queued with the
# reason of its last attempt, from the relay's delivery log.
#
# Only the processes this script starts are stopped, by pid; every wait is bounded.
set -uo pipefail

BIN=${1:-out/nativerelay}
[ -x "$BIN" ] || { echo "soak.sh: $BIN is not an executable (make publish first)" >&2; exit 2; }
BIN=$(readlink -f "$BIN")
DURATION=${DURATION:-3600}
RELAY_PORT=${RELAY_PORT:-16125}; SINK_PORT=${SINK_PORT:-16126}; METRICS_PORT=${METRICS_PORT:-16127}
HERE=$(cd "$(dirname "$0")" && pwd)
STAMP=$(date -u +%Y%m%d-%H%M)
CSV=${CSV:-$HERE/soak-$STAMP.csv}
PNG=${PNG:-$HERE/soak-$STAMP.png}
WORK=$(mktemp -d /tmp/nativerelay-soak.XXXXXX)
SPOOL=$WORK/spool
pids=()
relay= sink=

cleanup() {
  for p in "${pids[@]}" $relay $sink; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}" $relay $sink; do wait "$p" 2>/dev/null; done
}
trap cleanup EXIT

log() { echo "[soak $(date -u +%H:%M:%S)] $*"; }

# A certificate for the relay's STARTTLS (the blaster does not verify it).
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=soak.nativerelay.test \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null || { echo "soak.sh: openssl failed" >&2; exit 2; }

start_sink() {
  "$BIN" sink --listen "127.0.0.1:$SINK_PORT" --rcpt-fail-share 0.05 --rcpt-defer-share 0.05 --quiet \
    >> "$WORK/sink.out" 2>&1 &
  sink=$!
}

# The sink draws its refusals per attempt, not per address, and blast sends to the same four
# addresses all along: the relay's automatic suppression of hard-bounced recipients (on by
# default) would soon refuse every message at RCPT. The soak is about bounces, DSNs and retries,
# so it turns the automatic additions off (the list itself stays on and is consulted).
cat > "$WORK/relay.json" <<'JSON'
{ "suppression": { "autoAdd": [] } }
JSON

start_relay() {
  "$BIN" serve --config "$WORK/relay.json" --listen "127.0.0.1:$RELAY_PORT" --spool "$SPOOL" --relay-to "127.0.0.1:$SINK_PORT" \
    --hostname soak.nativerelay.test --metrics "127.0.0.1:$METRICS_PORT" \
    --tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem" > "$WORK/relay.log" 2>&1 &
  relay=$!
  for _ in $(seq 200); do (echo > "/dev/tcp/127.0.0.1/$RELAY_PORT") 2>/dev/null && return 0; sleep 0.05; done
  echo "soak.sh: the relay did not start: $(tail -3 "$WORK/relay.log")" >&2
  exit 1
}

json_field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p"; }

start_sink
for _ in $(seq 200); do (echo > "/dev/tcp/127.0.0.1/$SINK_PORT") 2>/dev/null && break; sleep 0.05; done
start_relay
log "relay pid $relay, sink pid $sink, work $WORK"

# 1. The peak: 1 KiB as fast as the relay takes it.
peak=$("$BIN" blast --to "127.0.0.1:$RELAY_PORT" --messages 20000 --sessions 10 --recipients 4 --json --quiet | tee -a "$WORK/blast.jsonl" | json_field msgs_per_s)
peak=${peak%.*}
[ -n "$peak" ] && [ "$peak" -gt 0 ] || { echo "soak.sh: could not measure the peak rate" >&2; exit 1; }
rate=$((peak / 2))
log "peak $peak msg/s; soaking at $rate msg/s for $DURATION s"

# 2. The run: one-minute rounds of the four streams, the sampler, the restarts and reloads.
echo "elapsed_s,rss_kib,fds,threads,spool_bytes,queued,pool_workers,delivery_log_bytes" > "$CSV"
sample() {
  local t=$1 rss fds threads spool queued workers dlog
  rss=$(awk '/^VmRSS/{print $2}' "/proc/$relay/status" 2>/dev/null)
  # The relay's own threads (listener, delivery loops, spool, timers) apart from .NET's thread
  # pool workers, which the runtime adds and retires with the load: only the former must be flat.
  workers=$(cat /proc/$relay/task/*/comm 2>/dev/null | grep -c "TP Worker")
  threads=$(( $(awk '/^Threads/{print $2}' "/proc/$relay/status" 2>/dev/null || echo 0) - workers ))
  fds=$(ls "/proc/$relay/fd" 2>/dev/null | wc -l)
  # The spool is the queue's log and its commits; the delivery log beside it grows for the whole
  # run (27 GB an hour at 5,700 msg/s; rotating it is the operator's) and is sampled apart, or it
  # would hide whether compaction keeps the log bounded.
  dlog=$(stat -c %s "$SPOOL/delivery.log" 2>/dev/null)
  spool=$(du -sb --exclude=delivery.log "$SPOOL" 2>/dev/null | cut -f1)
  queued=$("$BIN" queue stats --json --spool "$SPOOL" 2>/dev/null | sed -n 's/.*"live[A-Za-z]*":\([0-9]*\).*/\1/p' | head -1)
  echo "$t,${rss:-0},${fds:-0},${threads:-0},${spool:-0},${queued:-0},${workers:-0},${dlog:-0}" >> "$CSV"
}

stream() { # RATE SIZE TLS(0/1) SECONDS
  local r=$1 size=$2 tls=$3 secs=$4 n
  n=$((r * secs)); [ "$n" -ge 1 ] || return 0
  local flags=(--to "127.0.0.1:$RELAY_PORT" --messages "$n" --rate "$r" --size "$size" --sessions 4 --recipients 4
    --timeout $((secs + 60)) --json --quiet)
  [ "$tls" = 1 ] && flags+=(--tls)
  "$BIN" blast "${flags[@]}" >> "$WORK/blast.jsonl" 2>> "$WORK/blast.err"
}

start=$(date +%s)
next_sample=0; next_hup=300; next_restart=600
while :; do
  now=$(( $(date +%s) - start ))
  [ "$now" -ge "$DURATION" ] && break
  round=$(( DURATION - now < 60 ? DURATION - now : 60 ))
  stream $((rate * 50 / 100)) 1024 0 "$round" & pids+=($!)
  stream $((rate * 30 / 100)) 1024 1 "$round" & pids+=($!)
  stream $((rate * 15 / 100)) 10240 1 "$round" & pids+=($!)
  stream $(((rate * 5 + 99) / 100)) 102400 0 "$round" & pids+=($!)
  round_end=$(( $(date +%s) + round ))
  while [ "$(date +%s)" -lt "$round_end" ]; do
    t=$(( $(date +%s) - start ))
    if [ "$t" -ge "$next_sample" ]; then sample "$t"; next_sample=$((next_sample + 10)); fi
    if [ "$t" -ge "$next_hup" ]; then kill -HUP "$relay"; log "SIGHUP"; next_hup=$((next_hup + 300)); fi
    if [ "$t" -ge "$next_restart" ]; then
      kill "$sink"; wait "$sink" 2>/dev/null; start_sink; log "next hop restarted (pid $sink)"
      next_restart=$((next_restart + 600))
    fi
    kill -0 "$relay" 2>/dev/null || { log "the relay died: $(tail -5 "$WORK/relay.log")"; exit 1; }
    sleep 1
  done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  pids=()
done
sample "$(( $(date +%s) - start ))"

# 3. Drain what can drain: the deferred recipients retry (the defaults' first retries come within
#    minutes); bounded at ten minutes.
log "load over; draining (at most 10 minutes)"
for _ in $(seq 120); do
  q=$("$BIN" queue stats --json --spool "$SPOOL" 2>/dev/null | sed -n 's/.*"live[A-Za-z]*":\([0-9]*\).*/\1/p' | head -1)
  [ "${q:-1}" = 0 ] && break
  sleep 5
done
sleep 1  # the delivery log is flushed every 100 ms

# 4. Accounting. What the relay acknowledged is its own "queued" lines (one per 250 it sent);
#    what blast counted accepted is printed beside (a 250 lost with a reset counts as failed
#    there). Every acknowledged recipient must reach a final state in the delivery log or be
#    still queued. Only recipients not yet final are kept in memory (a recipient's final event
#    comes once), so an hour's 80 million recipients take megabytes, not gigabytes.
blast_msgs=$(awk -F'"messages_accepted":' '{split($2, a, ","); s += a[1]} END {print s + 0}' "$WORK/blast.jsonl")
acked_msgs=$(grep -c " queued from=blast@" "$WORK/relay.log")
echo "accounting: the relay acknowledged $acked_msgs messages from the load (blast counted $blast_msgs accepted)"
awk -v acc="$((acked_msgs * 4))" '
  /"rcpt":"[0-9]+sink@example.com"/ {
    match($0, /"event":"[a-z]+"/); ev = substr($0, RSTART + 9, RLENGTH - 10)
    if (ev != "delivered" && ev != "failed" && ev != "expired" && ev != "deferred" && ev != "deleted") next
    match($0, /"id":"[^"]+"/); id = substr($0, RSTART, RLENGTH)
    match($0, /"rcpt":"[^"]+"/); k = id substr($0, RSTART, RLENGTH)
    if (ev == "deferred") { match($0, /"reply":"[^"]*"/); pending[k] = substr($0, RSTART + 9, RLENGTH - 10); next }
    delete pending[k]; n[ev]++
  }
  /"event":"bounce"/ { dsn++ }
  END {
    for (k in pending) queued++
    total = n["delivered"] + n["failed"] + n["expired"] + n["deleted"] + queued
    printf "accounting: acknowledged recipients %d; delivered %d, failed %d (DSNs queued %d), expired %d, deleted %d, still queued %d\n",
      acc, n["delivered"], n["failed"], dsn, n["expired"], n["deleted"], queued
    for (k in pending) { printf "  still queued, last reply: %s\n", pending[k]; if (++shown == 3) break }
    if (total == acc) print "accounting: every acknowledged recipient is accounted for"
    else printf "accounting: MISMATCH: %d acknowledged, %d accounted for\n", acc, total
  }' "$SPOOL/delivery.log"

# 5. Flat after warm-up? (perf/soak-flat.awk says how it judges, and which series)
warm=$(( DURATION >= 3600 ? 600 : DURATION / 6 ))
awk -v warm="$warm" -f "$HERE/soak-flat.awk" "$CSV"

if command -v gnuplot >/dev/null; then
  gnuplot <<EOF
set terminal png size 1600,900
set output "$PNG"
set datafile separator ","
set multiplot layout 2,4 title "NativeRelay soak: $DURATION s at $rate msg/s (half of $peak), sink restarted every 10 min, SIGHUP every 5 min"
set xlabel "elapsed (s)"
set key off
set title "resident memory (KiB)"; plot "$CSV" every ::1 using 1:2 with lines
set title "open file descriptors"; plot "$CSV" every ::1 using 1:3 with lines
set title "the relay's own threads"; plot "$CSV" every ::1 using 1:4 with lines
set title "thread pool workers"; plot "$CSV" every ::1 using 1:7 with lines
set title "spool: queue log and commits (bytes)"; plot "$CSV" every ::1 using 1:5 with lines
set title "delivery log (bytes)"; plot "$CSV" every ::1 using 1:8 with lines
set title "queued messages"; plot "$CSV" every ::1 using 1:6 with lines
unset multiplot
EOF
  log "plot: $PNG"
else
  log "no gnuplot (apt-get install gnuplot-nox): samples in $CSV only"
fi
log "samples: $CSV; relay log and delivery log in $WORK"
