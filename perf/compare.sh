#!/usr/bin/env bash
# NativeRelay against Postfix, side by side on loopback, in one run (issue 6's figures).
#
# The load is Postfix's own smtp-source and the next hop its smtp-sink, through the shared script
# ../shared/perf/mta-bench.sh (called, not copied): for each load it measures the ceiling
# (smtp-source straight into smtp-sink), Postfix as the relay (a private instance), and
# NativeRelay as the relay (the published binary, a fresh temporary spool, --relay-to the
# shared script's sink port). Then, for NativeRelay alone: idle RSS, peak RSS under load,
# start-up time to listening, and accept latency p99 at half the peak rate (nativerelay blast
# --rate). Also the CPU each MTA spends per message (all of Postfix's processes, NativeRelay's
# one), which the host's load moves less than the rates. Prints every figure and the ratios;
# keeps the raw output under perf/runs/.
#
#   bash perf/compare.sh            (make perf: publishes first)
#   QUICK=1 bash perf/compare.sh    smaller loads, for a smoke test
#   N_1K=50000 N_100K=10000 bash perf/compare.sh
#
# Every wait is bounded; the only processes stopped are the ones this script started (by pid),
# and the Postfix instance and smtp-sink that mta-bench.sh manages (through mta-bench.sh stop).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${NATIVERELAY_BIN:-out/nativerelay}
MTA_BENCH=${MTA_BENCH:-../shared/perf/mta-bench.sh}
export SINK_PORT=${SINK_PORT:-12026}           # the next hop mta-bench.sh runs smtp-sink on
RELAY_PORT=${RELAY_PORT:-12027}                # NativeRelay under test
if [ -n "${QUICK:-}" ]; then N_1K=${N_1K:-3000}; N_100K=${N_100K:-300}; fi
N_1K=${N_1K:-20000}
# 100 KiB runs are the shortest per message: 2,000 took NativeRelay 1.3-2 s, so the 0.2 s at which
# mta-bench.sh polls the sink's count was up to a tenth of the end to end. 6,000 make it a thirtieth.
N_100K=${N_100K:-6000}

[ -x "$BIN" ] || { echo "compare.sh: $BIN not found; run make publish (or set NATIVERELAY_BIN)" >&2; exit 2; }
[ -f "$MTA_BENCH" ] || { echo "compare.sh: $MTA_BENCH not found (set MTA_BENCH)" >&2; exit 2; }
for tool in ss awk bc; do command -v $tool >/dev/null || { echo "compare.sh: needs $tool" >&2; exit 2; }; done

RUN_DIR=perf/runs/$(date +%Y%m%d-%H%M%S)
mkdir -p "$RUN_DIR"
RAW=$RUN_DIR/raw.txt
WORK=$(mktemp -d /tmp/nativerelay-compare.XXXXXX)
RELAY_PID=""
SINK_PID=""

stop_pid() {  # stop_pid PID: TERM, up to 10 s, then KILL; only this pid
  local pid=$1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  stop_pid "$RELAY_PID"; RELAY_PID=""
  stop_pid "$SINK_PID"; SINK_PID=""
  bash "$MTA_BENCH" stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

note() { echo "$*" | tee -a "$RAW"; }
value() { sed -n "s/^$1: \([0-9.]*\).*/\1/p" "$2" | tail -1; }              # value KEY FILE
json_number() { sed -n "s/.*\"$1\":{[^}]*\"$2\":\([0-9.]*\).*/\1/p" "$3"; }  # json_number OBJECT KEY FILE
kib() { awk '/^'"$1"':/ { print $2 }' "/proc/$2/status" 2>/dev/null || echo 0; }  # kib VmRSS PID
port_open() { { : >"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null; }

# CPU clock ticks (utime+stime) a process has used, with those of its children: the reaped ones
# (cutime+cstime) and the live ones. Postfix's master forks every daemon and reaps it, so the sum
# over the master grows by exactly what the instance spends, whichever processes come and go.
HZ=$(getconf CLK_TCK)
own_ticks() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk -v c="${2:-0}" '{ print $12 + $13 + (c ? $14 + $15 : 0) }'; }
tree_ticks() {
  local total child ticks
  total=$(own_ticks "$1" 1 || true); total=${total:-0}
  for child in $(pgrep -P "$1" || true); do
    ticks=$(own_ticks "$child" || true); total=$(( total + ${ticks:-0} ))
  done
  echo "$total"
}
PF_MASTER_PID_FILE=${PF_DIR:-/tmp/mta-bench-postfix}/spool/pid/master.pid
# mta_ticks KIND: what the MTA under test has spent so far (0 for the ceiling, or before Postfix starts).
mta_ticks() {
  local pid ticks
  case $1 in
    relay)   ticks=$(own_ticks "$RELAY_PID" || true); echo "${ticks:-0}" ;;
    postfix) pid=$(tr -dc '0-9' < "$PF_MASTER_PID_FILE" 2>/dev/null || true)
             if [ -n "$pid" ] && [ -d "/proc/$pid" ]; then tree_ticks "$pid"; else echo 0; fi ;;
    *)       echo 0 ;;
  esac
}

