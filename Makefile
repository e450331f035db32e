# The one test command (README, .ci/run): the race-enabled test suite,
# the codec tests that skip under -race (long trace replays, deterministic
# sizes) without it, and the crdt and sync-state-machine suites again with
# the structural invariant checks compiled in (the codec's trace tests are
# too long for that).
#
# NB: vet runs inside go test (-vet=all: every vet check) rather than as a
# separate go vet ./...: go vet type-checks every package against
# dependencies compiled without -race, a second full compile of the module
# and its dependencies (Pebble is most of it) that took about as long as
# the tests from a cold cache. Every package has tests, so -vet=all covers
# them all (TestEveryPackageHasTests in internal/depcheck keeps it so).
GO ?= go

.PHONY: test test-ts vet build fuzz bench-figures pgo first-hour

# -buildvcs=auto: the commit in `weft version` whenever this is a git
# checkout, even where GOFLAGS turns VCS stamping off.
build:
	$(GO) build -buildvcs=auto -o weft ./cmd/weft

# The weft binary the tests run as a real process (kill -9, SIGTERM, a
# cluster, the TypeScript end-to-end tests) is built once, first, and
# named in WEFT_BIN (internal/testbin): from a cold cache, test packages
# each compiling it at once while the race build ran made bench and
# clients/go time out on a loaded 2-core machine.
test:
	$(GO) mod download
	$(GO) build -o weft ./cmd/weft
	WEFT_BIN=$(CURDIR)/weft $(GO) test -race -vet=all -timeout 20m ./...
	$(GO) test -timeout 10m -run 'TestTraceHistories|TestEncodedSize|TestConformanceTraces' ./crdt/codec
	$(GO) test -tags invariants -timeout 10m ./crdt ./crdt/syncproto
	WEFT_BIN=$(CURDIR)/weft $(MAKE) test-ts

# The TypeScript client (clients/ts): type check, unit, conformance and
# Node-against-weft-serve tests, then the demo page in headless Chromium.
# Installs Debian's chromium when it is missing (CI runs as root on a fresh
# machine); npm ci installs exactly package-lock.json.
test-ts:
	command -v chromium >/dev/null 2>&1 || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)
	cd clients/ts && npm ci --no-audit --no-fund
	cd clients/ts && npx tsc -p .
	cd clients/ts && node --test --test-concurrency=1 dist/test/
	cd clients/ts && node --test --test-concurrency=1 dist/e2e/

vet:
	$(GO) vet ./...

# What README.md tells a newcomer to do, in a temporary fresh clone of what
# is committed: build, serve, weft doc edit, curl, the README's Go example
# from a separate module, a clean SIGTERM, docker build where docker runs.
# FIRST_HOUR_MAKE_TEST=1 runs make test in the clone first.
first-hour:
	scripts/first-hour.sh

# Runs each native fuzz target for a short while (not part of `make test`,
# which replays the committed corpora).
fuzz:
	$(GO) test ./crdt/codec -run '^$$' -fuzz FuzzDecodeSnapshot -fuzztime 60s
	$(GO) test ./crdt/codec -run '^$$' -fuzz FuzzDecodeChanges -fuzztime 60s
	$(GO) test ./crdt/codec -run '^$$' -fuzz FuzzApplyChanges -fuzztime 60s
	$(GO) test ./crdt/syncproto -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime 60s
	$(GO) test ./crdt/syncproto -run '^$$' -fuzz FuzzPeerReceive -fuzztime 60s
	$(GO) test ./syncserver -run '^$$' -fuzz FuzzAdmitBatch -fuzztime 60s
	$(GO) test ./syncserver -run '^$$' -fuzz FuzzVersionToken -fuzztime 30s
	$(GO) test ./syncserver -run '^$$' -fuzz FuzzResumeToken -fuzztime 30s
	$(GO) test ./storage -run '^$$' -fuzz FuzzDocIDEscape -fuzztime 30s
	$(GO) test ./storage -run '^$$' -fuzz FuzzDecodeStored -fuzztime 30s

# The figures in the README's table.
bench-figures: build
	./weft bench trace --json automerge-paper.json.gz seph-blog1.json.gz friendsforever_flat.json.gz clownschool_flat.json.gz ascii_only/seph-blog1.json.gz
	./weft bench merge --json --edits 10000

# Regenerates cmd/weft/default.pgo, the CPU profile `go build` uses for
# profile-guided optimization of the weft binary (Go does this by itself
# when the file is there): the merge, trace replay, keystroke, codec,
# sync-message and fan-out benchmarks, merged. Run it after changing hot
# code; a stale profile only optimizes less.
PGO_TMP ?= /tmp/weft-pgo-profiles
pgo:
	mkdir -p $(PGO_TMP)
	$(GO) test -run '^$$' -bench 'MergePhases|DecodeSnapshot' -benchtime 2s -cpuprofile $(PGO_TMP)/bench.prof ./bench
	$(GO) test -run '^$$' -bench 'Replay|RemoteInsert|Local' -cpuprofile $(PGO_TMP)/crdt.prof ./crdt
	$(GO) test -run '^$$' -bench . -cpuprofile $(PGO_TMP)/codec.prof ./crdt/codec
	$(GO) test -run '^$$' -bench . -cpuprofile $(PGO_TMP)/syncproto.prof ./crdt/syncproto
	$(GO) test -run '^$$' -bench Fanout -cpuprofile $(PGO_TMP)/syncserver.prof ./syncserver
	$(GO) tool pprof -proto $(PGO_TMP)/bench.prof $(PGO_TMP)/crdt.prof $(PGO_TMP)/codec.prof $(PGO_TMP)/syncproto.prof $(PGO_TMP)/syncserver.prof > cmd/weft/default.pgo
