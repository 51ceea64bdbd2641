# Sourced by perf/compare.sh: the peers other than Postfix (which ../shared/perf/mta-bench.sh
# runs), each a private instance on a loopback port that relays everything to smtp-sink on
# 127.0.0.1:$SINK_PORT, started and stopped by pid. perf/peers/install.sh puts them in place.
#
#   peer_available NAME    prints why NAME cannot run, or nothing
#   peer_start NAME PORT   starts it with a fresh queue; sets PEER_PID (the pid whose process tree
#                          is the instance); returns non-zero, with the reason on stderr, if it
#                          does not listen within 15 s
#   peer_stop              stops PEER_PID (TERM, then KILL after 10 s) and waits for its queue
#   peer_version NAME, peer_durability NAME, peer_note NAME
#
# Needs from compare.sh: WORK (a private temporary directory), RUN_DIR, SINK_PORT, stop_pid,
# port_open.

PEERS_DIR=${PEERS_DIR:-perf/peers}
PEERS_ROOT=$PWD/$PEERS_DIR/root                      # the unpacked Debian packages
EXIM_BIN=${EXIM_BIN:-$PEERS_ROOT/usr/sbin/exim4}
SMTPD_BIN=${SMTPD_BIN:-$PEERS_ROOT/usr/sbin/smtpd}
HARAKA_DIR=${HARAKA_DIR:-$PWD/$PEERS_DIR/haraka/node_modules/Haraka}
PEER_PID=""


# opensmtpd_running: pids of OpenSMTPD processes (Postfix's smtpd daemons share the name; their
# executable is under /usr/lib/postfix).
opensmtpd_running() {
  local pid exe
  for pid in $(pgrep -x smtpd || true); do
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
    case $exe in /usr/lib/postfix/*|"") ;; *) echo "$pid" ;; esac
  done
}

peer_available() {
  case $1 in
    exim)      [ -x "$EXIM_BIN" ] || { echo "$EXIM_BIN not found: run bash perf/peers/install.sh"; return; }
               id Debian-exim >/dev/null 2>&1 || echo "no user Debian-exim: run bash perf/peers/install.sh" ;;
    opensmtpd) [ -x "$SMTPD_BIN" ] || { echo "$SMTPD_BIN not found: run bash perf/peers/install.sh"; return; }
               id opensmtpq >/dev/null 2>&1 || { echo "no user opensmtpq: run bash perf/peers/install.sh"; return; }
               # Its queue directory is compiled in: two instances would share it.
               if [ -n "$(opensmtpd_running)" ]; then echo "another OpenSMTPD is running (pid $(opensmtpd_running | head -1)) and /var/spool/smtpd, compiled in, cannot be shared"; fi ;;
    haraka)    command -v node >/dev/null || { echo "node not found"; return; }
               [ -f "$HARAKA_DIR/bin/haraka" ] || echo "$HARAKA_DIR not found: run bash perf/peers/install.sh" ;;
    *)         echo "unknown peer $1" ;;
  esac
}

peer_version() {
  case $1 in
    exim)      "$EXIM_BIN" -C /dev/null -bV 2>/dev/null | sed -n 's/^Exim version \([^ ]*\).*/Exim \1 (Debian exim4-daemon-light, unpacked)/p' | head -1 ;;
    opensmtpd) echo "OpenSMTPD $(ls "$PEERS_DIR"/debs/opensmtpd_*.deb 2>/dev/null | sed 's/.*opensmtpd_\([^_]*\)_.*/\1/' | head -1) (Debian, unpacked)" ;;
    haraka)    echo "Haraka $(node -p "require('$HARAKA_DIR/package.json').version" 2>/dev/null) (npm) on node $(node --version)" ;;
  esac
}

