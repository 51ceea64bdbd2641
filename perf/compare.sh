#!/usr/bin/env bash
# NativeRelay against its peers, side by side on loopback, in one run: Postfix, Exim 4, OpenSMTPD
# and Haraka.
#
# The load is Postfix's own smtp-source and the next hop its smtp-sink, through the shared script
# ../shared/perf/mta-bench.sh (called, not copied): for each load it measures the ceiling
# (smtp-source straight into smtp-sink), then each program as the relay: Postfix (a private
# instance that mta-bench.sh runs), Exim, OpenSMTPD and Haraka (private instances on loopback
# ports, a fresh queue for each run, started and stopped here by pid: perf/peers/peers.sh), and
# NativeRelay (the published binary, a fresh temporary spool, --relay-to the sink port). For every
# program in every run: accept and end-to-end rates, the CPU per message of all its processes
# (utime+stime from /proc of its process tree, reaped children included), its peak RSS (the sum
# over its processes, sampled every 0.5 s), how it makes mail durable before its 250, and the CPU
# per message of smtp-source and smtp-sink themselves (the load's own cost, which the relay
# shares the cores with). Then, for NativeRelay alone: idle RSS, peak RSS, start-up time to
# listening, and accept latency p99 at half the peak rate (nativerelay blast --rate). Beside the
# peers, on every load, the floor probe (perf/floor/floor-relay.c, built here with cc): the least
# a relay with NativeRelay's durability does, in C, so the targets can be read against what the
# work itself costs on this machine (FLOOR=0 leaves it out). Prints every
# figure as "name: value" lines and the ratios; keeps the raw output under perf/runs/.
#
#   bash perf/peers/install.sh        once: puts Exim, OpenSMTPD and Haraka in place (this script
#                                     installs nothing; Postfix comes with mta-bench.sh)
#   bash perf/compare.sh              (make perf: publishes first, runs install.sh)
#   QUICK=1 bash perf/compare.sh      smaller loads, for a smoke test
#   PEERS="postfix exim" bash perf/compare.sh     a subset of the peers (default: all four)
#   N_1K=50000 N_100K=10000 bash perf/compare.sh
#   PEER_N_1K=1000 PEER_N_100K=200    the most messages Exim, OpenSMTPD and Haraka get per load
#                                     (the defaults: they are 10-1000 times slower here)
#
# Every wait is bounded; the only processes stopped are the ones this script started (by pid),
# and the Postfix instance and smtp-sink that mta-bench.sh manages (through mta-bench.sh stop).
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/peers/peers.sh

BIN=${NATIVERELAY_BIN:-out/nativerelay}
MTA_BENCH=${MTA_BENCH:-../shared/perf/mta-bench.sh}
export SINK_PORT=${SINK_PORT:-12026}           # the next hop mta-bench.sh runs smtp-sink on
RELAY_PORT=${RELAY_PORT:-12027}                # NativeRelay under test
EXIM_PORT=${EXIM_PORT:-12028}
OPENSMTPD_PORT=${OPENSMTPD_PORT:-12029}
HARAKA_PORT=${HARAKA_PORT:-12030}
FLOOR_PORT=${FLOOR_PORT:-12031}                # the floor probe
FLOOR_BIN=perf/floor/floor-relay
FLOOR_PID=""
ALL_PEERS="postfix exim opensmtpd haraka"
PEERS=${PEERS:-$ALL_PEERS}
for p in $PEERS; do
  case " $ALL_PEERS " in *" $p "*) ;; *) echo "compare.sh: unknown peer '$p' in PEERS (known: $ALL_PEERS)" >&2; exit 2 ;; esac
