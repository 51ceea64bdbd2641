#!/usr/bin/env bash
# Prints the failed tests of a `dotnet test` console log (verbosity normal) again at its end, with
# their messages and stack traces, so the last lines of a CI log name what failed.
# Usage: tests/show-failures.sh LOG
set -uo pipefail
log=${1:?usage: show-failures.sh LOG}
echo
echo "================ failed tests (repeated from $log) ================"
awk '
  /^  Failed / { keep = 1; lines = 0; print; next }
  /^  (Passed|Skipped) / || /^\[xUnit/ || /^Test Run / || /^Total tests/ { keep = 0 }
  keep && lines < 60 { print; lines++ }
' "$log" | head -400
# A crashed test host fails no test by name: say why it crashed and which tests were running.
if grep -q "Test Run Aborted" "$log"; then
  echo "--- the test host crashed:"
  grep -m1 -A8 "The active test run was aborted" "$log"
  grep -A6 "The test running when the crash occurred" "$log" | head -8
fi
echo "==================================================================="
