#!/usr/bin/env bash
# Crash safety under load: N messages (default 100,000) sent over several sessions while the
# relay is killed with SIGKILL at random moments (default 10 times) and restarted on the same
# spool; at the end every message that got a 250 must have reached the sink at least once.
# Prints one summary line: acknowledged, delivered, duplicates, kills, missing (must be 0).
#
#   bash perf/crash-test.sh                      # 100,000 x 1 KiB, 16 sessions, 10 kills
#   CRASH_MESSAGES=20000 CRASH_KILLS=5 bash perf/crash-test.sh
#   NATIVERELAY_BIN=/path/to/nativerelay bash perf/crash-test.sh
#
# The smaller version (800 messages, 3 kills) runs in `make test` (EndToEnd.CrashTests).
set -euo pipefail
cd "$(dirname "$0")/.."

export NATIVERELAY_BIN="${NATIVERELAY_BIN:-$PWD/out/nativerelay}"
[ -x "$NATIVERELAY_BIN" ] || { echo "no binary at $NATIVERELAY_BIN: run 'make publish' or set NATIVERELAY_BIN" >&2; exit 2; }
export NATIVERELAY_PERF=1
export CRASH_MESSAGES="${CRASH_MESSAGES:-100000}" CRASH_KILLS="${CRASH_KILLS:-10}" CRASH_SESSIONS="${CRASH_SESSIONS:-16}"
export CRASH_SIZE="${CRASH_SIZE:-1024}" CRASH_SEED="${CRASH_SEED:-1}" CRASH_MINUTES="${CRASH_MINUTES:-30}"
report=$(mktemp)
export CRASH_REPORT="$report"
trap 'rm -f "$report"' EXIT

echo "crash test: $CRASH_MESSAGES messages x $CRASH_SIZE bytes, $CRASH_SESSIONS sessions, $CRASH_KILLS kills, binary $NATIVERELAY_BIN"
status=0
dotnet test tests/NativeRelay.Tests/NativeRelay.Tests.csproj -c Release \
  --filter 'FullyQualifiedName~NativeRelay.Tests.Spool.SpoolPerfTests.Crash_run_at_scale' \
  --logger 'console;verbosity=normal' || status=$?
echo "--- result ---"
cat "$report" 2>/dev/null || echo "(no report: the run failed before the end)"
exit $status