done
if [ -n "${QUICK:-}" ]; then N_1K=${N_1K:-3000}; N_100K=${N_100K:-300}; fi
N_1K=${N_1K:-20000}
# 100 KiB runs are the shortest: mta-bench.sh polls the sink's count every 0.2 s, so a relay's end
# to end carries 0.1 s more on average (the ceiling's, taken when smtp-source is done, none). With
# 6,000 messages (about 2 s) that was 5 % of the figure the 85 % target is read from; with 20,000
# (about 6.5 s for NativeRelay, 21 s for Postfix) it is 1.5 %.
N_100K=${N_100K:-20000}
if [ -n "${QUICK:-}" ]; then PEER_N_1K=${PEER_N_1K:-300}; PEER_N_100K=${PEER_N_100K:-100}; fi
PEER_N_1K=${PEER_N_1K:-1000}
PEER_N_100K=${PEER_N_100K:-200}

[ -x "$BIN" ] || { echo "compare.sh: $BIN not found; run make publish (or set NATIVERELAY_BIN)" >&2; exit 2; }
[ -f "$MTA_BENCH" ] || { echo "compare.sh: $MTA_BENCH not found (set MTA_BENCH)" >&2; exit 2; }
for tool in ss awk bc ps; do command -v $tool >/dev/null || { echo "compare.sh: needs $tool" >&2; exit 2; }; done

RUN_DIR=perf/runs/$(date +%Y%m%d-%H%M%S)
mkdir -p "$RUN_DIR"
RAW=$RUN_DIR/raw.txt
WORK=$(mktemp -d /tmp/nativerelay-compare.XXXXXX)
RELAY_PID=""
SINK_PID=""
SAMPLER_PID=""

stop_pid() {  # stop_pid PID: TERM, up to 10 s, then KILL; only this pid
  local pid=$1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  stop_pid "$SAMPLER_PID"; SAMPLER_PID=""
  peer_stop
  stop_pid "$RELAY_PID"; RELAY_PID=""
  stop_pid "$FLOOR_PID"; FLOOR_PID=""
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

# CPU clock ticks (utime+stime) a program has used: its root process's own and its reaped
# children's (cutime+cstime), and the same for every live descendant. Postfix's master forks
# every daemon and reaps it, Exim's daemon forks a process per connection and per delivery, so
# the sum over the root grows by exactly what the instance spends, whichever processes come and
# go. NativeRelay and Haraka are one process each (their threads count in it).
HZ=$(getconf CLK_TCK)
own_ticks() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk -v c="${2:-0}" '{ print $12 + $13 + (c ? $14 + $15 : 0) }'; }
tree_ticks() {
  local total child ticks
  total=$(own_ticks "$1" 1 || true); total=${total:-0}
  for child in $(pgrep -P "$1" || true); do
    ticks=$(tree_ticks "$child"); total=$(( total + ${ticks:-0} ))
  done
  echo "$total"
}
# tree_mem_kib PID: "RSS PSS" in KiB summed over PID and its descendants (from smaps_rollup). The
# sum of RSS counts the pages processes share (libraries, a forking daemon's copy-on-write pages)
# once per process: for Exim, a process per connection and per delivery, that is many times what
# it uses. PSS divides each shared page among its sharers, so its sum is the program's footprint.
tree_mem_kib() {
  local pids
  pids=$(ps -e -o pid=,ppid= | awk -v root="$1" '
    { parent[$1] = $2 }
    END { for (p in parent) { q = p; while (q != "" && q != root && q > 1) q = parent[q]; if (q == root) print p } }')
  # shellcheck disable=SC2086
  (cd /proc && cat $(printf '%s/smaps_rollup ' $pids) 2>/dev/null) | awk '/^Rss:/ { r += $2 } /^Pss:/ { p += $2 } END { print r + 0, p + 0 }'
}
PF_MASTER_PID_FILE=${PF_DIR:-/tmp/mta-bench-postfix}/spool/pid/master.pid
# root_pid PROGRAM: the process whose tree is the program under test (empty if none runs).
root_pid() {
  local pid=""
  case $1 in
    nativerelay) pid=$RELAY_PID ;;
    floor)       pid=$FLOOR_PID ;;
    postfix)     pid=$(tr -dc '0-9' < "$PF_MASTER_PID_FILE" 2>/dev/null || true) ;;
    exim|opensmtpd|haraka) pid=$PEER_PID ;;
  esac
  [ -n "$pid" ] && [ -d "/proc/$pid" ] && echo "$pid"
  return 0
}
# mta_ticks PROGRAM: what the program under test has spent so far (0 for the ceiling, or before
# Postfix starts).
mta_ticks() {
  local pid
  pid=$(root_pid "$1")
  if [ -n "$pid" ]; then tree_ticks "$pid"; else echo 0; fi
}
# mem_sampler PROGRAM FILE: every 0.5 s, the program's RSS and PSS summed over its processes; the
# highest of each is kept in FILE ("RSS PSS"). Runs in the background until stopped; resolves the
# root each time (Postfix's master appears only once mta-bench.sh has started it).
mem_sampler() {
  local peak_rss=0 peak_pss=0 pid rss pss
  echo "0 0" > "$2"
  while :; do
    pid=$(root_pid "$1")
    if [ -n "$pid" ]; then
      read -r rss pss <<< "$(tree_mem_kib "$pid")"
      if [ "${rss:-0}" -gt "$peak_rss" ] || [ "${pss:-0}" -gt "$peak_pss" ]; then
        [ "${rss:-0}" -gt "$peak_rss" ] && peak_rss=$rss
        [ "${pss:-0}" -gt "$peak_pss" ] && peak_pss=$pss
        echo "$peak_rss $peak_pss" > "$2"
      fi
    fi
    sleep 0.5
  done
}