# mta KEY OUT ARGS...: runs mta-bench.sh ARGS into OUT until a "KEY:" line shows (at most 3 tries:
# its sink stop can race with the sink's own exit and end the script before it prints). For
# "relay", each try gets a fresh NativeRelay, so a failed try's messages cannot leak into the next;
# NR_HWM[$name] keeps that relay's peak RSS. CPU_TICKS[$name.KIND] is what the MTA spent in the try.
mta() {
  local key=$1 out=$2 try ticks0 ticks1
  shift 2
  for try in 1 2 3; do
    [ "$1" = relay ] && start_relay "$name-$try"
    ticks0=$(mta_ticks "$1")
    bash "$MTA_BENCH" "$@" > "$out" 2>&1 || true
    ticks1=$(mta_ticks "$1")
    CPU_TICKS[$name.$1]=$(( ${ticks1:-0} - ${ticks0:-0} ))
    if [ "$1" = relay ]; then
      NR_HWM[$name]=$(kib VmHWM "$RELAY_PID")
      stop_relay
    fi
    grep -q "^$key: " "$out" && return 0
    note "(mta-bench.sh $1 printed no $key, try $try: $(tail -1 "$out"))"
  done
}

# start_relay NAME: a NativeRelay with a fresh spool on RELAY_PORT, relaying to SINK_PORT.
start_relay() {
  local spool=$WORK/spool-$1
  rm -rf "$spool"
  "$BIN" serve --listen "127.0.0.1:$RELAY_PORT" --spool "$spool" --relay-to "127.0.0.1:$SINK_PORT" \
    --hostname nativerelay.bench.test > "$RUN_DIR/relay-$1.log" 2>&1 &
  RELAY_PID=$!
  for _ in $(seq 200); do port_open "$RELAY_PORT" && return 0; kill -0 "$RELAY_PID" 2>/dev/null || break; sleep 0.05; done
  echo "compare.sh: nativerelay did not start listening; see $RUN_DIR/relay-$1.log" >&2
  exit 1
}

stop_relay() {
  stop_pid "$RELAY_PID"
  RELAY_PID=""
  rm -rf "$WORK"/spool-*
  # The relay logs a line per message and delivery; keep the start and the end of each log.
  local f
  for f in "$RUN_DIR"/relay-*.log; do
    [ -f "$f" ] && [ "$(wc -l < "$f")" -gt 400 ] || continue
    { head -n 100 "$f"; echo "[... $(( $(wc -l < "$f") - 300 )) lines cut by compare.sh ...]"; tail -n 200 "$f"; } > "$f.cut" && mv "$f.cut" "$f"
  done
}

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "nativerelay: $("$BIN" --version) ($(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo '+changes'))"
  echo "postfix: $(postconf -d -h mail_version 2>/dev/null || echo 'not installed yet')"
  echo "loads: 1 KiB x $N_1K, 100 KiB x $N_100K"
} | tee "$RAW"

# name  messages  sessions  size  smtp-source flags  (-d: reuse connections)
LOADS=(
  "1k-s10-reuse   $N_1K   10 1024   -d"
  "1k-s10-conn    $N_1K   10 1024"
  "1k-s50-reuse   $N_1K   50 1024   -d"
  "1k-s50-conn    $N_1K   50 1024"
  "100k-s10-reuse $N_100K 10 102400 -d"
)

