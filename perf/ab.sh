#!/usr/bin/env bash
# Interleaved A/B runs of NativeRelay builds or settings: smtp-source -> relay -> smtp-sink on
# loopback, without Postfix. Each run starts a fresh smtp-sink and a relay on a fresh temporary
# spool, sends N messages and reports, on one line:
#   accept (msg/s until smtp-source is done), e2e (msg/s until smtp-sink has every message),
#   relay_us, sink_us and source_us (each process's utime+stime per message: /proc for the relay and
#   the sink, the shell's children times for smtp-source), all_us (the three together: what the
#   machine spends per message, so 2 cores / all_us bounds the e2e rate when the CPU is the limit), idle (the share
#   of both cores left idle during the run, from /proc/stat), alloc_B (managed bytes the relay
#   allocated per message, from its metrics endpoint; "-" for a binary without that metric) and
#   gc (its garbage collections during the run, generations 0/1/2).
# The variants run alternately, REPS times each, so a change in the host's load hits all of
# them alike; the machine's run-to-run noise is about +-10 %, so compare medians over several.
#
#   bash perf/ab.sh "LABEL|BINARY|RELAY ARGS|ENV=VALUE ..." ["LABEL|..." ...]
#   REPS=5 N=20000 S=10 SIZE=1024 MODE=reuse bash perf/ab.sh "base|/tmp/nr-a||" "new|/tmp/nr-b||"
#   bash perf/ab.sh "c32|out/nativerelay||" "c10|out/nativerelay|--config /tmp/c10.json|"
#   bash perf/ab.sh "gc|out/nativerelay||DOTNET_GCgen0size=0x4000000"
#   bash perf/ab.sh "ceiling|ceiling||" "nr|out/nativerelay||"   # BINARY "ceiling": no relay, smtp-source
#                                     straight into smtp-sink (the ceiling), measured the same way
#   bash perf/floor/build.sh && bash perf/ab.sh "floor|perf/floor/floor-relay||"   # the floor probe
#   THREADS=1 adds the relay's CPU and context switches per message by thread name.
#
# KEEP=1 keeps each run's directory (relay.log, sink.out). MODE=conn opens a connection per message. Every wait is bounded; only the processes this
# script starts are stopped, by pid.
#
# SINK_TLS=BINARY uses "BINARY sink" with STARTTLS instead of smtp-sink (which has no TLS): a
# private CA and a certificate for sink.ab.test are made with openssl, perf/tiny-dns.py answers
# sink.ab.test with 127.0.0.1, the relay is given --relay-to sink.ab.test:SINK_PORT and --dns, and
# $CA_FILE (the CA) is there for the variants' --ca-file; messages are counted by the relay's
# nativerelay_delivered_total. The TLS cost of verify against opportunistic:
#   SINK_TLS=out/nativerelay bash perf/ab.sh "opportunistic|out/nativerelay|--tls-policy opportunistic|" \
#     "verify|out/nativerelay|--tls-policy verify --ca-file \$CA_FILE|"
set -uo pipefail

REPS=${REPS:-5}; N=${N:-20000}; S=${S:-10}; SIZE=${SIZE:-1024}; MODE=${MODE:-reuse}
SINK_PORT=${SINK_PORT:-12126}; RELAY_PORT=${RELAY_PORT:-12125}; METRICS_PORT=${METRICS_PORT:-12127}
HZ=$(getconf CLK_TCK)
SINK_TLS=${SINK_TLS:-}; DNS_PORT=${DNS_PORT:-12153}
RELAY_TO="127.0.0.1:$SINK_PORT"; TLS_DIR=""; DNS_PID=""
if [ -n "$SINK_TLS" ]; then
  TLS_DIR=$(mktemp -d /tmp/nativerelay-ab-tls.XXXXXX)
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=ab test CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
    -keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=sink.ab.test" \
    -keyout "$TLS_DIR/sink.key" -out "$TLS_DIR/sink.csr" 2>/dev/null
  printf 'subjectAltName=DNS:sink.ab.test\nextendedKeyUsage=serverAuth\n' > "$TLS_DIR/ext"
  openssl x509 -req -in "$TLS_DIR/sink.csr" -CA "$TLS_DIR/ca.pem" -CAkey "$TLS_DIR/ca.key" -CAcreateserial -days 2 \
    -extfile "$TLS_DIR/ext" -out "$TLS_DIR/sink.pem" 2>/dev/null
  export CA_FILE="$TLS_DIR/ca.pem"
  python3 "$(dirname "$0")/tiny-dns.py" "127.0.0.1:$DNS_PORT" &
  DNS_PID=$!
  RELAY_TO="sink.ab.test:$SINK_PORT"
  trap 'kill "$DNS_PID" 2>/dev/null; rm -rf "$TLS_DIR"' EXIT
