#!/usr/bin/env bash
# A big backlog with the destination down: 1,000,000 small messages (default) are queued while
# nothing listens at the next hop. Reports the relay's resident memory per queued message, then
# restarts it with the backlog (time to greet, time to the first delivery, the recovery line),
# lets the backlog drain into a sink, and reports the spool's size on disk before and after.
#
#   bash perf/backlog-test.sh                    # 1,000,000 x 512 bytes, 16 sessions
#   BACKLOG_MESSAGES=100000 bash perf/backlog-test.sh
#   NATIVERELAY_BIN=/path/to/nativerelay bash perf/backlog-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

export NATIVERELAY_BIN="${NATIVERELAY_BIN:-$PWD/out/nativerelay}"
[ -x "$NATIVERELAY_BIN" ] || { echo "no binary at $NATIVERELAY_BIN: run 'make publish' or set NATIVERELAY_BIN" >&2; exit 2; }
export NATIVERELAY_PERF=1
export BACKLOG_MESSAGES="${BACKLOG_MESSAGES:-1000000}" BACKLOG_SESSIONS="${BACKLOG_SESSIONS:-16}" BACKLOG_SIZE="${BACKLOG_SIZE:-512}"
report=$(mktemp)
export BACKLOG_REPORT="$report"
trap 'rm -f "$report"' EXIT

echo "backlog test: $BACKLOG_MESSAGES messages x $BACKLOG_SIZE bytes, $BACKLOG_SESSIONS sessions, binary $NATIVERELAY_BIN"
status=0
dotnet test tests/NativeRelay.Tests/NativeRelay.Tests.csproj -c Release \
  --filter 'FullyQualifiedName~NativeRelay.Tests.Spool.SpoolPerfTests.Backlog_memory_recovery_and_drain' \
  --logger 'console;verbosity=normal' || status=$?
echo "--- result ---"
cat "$report" 2>/dev/null || echo "(no report: the run failed before the end)"
exit $status
