#!/usr/bin/env bash
# The suppression list at scale with the published binary (issue 26: a million entries in under
# 100 MiB): the relay's resident memory before and after `nativerelay suppress import` of N
# addresses, the import's time (one fsync at its end), the time `suppress list` takes to stream
# them back, and after kill -9 the start-up time to the greeting (the journal is replayed) and the
# resident memory again. Usage: perf/suppression-scale.sh [N] (default 1000000).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
BIN=${NATIVERELAY_BIN:-$here/../out/nativerelay}
N=${1:-1000000}
dir=$(mktemp -d /tmp/nr-suppression-scale.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

now() { date +%s.%N; }
rss_mib() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status"; }
start() {
    "$BIN" serve --listen "127.0.0.1:$port" --spool "$dir/spool" --hostname scale.test >>"$dir/relay.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 600); do
        if exec 3<>"/dev/tcp/127.0.0.1/$port" 2>/dev/null && read -r -t 5 greeting <&3; then
            exec 3>&-
            case "$greeting" in 220*) return 0 ;; esac
        fi
        sleep 0.1
    done
    echo "the relay did not greet" >&2; cat "$dir/relay.log" >&2; exit 1
}

seq 0 $((N - 1)) | awk '{ printf "user%d.%d@domain%d.example\n", $1, ($1 * 7919) % 100003, $1 % 5000 }' >"$dir/addresses.txt"

t0=$(now); start; t1=$(now)
echo "start, empty list:          $(echo "$t1 - $t0" | bc) s to the greeting, RSS $(rss_mib) MiB"
t0=$(now); "$BIN" suppress import "$dir/addresses.txt" --spool "$dir/spool"; t1=$(now)
echo "import of $N addresses: $(echo "$t1 - $t0" | bc) s, RSS $(rss_mib) MiB, journal $(du -m "$dir/spool/suppression/journal" | cut -f1) MiB"
t0=$(now); listed=$("$BIN" suppress list --spool "$dir/spool" 2>/dev/null | wc -l); t1=$(now)
echo "suppress list:              $listed entries in $(echo "$t1 - $t0" | bc) s, RSS $(rss_mib) MiB"
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
t0=$(now); start; t1=$(now)
echo "after kill -9:              $(echo "$t1 - $t0" | bc) s to the greeting (journal replayed), RSS $(rss_mib) MiB"
grep -h "suppression list:" "$dir/relay.log" | tail -1