# How each makes a message durable before its 250 to DATA, and what was configured for it.
# Each was checked with strace -f -e trace=fsync,fdatasync,rename on one message (see
# perf/RESULTS.md, "Durability").
peer_durability() {
  case $1 in
    postfix)     echo "fsync of the queue file by cleanup before smtpd's 250 (always; not configurable); run as mta-bench.sh configures it" ;;
    nativerelay) echo "O_DSYNC group-commit write of the spool before 250 (always)" ;;
    floor)       echo "O_DSYNC group-commit pwrite of the spool before 250 (always; the floor probe, perf/floor)" ;;
    exim)        echo "fsync of the -D (body) and -H (header) spool files and of the spool directory before 250 (always: this build has no disable_fsync option)" ;;
    opensmtpd)   echo "NO fsync before 250: the message and envelope are written and renamed into /var/spool/smtpd/queue, never fsynced (nothing in smtpd.conf 6.8 asks for it): a crash can lose acknowledged mail, so its figures are not for the same promise" ;;
    haraka)      echo "fsync of its queue file (queue/ under its config dir) before 250 (Haraka 3.3 FsyncWriteStream; not configurable); the directory is not fsynced after the rename into the queue" ;;
  esac
}

# What else a reader of a peer's figures must know: limits that are compiled in, not configured.
peer_note() {
  case $1 in
    opensmtpd) echo "listen backlog 5 (SMTPD_BACKLOG, compiled in; ss shows Send-Q 5): with a new connection per message and 10 or more clients, connection attempts overflow it and wait for the 1 s SYN retransmit; queue directory /var/spool/smtpd, compiled in" ;;
    haraka)    echo "nodes=${HARAKA_NODES:-cpus} (cluster workers)" ;;
    floor)     echo "not a peer: the least a durable relay does, in C (perf/floor/floor-relay.c), one event loop and a commit thread, 10 connections to the next hop; a floor for any relay's figures" ;;
  esac
}

peer_start() {
  local name=$1 port=$2 dir=$WORK/$1
  rm -rf "$dir"; mkdir -p "$dir"
  chmod 755 "$WORK" "$dir"     # the instances' unprivileged users read their configuration here
  case $name in
    exim)      start_exim "$port" "$dir" ;;
    opensmtpd) start_opensmtpd "$port" "$dir" || return 1 ;;
    haraka)    start_haraka "$port" "$dir" ;;
  esac
  local _
  for _ in $(seq 150); do
    port_open "$port" && return 0
    kill -0 "$PEER_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "$name did not listen on 127.0.0.1:$port within 15 s; see $RUN_DIR/$name-*.log" >&2
  peer_stop
  return 1
}

# descendants PID: every live descendant of PID.
descendants() {
  local child
  for child in $(pgrep -P "$1" || true); do echo "$child"; descendants "$child"; done
}

# peer_stop: the root gets TERM (each of these stops its own processes on it); then every process
# of the instance gets up to 10 s to exit, so the next instance finds its port free and no process
# still holding the queue (OpenSMTPD's is shared between instances).
peer_stop() {
  [ -n "$PEER_PID" ] || return 0
  local pids pid
  pids=$(descendants "$PEER_PID")
  stop_pid "$PEER_PID"
  for pid in $pids; do stop_pid "$pid"; done
  PEER_PID=""
}

