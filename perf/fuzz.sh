#!/usr/bin/env bash
# Coverage-guided fuzzing of one parser: SharpFuzz instruments NativeRelay.Core.dll, afl-fuzz
# (Debian's afl++) drives tests/NativeRelay.Fuzz for SECONDS seconds, starting from its committed
# seed corpus. Findings go to out/fuzz/TARGET (crashes/, hangs/, queue/); the last lines printed
# are afl's figures (execs/s, coverage, crashes, hangs).
#
#   perf/fuzz.sh TARGET [SECONDS]        (make fuzz TARGET=... SECONDS=...)
#   perf/fuzz.sh --list                  the target names
#
# Reproduce a finding outside afl with an uninstrumented build (the instrumented one in out/fuzz/bin
# runs only under afl-fuzz): dotnet run --project tests/NativeRelay.Fuzz -c Release -- TARGET FILE
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-out}
BIN="$OUT/fuzz/bin"
PROJECT=tests/NativeRelay.Fuzz

build() {
  export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
  dotnet tool restore >/dev/null
  # A fresh output every time: SharpFuzz refuses to instrument an assembly twice, and an
  # incremental build could leave the instrumented copy in place.
  rm -rf "$BIN"
  dotnet build "$PROJECT" -c Release -o "$BIN" -nologo -v quiet
  dotnet sharpfuzz "$BIN/NativeRelay.Core.dll"
}

if [[ ${1:-} == --list ]]; then
  ls "$PROJECT/corpus"
  exit 0
fi
TARGET=${1:?usage: perf/fuzz.sh TARGET [SECONDS] (perf/fuzz.sh --list names the targets)}
SECONDS_TO_RUN=${2:-60}
CORPUS="$PROJECT/corpus/$TARGET"
[[ -d $CORPUS ]] || { echo "no target '$TARGET' (no seed corpus $CORPUS); perf/fuzz.sh --list" >&2; exit 2; }
command -v afl-fuzz >/dev/null || { echo "afl-fuzz not found: apt-get install afl++" >&2; exit 2; }

[[ ${SKIP_BUILD:-} == 1 && -f $BIN/NativeRelay.Fuzz.dll ]] || build

FINDINGS="$OUT/fuzz/$TARGET"
mkdir -p "$FINDINGS"
# dotnet itself is not instrumented (the Core assembly is), so afl's binary check is skipped;
# the machine's CPU governor and core pinning are not ours to change on a shared machine.
export AFL_SKIP_BIN_CHECK=1 AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1 AFL_NO_UI=1 AFL_AUTORESUME=1
export AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
# A target's dictionary of keywords, if it has one (tests/NativeRelay.Fuzz/dict/TARGET.dict).
DICT=()
[[ -f $PROJECT/dict/$TARGET.dict ]] && DICT=(-x "$PROJECT/dict/$TARGET.dict")
# -t: a run slower than 2 s is a hang (the first runs pay the JIT; afl calibrates on them).
afl-fuzz -i "$CORPUS" -o "$FINDINGS" -V "$SECONDS_TO_RUN" -t 2000 -m none "${DICT[@]}" -- \
  dotnet "$BIN/NativeRelay.Fuzz.dll" "$TARGET" > "$FINDINGS/afl.log" 2>&1 || {
  echo "afl-fuzz failed; the end of $FINDINGS/afl.log:" >&2
  tail -20 "$FINDINGS/afl.log" >&2
  exit 1
}

STATS="$FINDINGS/default/fuzzer_stats"
stat() { sed -n "s/^$1 *: *//p" "$STATS"; }
crashes=$(stat saved_crashes); hangs=$(stat saved_hangs)
echo "target=$TARGET seconds=$(stat run_time) execs=$(stat execs_done) execs_per_sec=$(stat execs_per_sec)" \
     "edges_found=$(stat edges_found) total_edges=$(stat total_edges) bitmap_cvg=$(stat bitmap_cvg)" \
     "corpus=$(stat corpus_count) crashes=$crashes hangs=$hangs"
if [[ ${crashes:-0} != 0 || ${hangs:-0} != 0 ]]; then
  echo "findings: $FINDINGS/default/crashes $FINDINGS/default/hangs" >&2
  exit 3
fi