fi
command -v smtp-source >/dev/null || { echo "ab.sh: smtp-source not found (apt-get install postfix)" >&2; exit 2; }
[ $# -gt 0 ] || { sed -n 2,20p "$0" >&2; exit 2; }

# utime+stime of a process, in clock ticks (fields 14 and 15, counted after the ")" that ends
# the command name, which may contain spaces).
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
# user+system CPU of the shell's finished children, in µs (bash's `times`, second line), which
# grows by smtp-source's time when it exits, since the script waits for it in the foreground.
children_cpu_us() { # FILE: where `times` was written (not a pipe: that would run it in a subshell)
  sed -n 2p "$1" | awk '{ t = 0; for (f = 1; f <= 2; f++) { split($f, p, "m"); sub("s", "", p[2]); t += p[1] * 60 + p[2] } printf "%.0f\n", t * 1e6 }'
}
idle_ticks() { awk '/^cpu /{print $5}' /proc/stat; }

# Per thread name: CPU ticks, voluntary and involuntary switches (summed over same-named threads).
thread_table() {
  for t in /proc/"$1"/task/*; do
    name=$(tr ' ' '_' < "$t/comm" | sed 's/[0-9]*$//')
    ticks=$(sed 's/.*) //' "$t/stat" | awk '{print $12 + $13}')
    awk -v n="$name" -v c="$ticks" '/^voluntary_ctxt/{v=$2} /^nonvoluntary_ctxt/{nv=$2} END{print n, c, v, nv}' "$t/status"
  done | awk '{c[$1]+=$2; v[$1]+=$3; nv[$1]+=$4} END{for (k in c) print k, c[k], v[k], nv[k]}' | sort
}

# The relay's metrics endpoint, one scrape (nothing if it does not answer).
scrape() {
  { exec 3<>"/dev/tcp/127.0.0.1/$METRICS_PORT"; } 2>/dev/null || return 0
  printf 'GET /metrics HTTP/1.1\r\nHost: ab\r\nConnection: close\r\n\r\n' >&3
  timeout 5 cat <&3 | tr -d '\r'
  exec 3<&-
}
# From one scrape: "allocated_bytes gen0/gen1/gen2", or nothing for a binary without those metrics.
gc_figures() {
  scrape | awk '$1 == "nativerelay_gc_allocated_bytes_total" { a = $2 }
    /^nativerelay_gc_collections_total/ { split($1, p, "\""); c[p[2]] = $2 }
    END { if (a != "" && length(c) == 3) printf "%.0f %d/%d/%d\n", a, c[0], c[1], c[2] }'
}

sink_count() { tr '\r' '\n' < "$1" | tail -3 | sed -n 's/.*mesg=\([0-9]*\).*/\1/p' | tail -1; }

one_run() { # LABEL BINARY RELAY_ARGS ENV
  local label=$1 bin=$2 args=$3 envs=$4 work sink relay
  work=$(mktemp -d /tmp/nativerelay-ab.XXXXXX)
  if [ -n "$SINK_TLS" ]; then
    "$SINK_TLS" sink --listen "127.0.0.1:$SINK_PORT" --quiet --tls-cert "$TLS_DIR/sink.pem" --tls-key "$TLS_DIR/sink.key" \
      > "$work/sink.out" 2>&1 &
  else
    smtp-sink -u nobody -c "127.0.0.1:$SINK_PORT" 1000 > "$work/sink.out" 2>&1 &
  fi
  sink=$!
  # The relay must not start delivering before the sink listens (a refused connection defers the
  # mail for a minute and spoils the run).
  for _ in $(seq 200); do (echo > "/dev/tcp/127.0.0.1/$SINK_PORT") 2>/dev/null && break; sleep 0.05; done
  local target=$RELAY_PORT relay=""
  if [ "$bin" = ceiling ]; then
    # No relay: smtp-source straight into smtp-sink, the ceiling, measured the same way.
    target=$SINK_PORT
  else
    # shellcheck disable=SC2086  # args and envs are word lists on purpose
    env $envs "$bin" serve --listen "127.0.0.1:$RELAY_PORT" --spool "$work/spool" \
      --relay-to "$RELAY_TO" --hostname ab.nativerelay.test --metrics "127.0.0.1:$METRICS_PORT" \
      ${SINK_TLS:+--dns 127.0.0.1:$DNS_PORT} $(eval echo "$args") > "$work/relay.log" 2>&1 &
    relay=$!
    for _ in $(seq 200); do (echo > "/dev/tcp/127.0.0.1/$RELAY_PORT") 2>/dev/null && break; sleep 0.05; done
    if ! kill -0 "$relay" 2>/dev/null; then
      echo "$label: the relay did not start: $(tail -3 "$work/relay.log")"
      kill "$sink"; wait "$sink" 2>/dev/null; rm -rf "$work"; return
    fi
  fi
  [ -n "${THREADS:-}" ] && [ -n "$relay" ] && thread_table "$relay" > "$work/threads.0"
  local r0 s0 i0 t0 t1 t2 r1 s1 i1 got flags=""
  local gc0 gc1
  gc0=$(gc_figures)
  r0=0; [ -n "$relay" ] && r0=$(cpu_ticks "$relay"); s0=$(cpu_ticks "$sink"); i0=$(idle_ticks)
  [ "$MODE" = reuse ] && flags=-d
  local c0 c1
  times > "$work/times.0"; c0=$(children_cpu_us "$work/times.0")
  t0=$(date +%s.%N)
  timeout 600 smtp-source $flags -s "$S" -m "$N" -l "$SIZE" -f a@ab.test -t b@dest.test "127.0.0.1:$target"
  t1=$(date +%s.%N)
  times > "$work/times.1"; c1=$(children_cpu_us "$work/times.1")
  for _ in $(seq 6000); do
    # (a scrape costs the relay a little CPU: every 0.2 s, alike for every variant)
    if [ -n "$SINK_TLS" ]; then got=$(scrape | awk '$1 == "nativerelay_delivered_total" {print $2}'); sleep 0.19
    else got=$(sink_count "$work/sink.out"); fi
    [ "${got:-0}" -ge "$N" ] && break; sleep 0.01
  done
  t2=$(date +%s.%N)
  r1=0; [ -n "$relay" ] && r1=$(cpu_ticks "$relay"); s1=$(cpu_ticks "$sink"); i1=$(idle_ticks)
  gc1=$(gc_figures)
  awk -v l="$label" -v n="$N" -v a="$t0" -v b="$t1" -v c="$t2" -v r=$((r1 - r0)) -v s=$((s1 - s0)) \
 -v src=$((c1 - c0)) \
      -v i=$((i1 - i0)) -v hz="$HZ" -v got="${got:-0}" -v gc0="$gc0" -v gc1="$gc1" 'BEGIN {
    alloc = gc = "-"
    if (gc0 != "" && gc1 != "") {
      split(gc0, p, " "); split(gc1, q, " "); split(p[2], x, "/"); split(q[2], y, "/")
      alloc = sprintf("%.0f", (q[1] - p[1]) / n)
      gc = (y[1] - x[1]) "/" (y[2] - x[2]) "/" (y[3] - x[3])
    }
    ru = r / hz * 1e6 / n; su = s / hz * 1e6 / n; cu = src / n
    printf "%s accept %.0f e2e %.0f relay_us %.0f sink_us %.0f source_us %.0f all_us %.0f idle %.0f%% alloc_B %s gc %s got %d\n",
      l, n / (b - a), n / (c - a), ru, su, cu, ru + su + cu, i / hz / (c - a) / 2 * 100, alloc, gc, got }'
  if [ -n "${THREADS:-}" ] && [ -n "$relay" ]; then
    thread_table "$relay" > "$work/threads.1"
    join -a2 -e 0 -o 0,1.2,1.3,1.4,2.2,2.3,2.4 "$work/threads.0" "$work/threads.1" |
      awk -v n="$N" -v hz="$HZ" '{ printf "    %-18s cpu_us %6.1f voluntary %5.2f involuntary %5.2f\n",
        $1, ($5 - $2) / hz * 1e6 / n, ($6 - $3) / n, ($7 - $4) / n }'
  fi
  [ -n "$relay" ] && { kill "$relay"; wait "$relay" 2>/dev/null; }
  kill "$sink"; wait "$sink" 2>/dev/null
  if [ -n "${KEEP:-}" ]; then echo "    kept $work"; else rm -rf "$work"; fi
}

for _ in $(seq "$REPS"); do
  for spec in "$@"; do
    IFS='|' read -r label bin args envs <<< "$spec"
    one_run "$label" "$bin" "$args" "${envs:-}"
  done
done