# The load's own CPU: mta-bench.sh finds smtp-source and smtp-sink on PATH; these shims run the
# real ones as their child and, once it exits, append bash's times (the children's user and
# system time, to the ms) to $LOAD_CPU_LOG after a line with the tool's name: builtins only, no
# subshell (a subshell would report its own children) and nothing to interrupt. mta-bench.sh stops
# the sink with TERM to every process whose command line matches "smtp-sink -u nobody -c ..."
# (and timeout passes TERM to its process group): the shim renames itself (exec -a) so that it is
# not one of them, and traps TERM (a handler, not an ignore, so the real sink does not inherit
# it), so it outlives the real sink and writes its line. The real tool runs in its own session
# (setsid), out of reach of timeout's TERM to its group: mta-bench.sh's own kill stops the sink,
# instead of finding it already gone and ending the script before it prints (the race that made
# mta() retry).
SHIM_DIR=$WORK/bin
mkdir -p "$SHIM_DIR"
for tool in smtp-source smtp-sink; do
  real=$(command -v "$tool" || true)
  [ -n "$real" ] || { echo "compare.sh: $tool not found (bash $MTA_BENCH ceiling installs Postfix)" >&2; exit 2; }
  # Only the sink needs shielding; smtp-source must stay where timeout's TERM reaches it (that
  # is what bounds its run).
  if [ "$tool" = smtp-sink ]; then run="trap 'true' TERM INT; setsid -w"; else run=""; fi
  cat > "$SHIM_DIR/$tool-times.sh" <<SHIM
$run "$real" "\$@"
rc=\$?
[ -z "\${LOAD_CPU_LOG:-}" ] || { echo "$tool"; times; } >> "\$LOAD_CPU_LOG"
exit \$rc
SHIM
  printf '#!/usr/bin/env bash\nexec -a load-cpu-%s bash "%s" "$@"\n' "$tool" "$SHIM_DIR/$tool-times.sh" > "$SHIM_DIR/$tool"
  chmod 755 "$SHIM_DIR/$tool"
done
# load_cpu TOOL LOG: seconds of CPU TOOL used in the run logged in LOG, empty if none was logged
# (waits up to 3 s for the sink's shim, which writes after mta-bench.sh has returned).
load_cpu() {
  local _
  for _ in $(seq 30); do grep -qx "$1" "$2" 2>/dev/null && break; sleep 0.1; done
  awk -v t="$1" '
    function sec(x, p) { split(x, p, /[ms]/); return p[1] * 60 + p[2] }
    $0 == t { at = NR; next }
    at && NR == at + 2 { s += sec($1) + sec($2); found = 1; at = 0 }
    END { if (found) printf "%.4f", s }' "$2" 2>/dev/null
}
# per_msg_us SECONDS N: µs per message ("n/a" without a figure).
per_msg_us() { awk -v s="${1:-}" -v n="${2:-0}" 'BEGIN { if (s != "" && n > 0) printf "%.0f", s * 1e6 / n; else print "n/a" }'; }

