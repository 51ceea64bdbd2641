# NativeRelay build entry points. `make run` and `make test` are the two a newcomer needs.
DOTNET        ?= dotnet
CONFIGURATION ?= Release
RID           ?= linux-x64
OUT           ?= out
BIN           := $(OUT)/nativerelay
SLN           := NativeRelay.sln
TESTS         := tests/NativeRelay.Tests/NativeRelay.Tests.csproj
# pipefail below: a test run piped through tee still fails the target.
SHELL         := bash
# Keep the CLI quiet and reproducible on CI and fresh machines.
export DOTNET_CLI_TELEMETRY_OPTOUT=1
export DOTNET_NOLOGO=1
export DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

.PHONY: all build publish run test unit-test e2e-test image image-test bench perf crash-test backlog-test torn-sweep fuzz clean

all: build

build:
	$(DOTNET) build $(SLN) -c $(CONFIGURATION) -warnaserror

# Native AOT, trimmed. The build fails on any IL trim/AOT warning (the project treats them as
# errors); the grep is a second line of defence in case a warning escapes that setting.
publish:
	@mkdir -p $(OUT)
	set -o pipefail; $(DOTNET) publish src/NativeRelay/NativeRelay.csproj -c $(CONFIGURATION) -r $(RID) -o $(OUT) 2>&1 | tee $(OUT)/publish.log
	@if grep -E 'warning (IL|SYSLIB)[0-9]+' $(OUT)/publish.log; then echo "publish produced trim/AOT warnings" >&2; exit 1; fi
	@test -x $(BIN)

# Runs the relay on built-in defaults: 127.0.0.1:2525, spool ./var/spool, loopback relaying only.
# Flags for serve go in RUN_ARGS, e.g. make run RUN_ARGS="--relay-to 127.0.0.1:2526".
RUN_ARGS      ?=
run: publish
	$(BIN) serve $(RUN_ARGS)

# A test that stops making progress for this long is stopped and named (the test host is killed,
# the run fails), so a hang costs minutes of CI, not its whole time limit. No test comes near it.
HANG_GUARD    := --blame-hang-timeout 5m --blame-hang-dump-type none

# Each run's console output is kept in $(OUT) and, when a test fails, its failures are printed
# again at the very end (tests/show-failures.sh), where a CI log's last lines show them.
unit-test:
	@mkdir -p $(OUT)
	set -o pipefail; $(DOTNET) test $(TESTS) -c $(CONFIGURATION) --filter 'Category!=EndToEnd' --logger 'console;verbosity=normal' $(HANG_GUARD) 2>&1 | tee $(OUT)/unit-test.log \
	  || { bash tests/show-failures.sh $(OUT)/unit-test.log; exit 1; }

# End-to-end tests drive the published binary over loopback sockets.
e2e-test:
	@mkdir -p $(OUT)
	set -o pipefail; NATIVERELAY_BIN=$(CURDIR)/$(BIN) $(DOTNET) test $(TESTS) -c $(CONFIGURATION) --no-build --filter 'Category=EndToEnd' --logger 'console;verbosity=normal' $(HANG_GUARD) 2>&1 | tee $(OUT)/e2e-test.log \
	  || { bash tests/show-failures.sh $(OUT)/e2e-test.log; exit 1; }

test: build unit-test publish e2e-test

# The edge relay as an OCI image, without a container daemon (buildah; as root): out/image/oci
# (OCI layout), out/image/nativerelay-docker.tar (with its HEALTHCHECK), out/image/rootfs and the
# size in out/image/size.txt. docs/deploy/FOOTPRINT.md says what is in it and why.
IMAGE_TAG     ?= nativerelay:$(shell sed -n 's:.*<Version>\(.*\)</Version>.*:\1:p' Directory.Build.props)
image: publish
	bash docs/deploy/image/build.sh $(BIN) $(OUT)/image $(IMAGE_TAG)

# The footprint tests against the built image's own root file system (unpacked from the OCI
# layout with umoci) instead of one laid out by rootfs.sh, as `make test` does.
image-test: image
	rm -rf $(OUT)/image/bundle
	umoci unpack --image $(OUT)/image/oci:$(lastword $(subst :, ,$(IMAGE_TAG))) $(OUT)/image/bundle
	NATIVERELAY_BIN=$(CURDIR)/$(BIN) NATIVERELAY_ROOTFS=$(CURDIR)/$(OUT)/image/bundle/rootfs $(DOTNET) test $(TESTS) -c $(CONFIGURATION) --filter 'Category=EndToEnd&FullyQualifiedName~Footprint' --logger 'console;verbosity=normal' $(HANG_GUARD)

# All benchmarks by default; narrow with e.g. BENCH_ARGS="--filter '*Spool*'" or add "--job Dry".
BENCH_ARGS ?= --filter '*'
bench:
	$(DOTNET) run -c Release --project bench/NativeRelay.Benchmarks -- $(BENCH_ARGS)

# NativeRelay beside Postfix, Exim, OpenSMTPD and Haraka (perf/peers/install.sh puts the last three
# in place, idempotently; Postfix comes with ../shared/perf/mta-bench.sh). PEERS="postfix exim"
# narrows the peers, QUICK=1 the loads.
perf: publish
	bash perf/peers/install.sh
	bash perf/compare.sh

# The spool under stress (long: see perf/RESULTS.md): 100,000 messages while the relay is
# killed and restarted; a 1,000,000-message backlog (memory, restart time, drain).
crash-test: publish
	bash perf/crash-test.sh

backlog-test: publish
	bash perf/backlog-test.sh

# The spool's log cut at every byte offset of its last 64 KiB, one recovery per cut (about 4
# minutes; `make test` runs the same test over about 5,100 of those offsets).
torn-sweep: build
	NATIVERELAY_TORN_STRIDE=1 $(DOTNET) test $(TESTS) -c $(CONFIGURATION) --no-build --filter 'FullyQualifiedName~SpoolTornTailSweep' --logger 'console;verbosity=detailed'

# Coverage-guided fuzzing of one parser (SharpFuzz + afl++; not part of `make test`): builds and
# instruments tests/NativeRelay.Fuzz, runs afl-fuzz for SECONDS from the target's committed seed
# corpus, keeps findings in out/fuzz/TARGET and prints execs/s and coverage. `perf/fuzz.sh --list`
# names the targets; the full campaign per target is SECONDS=1800 (perf/RESULTS.md).
TARGET  ?=
SECONDS ?= 60
fuzz:
	@test -n "$(TARGET)" || { echo "make fuzz TARGET=NAME [SECONDS=60]; targets:" >&2; bash perf/fuzz.sh --list >&2; exit 2; }
	bash perf/fuzz.sh $(TARGET) $(SECONDS)

clean:
	rm -rf $(OUT)
	$(DOTNET) clean $(SLN) -c $(CONFIGURATION)
