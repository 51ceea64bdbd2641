#!/bin/bash
# usage: bash perf/startup.sh BIN  (EXTRA="--dkim D:S:KEY" adds serve flags)  -> prints median ms from exec to the first accepted SMTP greeting, over 5 runs
BIN=$1; port=$((30000 + RANDOM % 20000)); res=()
for i in 1 2 3 4 5; do
  d=$(mktemp -d)
  s=$(date +%s%N)
  $BIN serve --listen 127.0.0.1:$port --spool $d/spool --hostname t.test $EXTRA >/dev/null 2>&1 &
  pid=$!
  until python3 - $port <<'PY' 2>/dev/null
import socket,sys
s=socket.create_connection(("127.0.0.1",int(sys.argv[1])),timeout=0.2); s.recv(100)
PY
  do sleep 0.005; done
  e=$(date +%s%N); res+=($(( (e-s)/1000000 )))
  kill $pid; wait $pid 2>/dev/null; rm -rf $d
done
printf '%s\n' "${res[@]}" | sort -n | sed -n 3p