# mta KEY OUT PROGRAM ARGS...: runs mta-bench.sh ARGS into OUT, with PROGRAM under test, until a
# "KEY:" line shows (at most 3 tries: its sink stop can race with the sink's own exit and end the
# script before it prints). For NativeRelay and the peers other than Postfix, each try gets a
# fresh instance with an empty queue, so a failed try's messages cannot leak into the next.
# Sets, for $name.PROGRAM: CPU_TICKS (what the program spent), RSS_PEAK and PSS_PEAK (KiB, summed
# over its processes), SRC_CPU and SINK_CPU (seconds of smtp-source's and smtp-sink's CPU) and
# START_ERR (why it could not start, if so).
mta() {
  local key=$1 out=$2 prog=$3 try ticks0 ticks1 log
  shift 3
  START_ERR[$name.$prog]=""
  for try in 1 2 3; do
    PEER_LOG_TAG=$name-$try
    case $prog in
      nativerelay) start_relay "$name-$try" ;;
      floor) start_floor ;;
      exim|opensmtpd|haraka)
        if ! peer_start "$prog" "$(peer_port "$prog")" 2> "$out.start-err"; then
          START_ERR[$name.$prog]=$(tr '\n' ' ' < "$out.start-err")
          note "($prog did not start, try $try: ${START_ERR[$name.$prog]})"
          continue
        fi ;;
    esac
    log=$out.load-cpu-$try; : > "$log"
    mem_sampler "$prog" "$out.mem" & SAMPLER_PID=$!
    ticks0=$(mta_ticks "$prog")
    PATH=$SHIM_DIR:$PATH LOAD_CPU_LOG=$log bash "$MTA_BENCH" "$@" > "$out" 2>&1 || true
    ticks1=$(mta_ticks "$prog")
    stop_pid "$SAMPLER_PID"; SAMPLER_PID=""
    CPU_TICKS[$name.$prog]=$(( ${ticks1:-0} - ${ticks0:-0} ))
    read -r "RSS_PEAK[$name.$prog]" "PSS_PEAK[$name.$prog]" < "$out.mem" || true
    # One more sample at the end: a run shorter than the sampling period may have none.
    local root rss pss
    root=$(root_pid "$prog")
    if [ -n "$root" ]; then
      read -r rss pss <<< "$(tree_mem_kib "$root")"
      [ "${rss:-0}" -gt "${RSS_PEAK[$name.$prog]:-0}" ] && RSS_PEAK[$name.$prog]=$rss
      [ "${pss:-0}" -gt "${PSS_PEAK[$name.$prog]:-0}" ] && PSS_PEAK[$name.$prog]=$pss
    fi
    SRC_CPU[$name.$prog]=$(load_cpu smtp-source "$log")
    SINK_CPU[$name.$prog]=$(load_cpu smtp-sink "$log")
    case $prog in
      nativerelay)
        local hwm; hwm=$(kib VmHWM "$RELAY_PID")   # exact for one process, where sampling may miss the peak
        [ "${hwm:-0}" -gt "${RSS_PEAK[$name.$prog]:-0}" ] && RSS_PEAK[$name.$prog]=$hwm
        stop_relay ;;
      floor) stop_pid "$FLOOR_PID"; FLOOR_PID=""; rm -rf "$WORK/spool-floor" ;;
      exim|opensmtpd|haraka) peer_stop ;;
    esac
    grep -q "^$key: " "$out" && return 0
    note "(mta-bench.sh for $prog printed no $key, try $try: $(tail -1 "$out"))"
  done
  return 0
}
peer_port() { case $1 in exim) echo "$EXIM_PORT" ;; opensmtpd) echo "$OPENSMTPD_PORT" ;; haraka) echo "$HARAKA_PORT" ;; esac; }

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