# Exim: the daemon (-bd) accepts and forks a delivery per message at once (queue_only not set);
# -q10s runs the queue for anything deferred. Everything goes by manualroute to the sink.
start_exim() {
  local port=$1 dir=$2
  mkdir -p "$dir/spool" "$dir/log"
  chown -R Debian-exim:Debian-exim "$dir/spool" "$dir/log"
  cat > "$dir/exim.conf" <<CONF
exim_path = $EXIM_BIN
exim_user = Debian-exim
exim_group = Debian-exim
primary_hostname = exim.bench.test
spool_directory = $dir/spool
log_file_path = $dir/log/%slog
local_interfaces = 127.0.0.1
daemon_smtp_ports = $port
host_lookup =
rfc1413_hosts =
rfc1413_query_timeout = 0s
tls_advertise_hosts =
acl_smtp_rcpt = acl_rcpt
# 50 sessions and more: the defaults (20 at once, backlog 20) would refuse some.
smtp_accept_max = 500
smtp_connect_backlog = 256
# The default queues (delivers only on a queue run) every message after the 10th of a session.
smtp_accept_queue_per_connection = 0
message_size_limit = 0
begin acl
acl_rcpt:
  accept hosts = 127.0.0.1
  deny
begin routers
to_sink:
  driver = manualroute
  route_list = * 127.0.0.1
  self = send
  transport = to_sink
begin transports
to_sink:
  driver = smtp
  port = $SINK_PORT
  allow_localhost
  hosts_avoid_tls = *
begin retry
* * F,2h,10s
CONF
  chmod 644 "$dir/exim.conf"
  "$EXIM_BIN" -C "$dir/exim.conf" -bdf -q10s -oX "$port" > "$RUN_DIR/exim-${PEER_LOG_TAG:-run}.log" 2>&1 &
  PEER_PID=$!
}

# OpenSMTPD: foreground (-d), its queue is /var/spool/smtpd (compiled in); emptied first, when
# no other OpenSMTPD runs and Debian's opensmtpd package is not installed (so the queue is ours): a
# message left there by an interrupted run would be delivered into the next run's count, and at
# start, before the sink is up, it makes OpenSMTPD disable the route to the sink for 15 s.
start_opensmtpd() {
  local port=$1 dir=$2
  if dpkg -s opensmtpd >/dev/null 2>&1 || [ -n "$(opensmtpd_running)" ]; then
    echo "/var/spool/smtpd is not ours to empty (a system OpenSMTPD is installed or an smtpd runs)" >&2
    PEER_PID=""; return 1
  fi
  rm -rf /var/spool/smtpd
  cat > "$dir/smtpd.conf" <<CONF
smtp limit max-mails 1000000 max-rcpt 1000
listen on 127.0.0.1 port $port hostname opensmtpd.bench.test
action "sink" relay host smtp://127.0.0.1:$SINK_PORT
match from any for any action "sink"
CONF
  chmod 644 "$dir/smtpd.conf"
  "$SMTPD_BIN" -d -f "$dir/smtpd.conf" > "$RUN_DIR/opensmtpd-${PEER_LOG_TAG:-run}.log" 2>&1 &
  PEER_PID=$!
}

# Haraka: nodes=cpus (a worker per core, as its performance tuning advises; HARAKA_NODES=1 for one
# process), the relay plugin for 127.0.0.1, outbound (its on-disk
# queue, queue/outbound under the config dir) routed to the sink by a get_mx hook.
start_haraka() {
  local port=$1 dir=$2
  mkdir -p "$dir/config" "$dir/plugins" "$dir/queue"
  cp -r "$HARAKA_DIR"/config/. "$dir/config/"      # Haraka's defaults, then ours over them
  printf 'listen=127.0.0.1:%s\nnodes=%s\n' "$port" "${HARAKA_NODES:-cpus}" > "$dir/config/smtp.ini"
  printf 'haraka.bench.test\n' > "$dir/config/me"
  printf 'relay\nbench_route\n' > "$dir/config/plugins"
  printf '[relay]\nacl=true\n' > "$dir/config/relay.ini"
  printf '127.0.0.1/32\n' > "$dir/config/relay_acl_allow"
  printf 'enable_tls=false\nconcurrency_max=100\n' > "$dir/config/outbound.ini"
  printf '[main]\nlevel=warn\n' > "$dir/config/log.ini"
  cat > "$dir/plugins/bench_route.js" <<JS
// Every outbound message goes to the benchmark's smtp-sink.
exports.hook_get_mx = function (next, hmail, domain) {
  next(OK, { exchange: '127.0.0.1', port: $SINK_PORT, priority: 0 })
}
JS
  node "$HARAKA_DIR/bin/haraka" -c "$dir" > "$RUN_DIR/haraka-${PEER_LOG_TAG:-run}.log" 2>&1 &
  PEER_PID=$!
}