declare -A CEIL PF_ACC PF_E2E NR_ACC NR_E2E NR_HWM CPU_TICKS PF_CPU NR_CPU
cpu_us() { awk -v t="${1:-0}" -v hz="$HZ" -v n="$2" 'BEGIN { if (t > 0) printf "%.0f", t / hz * 1e6 / n; else print "n/a" }'; }
PEAK_HWM=0
for load in "${LOADS[@]}"; do
  read -r name n s size flags <<< "$load"
  note ""
  note "== $name: $n messages, $s sessions, $size bytes, smtp-source ${flags:-(new connection per message)}"
  out=$RUN_DIR/$name

  mta ceiling_msgs_per_s "$out.ceiling" ceiling "$n" "$s" "$size" $flags
  tee -a "$RAW" < "$out.ceiling"
  CEIL[$name]=$(value ceiling_msgs_per_s "$out.ceiling")

  mta postfix_e2e_msgs_per_s "$out.postfix" postfix "$n" "$s" "$size" $flags
  grep -v '^[[:space:]]*$' "$out.postfix" | tee -a "$RAW"
  PF_ACC[$name]=$(value postfix_accept_msgs_per_s "$out.postfix")
  PF_E2E[$name]=$(value postfix_e2e_msgs_per_s "$out.postfix")
  PF_CPU[$name]=$(cpu_us "${CPU_TICKS[$name.postfix]}" "$n")
  note "postfix_cpu_us_per_msg (all of its processes): ${PF_CPU[$name]}"

  mta relay_e2e_msgs_per_s "$out.nativerelay" relay "$RELAY_PORT" "$n" "$s" "$size" $flags
  sed 's/^relay_/nativerelay_/' "$out.nativerelay" | tee -a "$RAW"
  NR_ACC[$name]=$(value relay_accept_msgs_per_s "$out.nativerelay")
  NR_E2E[$name]=$(value relay_e2e_msgs_per_s "$out.nativerelay")
  NR_CPU[$name]=$(cpu_us "${CPU_TICKS[$name.relay]}" "$n")
  note "nativerelay_cpu_us_per_msg: ${NR_CPU[$name]}"
  note "nativerelay_peak_rss_kib: ${NR_HWM[$name]}"
  [ "${NR_HWM[$name]:-0}" -gt "$PEAK_HWM" ] && PEAK_HWM=${NR_HWM[$name]}
done
bash "$MTA_BENCH" stop >/dev/null 2>&1 || true

# --- NativeRelay alone ---
note ""
note "== nativerelay alone"

# Start-up to listening, empty spool: from exec to the port accepting, five times.
STARTS=()
for i in 1 2 3 4 5; do
  spool=$WORK/spool-start-$i
  t0=$EPOCHREALTIME
  "$BIN" serve --listen "127.0.0.1:$RELAY_PORT" --spool "$spool" --relay-to "127.0.0.1:$SINK_PORT" > "$RUN_DIR/relay-start-$i.log" 2>&1 &
  RELAY_PID=$!
  ok=""
  start_us=${t0/./}
  while (( ${EPOCHREALTIME/./} - start_us < 5000000 )); do   # at most 5 s
    if port_open "$RELAY_PORT"; then ok=1; break; fi
    kill -0 "$RELAY_PID" 2>/dev/null || break
  done
  t1=$EPOCHREALTIME
  [ -n "$ok" ] && STARTS+=("$(echo "($t1 - $t0) * 1000" | bc -l | xargs printf '%.1f')")
  if [ "$i" = 5 ]; then
    sleep 2
    IDLE_KIB=$(kib VmRSS "$RELAY_PID")
  fi
  stop_relay
done
STARTUP_MS=$(printf '%s\n' "${STARTS[@]}" | sort -n | awk '{ a[NR] = $1 } END { if (NR) print a[int((NR + 1) / 2)]; else print "n/a" }')
note "nativerelay_startup_ms (exec to listening, median of ${#STARTS[@]}): $STARTUP_MS  (all: ${STARTS[*]})"
note "nativerelay_idle_rss_kib: $IDLE_KIB"
note "nativerelay_peak_rss_kib (highest VmHWM over the loads above): $PEAK_HWM"

# Accept latency at half the peak accept rate (1 KiB, 10 sessions, reused connections), with
# smtp-sink as next hop; the load is nativerelay blast, which paces messages with --rate.
PEAK_RATE=${NR_ACC[1k-s10-reuse]:-0}
HALF_RATE=$(awk -v r="$PEAK_RATE" 'BEGIN { printf "%d", r / 2 }')
if [ "$HALF_RATE" -gt 0 ]; then
  smtp-sink -u nobody -c "127.0.0.1:$SINK_PORT" 1000 > /dev/null 2>&1 &
  SINK_PID=$!
  for _ in $(seq 100); do port_open "$SINK_PORT" && break; sleep 0.05; done
  start_relay half-rate
  m=$(awk -v r="$HALF_RATE" 'BEGIN { m = r * 10; if (m < 2000) m = 2000; if (m > 100000) m = 100000; printf "%d", m }')
  "$BIN" blast --to "127.0.0.1:$RELAY_PORT" --messages "$m" --sessions 10 --size 1024 --rate "$HALF_RATE" \
    --timeout 300 --json --quiet > "$RUN_DIR/half-rate.json" 2> "$RUN_DIR/half-rate.err" || true
  stop_relay
  stop_pid "$SINK_PID"; SINK_PID=""
  HALF_P99=$(json_number accept_latency_ms p99 "$RUN_DIR/half-rate.json")
  HALF_P50=$(json_number accept_latency_ms p50 "$RUN_DIR/half-rate.json")
  note "nativerelay_accept_latency_at_half_peak: rate $HALF_RATE msg/s x $m messages: p50 ${HALF_P50:-n/a} ms, p99 ${HALF_P99:-n/a} ms"