# start_floor: the floor probe, with its commit thread, on FLOOR_PORT, relaying to SINK_PORT.
start_floor() {
  rm -rf "$WORK/spool-floor"
  FLOOR_COMMIT_THREAD=1 "$FLOOR_BIN" serve --listen "127.0.0.1:$FLOOR_PORT" --spool "$WORK/spool-floor" \
    --relay-to "127.0.0.1:$SINK_PORT" > "$RUN_DIR/floor.log" 2>&1 &
  FLOOR_PID=$!
  for _ in $(seq 200); do port_open "$FLOOR_PORT" && return 0; kill -0 "$FLOOR_PID" 2>/dev/null || break; sleep 0.05; done
  echo "compare.sh: the floor probe did not start listening; see $RUN_DIR/floor.log" >&2
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
  for p in exim opensmtpd haraka; do
    case " $PEERS " in *" $p "*) ;; *) continue ;; esac
    why=$(peer_available "$p")
    echo "$p: ${why:+NOT RUN: }${why:-$(peer_version "$p")}"
  done
  echo "peers: $PEERS"
  echo "loads: 1 KiB x $N_1K, 100 KiB x $N_100K (Exim, OpenSMTPD and Haraka: at most 1 KiB x $PEER_N_1K, 100 KiB x $PEER_N_100K)"
} | tee "$RAW"

# The peers that can run here; each one that cannot says why, in every load's section too.
declare -A SKIP
RUN_PEERS=""
for p in $PEERS; do
  why=""; [ "$p" = postfix ] || why=$(peer_available "$p")
  if [ -n "$why" ]; then SKIP[$p]=$why; else RUN_PEERS="$RUN_PEERS $p"; fi
done
PROGRAMS="$RUN_PEERS nativerelay"
FLOOR_PROG=""
if [ "${FLOOR:-1}" != 0 ]; then
  if bash perf/floor/build.sh 2> "$RUN_DIR/floor-build.err"; then FLOOR_PROG=floor
  else note "floor: not run (perf/floor/build.sh failed: $(tr '\n' ' ' < "$RUN_DIR/floor-build.err"))"; fi
fi

# name  messages  sessions  size  smtp-source flags  (-d: reuse connections)
LOADS=(
  "1k-s10-reuse   $N_1K   10 1024   -d"
  "1k-s10-conn    $N_1K   10 1024"
  "1k-s50-reuse   $N_1K   50 1024   -d"
  "1k-s50-conn    $N_1K   50 1024"
  "100k-s10-reuse $N_100K 10 102400 -d"
)

