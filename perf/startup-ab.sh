#!/usr/bin/env bash
# startup-ab.sh A B [ROUNDS]: start-up to listening of two builds, alternated, ROUNDS (30) each:
# from exec of "A serve" (empty spool) until the port accepts, compare.sh's method; prints the
# median, min and max of each. PORT (27525) is the port used. EXTRA_A / EXTRA_B: more serve flags
# for A / B (e.g. EXTRA_B="--http 127.0.0.1:27526 --tokens FILE" to start B with the HTTP API on).
A=$1; B=$2; N=${3:-30}; PORT=${PORT:-27525}; WORK=$(mktemp -d)
port_open() { { : >"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null; }
one() {
  local t0=$EPOCHREALTIME; "$1" serve --listen "127.0.0.1:$PORT" --spool "$WORK/spool" --relay-to 127.0.0.1:9 $2 >/dev/null 2>&1 &
  local pid=$! s=${t0/./} ok=
  while (( ${EPOCHREALTIME/./} - s < 5000000 )); do port_open $PORT && { ok=1; break; }; kill -0 $pid 2>/dev/null || break; done
  local t1=$EPOCHREALTIME; kill -TERM $pid; wait $pid 2>/dev/null; rm -rf "$WORK/spool"
  [ -n "$ok" ] && echo "($t1 - $t0) * 1000" | bc -l | xargs printf '%.1f\n'
}
RA=(); RB=()
for i in $(seq 1 $N); do RA+=("$(one "$A" "$EXTRA_A")"); RB+=("$(one "$B" "$EXTRA_B")"); done
med() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { printf "median %s ms (min %s, max %s, n %d)", a[int((NR + 1) / 2)], a[1], a[NR], NR }'; }
echo "A $A: $(med "${RA[@]}")"; echo "B $B: $(med "${RB[@]}")"; rm -rf "$WORK"