else
  HALF_P99=""
  note "nativerelay_accept_latency_at_half_peak: no peak rate measured"
fi

# --- summary ---
ratio() { awk -v a="${1:-0}" -v b="${2:-0}" 'BEGIN { if (a > 0 && b > 0) printf "%.1f", a / b; else printf "n/a" }'; }
pct() { awk -v a="${1:-0}" -v b="${2:-0}" 'BEGIN { if (a > 0 && b > 0) printf "%.0f%%", 100 * a / b; else printf "n/a" }'; }
verdict() { awk -v v="${1:-0}" -v t="$2" -v op="$3" 'BEGIN { if (v == "" || v == "n/a") print "n/a"; else if ((op == ">=" && v + 0 >= t) || (op == "<" && v + 0 < t)) print "met"; else print "NOT met" }'; }

{
  echo ""
  echo "== summary (msgs/s; e2e = until smtp-sink has every message; ratios NativeRelay/Postfix e2e and NativeRelay e2e/ceiling;"
  echo "   cpu = µs of CPU per message, all of Postfix's processes and NativeRelay's one, and how many times less NativeRelay spends)"
  printf '%-15s %8s %8s %8s %8s %8s %9s %9s %8s %8s %8s %8s\n' load ceiling pf_acc pf_e2e nr_acc nr_e2e nr/pf nr/ceil rss_MiB pf_cpu nr_cpu pf/nr
  for load in "${LOADS[@]}"; do
    read -r name _ <<< "$load"
    printf '%-15s %8s %8s %8s %8s %8s %8sx %9s %8s %8s %8s %7sx\n' "$name" "${CEIL[$name]:-n/a}" "${PF_ACC[$name]:-n/a}" "${PF_E2E[$name]:-n/a}" \
      "${NR_ACC[$name]:-n/a}" "${NR_E2E[$name]:-n/a}" "$(ratio "${NR_E2E[$name]}" "${PF_E2E[$name]}")" \
      "$(pct "${NR_E2E[$name]}" "${CEIL[$name]}")" "$(( ${NR_HWM[$name]:-0} / 1024 ))" \
      "${PF_CPU[$name]:-n/a}" "${NR_CPU[$name]:-n/a}" "$(ratio "${PF_CPU[$name]}" "${NR_CPU[$name]}")"
  done
  echo ""
  echo "targets (issue 6):"
  for name in 1k-s10-reuse 1k-s10-conn 1k-s50-reuse 1k-s50-conn; do
    r=$(ratio "${NR_E2E[$name]}" "${PF_E2E[$name]}")
    c=$(awk -v a="${NR_E2E[$name]:-0}" -v b="${CEIL[$name]:-0}" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else print "n/a" }')
    echo "  $name: e2e ${r}x Postfix (>= 15: $(verdict "$r" 15 '>=')), $(pct "${NR_E2E[$name]}" "${CEIL[$name]}") of ceiling (>= 50%: $(verdict "$c" 0.5 '>='))"
  done
  r=$(ratio "${NR_E2E[100k-s10-reuse]}" "${PF_E2E[100k-s10-reuse]}")
  echo "  100k-s10-reuse: e2e ${r}x Postfix (>= 10: $(verdict "$r" 10 '>='))"
  echo "  accept p99 at half peak: ${HALF_P99:-n/a} ms (< 5: $(verdict "${HALF_P99:-n/a}" 5 '<'))"
  echo "  idle RSS: $(( ${IDLE_KIB:-0} / 1024 )) MiB (< 30: $(verdict "$(( ${IDLE_KIB:-0} / 1024 ))" 30 '<'))"
  echo "  peak RSS under load: $(( PEAK_HWM / 1024 )) MiB (< 200: $(verdict "$(( PEAK_HWM / 1024 ))" 200 '<'))"
  echo "  start-up to listening: $STARTUP_MS ms (< 50: $(verdict "$STARTUP_MS" 50 '<'))"
  echo ""
  echo "raw output: $RUN_DIR"
} | tee -a "$RAW"