# Exim, OpenSMTPD and Haraka carry 5-400 msg/s here (see perf/RESULTS.md): at 20,000 messages a
# load the run would take hours and some would pass mta-bench.sh's 600 s wait. They get at most
# PEER_N_1K / PEER_N_100K messages; Postfix, NativeRelay and the ceiling the full count.
prog_count() {  # prog_count PROGRAM N SIZE
  case $1 in
    exim|opensmtpd|haraka) if [ "$3" -ge 102400 ]; then echo $(( $2 < PEER_N_100K ? $2 : PEER_N_100K )); else echo $(( $2 < PEER_N_1K ? $2 : PEER_N_1K )); fi ;;
    *) echo "$2" ;;
  esac
}
declare -A CEIL ACC E2E CPU RSS PSS DELIV SRC_US SINK_US CPU_TICKS RSS_PEAK PSS_PEAK SRC_CPU SINK_CPU START_ERR
cpu_us() { awk -v t="${1:-0}" -v hz="$HZ" -v n="$2" 'BEGIN { if (t > 0) printf "%.0f", t / hz * 1e6 / n; else print "n/a" }'; }
PEAK_HWM=0
declare -A load_n load_size
for load in "${LOADS[@]}"; do read -r name n _ size _ <<< "$load"; load_n[$name]=$n; load_size[$name]=$size; done
for load in "${LOADS[@]}"; do
  read -r name n s size flags <<< "$load"
  n_all=$n
  note ""
  note "== $name: $n messages, $s sessions, $size bytes, smtp-source ${flags:-(new connection per message)}"
  out=$RUN_DIR/$name

  mta ceiling_msgs_per_s "$out.ceiling" ceiling ceiling "$n" "$s" "$size" $flags
  tee -a "$RAW" < "$out.ceiling"
  CEIL[$name]=$(value ceiling_msgs_per_s "$out.ceiling")
  SRC_US[$name.ceiling]=$(per_msg_us "${SRC_CPU[$name.ceiling]}" "$n")
  SINK_US[$name.ceiling]=$(per_msg_us "${SINK_CPU[$name.ceiling]}" "$n")
  note "ceiling_smtp_source_cpu_us_per_msg: ${SRC_US[$name.ceiling]}"
  note "ceiling_smtp_sink_cpu_us_per_msg: ${SINK_US[$name.ceiling]}"

  for prog in $PEERS nativerelay $FLOOR_PROG; do
    if [ -n "${SKIP[$prog]:-}" ]; then
      note "${prog}_e2e_msgs_per_s: n/a (not run: ${SKIP[$prog]})"
      continue
    fi
    n=$(prog_count "$prog" "$n_all" "$size")
    note "${prog}_messages: $n"
    case $prog in
      postfix)     mta postfix_e2e_msgs_per_s "$out.$prog" postfix postfix "$n" "$s" "$size" $flags ;;
      nativerelay) mta relay_e2e_msgs_per_s "$out.$prog" nativerelay relay "$RELAY_PORT" "$n" "$s" "$size" $flags ;;
      floor)       mta relay_e2e_msgs_per_s "$out.$prog" floor relay "$FLOOR_PORT" "$n" "$s" "$size" $flags ;;
      *)           mta relay_e2e_msgs_per_s "$out.$prog" "$prog" relay "$(peer_port "$prog")" "$n" "$s" "$size" $flags ;;
    esac
    if [ -f "$out.$prog" ]; then sed -i "s/^relay_/${prog}_/" "$out.$prog"; fi
    if [ -n "${START_ERR[$name.$prog]}" ] && ! grep -q "^${prog}_e2e_msgs_per_s: " "$out.$prog" 2>/dev/null; then
      note "${prog}_e2e_msgs_per_s: n/a (did not start: ${START_ERR[$name.$prog]})"
      continue
    fi
    grep -v '^[[:space:]]*$' "$out.$prog" | tee -a "$RAW"
    ACC[$name.$prog]=$(value "${prog}_accept_msgs_per_s" "$out.$prog")
    E2E[$name.$prog]=$(value "${prog}_e2e_msgs_per_s" "$out.$prog")
    DELIV[$name.$prog]=$(value "${prog}_delivered" "$out.$prog")
    # An e2e of 0 means the sink never had every message (mta-bench.sh waits 600 s): no rate.
    [ "${E2E[$name.$prog]:-0}" = 0 ] && E2E[$name.$prog]=""
    CPU[$name.$prog]=$(cpu_us "${CPU_TICKS[$name.$prog]}" "$n")
    RSS[$name.$prog]=${RSS_PEAK[$name.$prog]:-0}
    PSS[$name.$prog]=${PSS_PEAK[$name.$prog]:-0}
    SRC_US[$name.$prog]=$(per_msg_us "${SRC_CPU[$name.$prog]}" "$n")
    SINK_US[$name.$prog]=$(per_msg_us "${SINK_CPU[$name.$prog]}" "${DELIV[$name.$prog]:-0}")
    note "${prog}_cpu_us_per_msg: ${CPU[$name.$prog]}"
    note "${prog}_peak_rss_kib: ${RSS[$name.$prog]}"
    note "${prog}_peak_pss_kib: ${PSS[$name.$prog]}"
    note "${prog}_smtp_source_cpu_us_per_msg: ${SRC_US[$name.$prog]}"
    note "${prog}_smtp_sink_cpu_us_per_msg: ${SINK_US[$name.$prog]}"
    note "${prog}_durability: $(peer_durability "$prog")"
    pn=$(peer_note "$prog"); [ -z "$pn" ] || note "${prog}_note: $pn"
  done
  n=$n_all
  # The load's own cost in this section is the one measured with NativeRelay as the relay: the
  # same run whose relay CPU the targets compare with the sink's (per received message).
  note "smtp_source_cpu_us_per_msg: ${SRC_US[$name.nativerelay]:-n/a}"
  note "smtp_sink_cpu_us_per_msg: ${SINK_US[$name.nativerelay]:-n/a}"
  [ "${RSS[$name.nativerelay]:-0}" -gt "$PEAK_HWM" ] && PEAK_HWM=${RSS[$name.nativerelay]}
done
bash "$MTA_BENCH" stop >/dev/null 2>&1 || true
# Compatibility with the summary below (issue 6's names).
declare -A PF_ACC PF_E2E NR_ACC NR_E2E NR_HWM PF_CPU NR_CPU
for load in "${LOADS[@]}"; do
  read -r name _ <<< "$load"
  PF_ACC[$name]=${ACC[$name.postfix]:-}; PF_E2E[$name]=${E2E[$name.postfix]:-}; PF_CPU[$name]=${CPU[$name.postfix]:-}
  NR_ACC[$name]=${ACC[$name.nativerelay]:-}; NR_E2E[$name]=${E2E[$name.nativerelay]:-}; NR_CPU[$name]=${CPU[$name.nativerelay]:-}
  NR_HWM[$name]=${RSS[$name.nativerelay]:-0}
done

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
  echo "== summary, every program on every load (msg/s; e2e = until smtp-sink has every message; cpu = µs of CPU"
  echo "   per message over all of the program's processes; pss = peak MiB of PSS summed over them; e2e x and cpu x ="
  echo "   NativeRelay's e2e over the program's, and the program's CPU over NativeRelay's: above 1 = NativeRelay ahead)"
  for load in "${LOADS[@]}"; do
    read -r name _ <<< "$load"
    echo ""
    echo "$name: ceiling ${CEIL[$name]:-n/a} msg/s; smtp-source ${SRC_US[$name.nativerelay]:-n/a} µs/msg, smtp-sink ${SINK_US[$name.nativerelay]:-n/a} µs/msg (NativeRelay's run)"
    printf '  %-12s %6s %8s %8s %8s %8s %8s %8s %8s\n' program msgs accept e2e e2e/ceil cpu_us pss_MiB "e2e x" "cpu x"
    for prog in $PEERS nativerelay $FLOOR_PROG; do
      if [ -n "${SKIP[$prog]:-}" ]; then printf '  %-12s not run: %s\n' "$prog" "${SKIP[$prog]}"; continue; fi
      printf '  %-12s %6s %8s %8s %8s %8s %8s %8s %8s\n' "$prog" "$(prog_count "$prog" "${load_n[$name]}" "${load_size[$name]}")" "${ACC[$name.$prog]:-n/a}" "${E2E[$name.$prog]:-n/a}" \
        "$(pct "${E2E[$name.$prog]}" "${CEIL[$name]}")" "${CPU[$name.$prog]:-n/a}" "$(( ${PSS[$name.$prog]:-0} / 1024 ))" \
        "$( [ "$prog" = nativerelay ] && echo - || echo "$(ratio "${E2E[$name.nativerelay]}" "${E2E[$name.$prog]}")x")" \
        "$( [ "$prog" = nativerelay ] && echo - || echo "$(ratio "${CPU[$name.$prog]}" "${CPU[$name.nativerelay]}")x")"
    done
  done
  echo ""
  echo "durability before the 250 (same for every load):"
  for prog in $PEERS nativerelay $FLOOR_PROG; do [ -n "${SKIP[$prog]:-}" ] || echo "  $prog: $(peer_durability "$prog")"; done
  echo "notes:"
  for prog in $RUN_PEERS $FLOOR_PROG; do pn=$(peer_note "$prog"); [ -z "$pn" ] || echo "  $prog: $pn"; done
  echo ""
  echo "targets (the peers issue: ratios in this run):"
  for load in "${LOADS[@]}"; do
    read -r name _ <<< "$load"
    lead_e2e=met; lead_cpu=met; behind=""
    for prog in $RUN_PEERS; do
      if ! awk -v a="${E2E[$name.nativerelay]:-0}" -v b="${E2E[$name.$prog]:-0}" 'BEGIN { exit !(a > 0 && a > b) }'; then lead_e2e="NOT met"; behind="$behind $prog(e2e)"; fi
      if ! awk -v a="${CPU[$name.nativerelay]:-0}" -v b="${CPU[$name.$prog]:-0}" 'BEGIN { exit !(a != "n/a" && a > 0 && (b == "n/a" || b + 0 == 0 || a + 0 < b + 0)) }'; then lead_cpu="NOT met"; behind="$behind $prog(cpu)"; fi
    done
    echo "  $name: NativeRelay leads every peer run ($RUN_PEERS ) in e2e: $lead_e2e, in CPU per message: $lead_cpu${behind:+ (behind:$behind)}"
  done
  c=$(awk -v a="${NR_E2E[1k-s10-reuse]:-0}" -v b="${CEIL[1k-s10-reuse]:-0}" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else print "n/a" }')
  echo "  1k-s10-reuse (latency-bound): $(pct "${NR_E2E[1k-s10-reuse]}" "${CEIL[1k-s10-reuse]}") of the ceiling (>= 60%: $(verdict "$c" 0.6 '>='))"
  for name in 1k-s10-reuse 1k-s10-conn 1k-s50-reuse 1k-s50-conn; do
    r=$(awk -v a="${NR_CPU[$name]:-0}" -v b="${SINK_US[$name.nativerelay]:-0}" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "n/a" }')
    echo "  $name: NativeRelay ${NR_CPU[$name]:-n/a} µs per relayed message, smtp-sink ${SINK_US[$name.nativerelay]:-n/a} µs per received message in the same run: ${r}x (<= 2x: $(awk -v r="$r" 'BEGIN { if (r == "n/a") print "n/a"; else if (r + 0 <= 2) print "met"; else print "NOT met" }'))"
  done
  c=$(awk -v a="${NR_E2E[100k-s10-reuse]:-0}" -v b="${CEIL[100k-s10-reuse]:-0}" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else print "n/a" }')
  echo "  100k-s10-reuse: $(pct "${NR_E2E[100k-s10-reuse]}" "${CEIL[100k-s10-reuse]}") of the ceiling (>= 85%: $(verdict "$c" 0.85 '>='))"
  if [ -n "$FLOOR_PROG" ]; then
    echo "  the floor probe (perf/floor) on the same targets in this run, what the work itself costs here:"
    echo "    1k-s10-reuse: $(pct "${E2E[1k-s10-reuse.floor]:-}" "${CEIL[1k-s10-reuse]}") of the ceiling"
    for name in 1k-s10-reuse 1k-s10-conn 1k-s50-reuse 1k-s50-conn; do
      echo "    $name: ${CPU[$name.floor]:-n/a} µs per relayed message, smtp-sink ${SINK_US[$name.floor]:-n/a} µs in its run: $(ratio "${CPU[$name.floor]:-}" "${SINK_US[$name.floor]:-}")x; NativeRelay's CPU $(ratio "${NR_CPU[$name]:-}" "${CPU[$name.floor]:-}")x the floor's"
    done
    echo "    100k-s10-reuse: $(pct "${E2E[100k-s10-reuse.floor]:-}" "${CEIL[100k-s10-reuse]}") of the ceiling"
  fi
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
