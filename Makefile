# The one test command (README, .ci/run): vet, the race-enabled test suite,
# and the crdt and sync-state-machine suites again with the structural
# invariant checks compiled in (the codec's trace tests are too long for that).
GO ?= go

.PHONY: test build fuzz bench-figures

build:
	$(GO) build -o weft ./cmd/weft

test:
	$(GO) mod download
	$(GO) vet ./...
	$(GO) test -race -timeout 20m ./...
	$(GO) test -tags invariants -timeout 10m ./crdt ./crdt/syncproto

# Runs each native fuzz target for a short while (not part of `make test`,
# which replays the committed corpora).
fuzz:
	$(GO) test ./crdt/codec -run '^$$' -fuzz FuzzDecodeSnapshot -fuzztime 60s

# The figures in the README's table.
bench-figures: build
	./weft bench trace --json automerge-paper.json.gz seph-blog1.json.gz friendsforever_flat.json.gz clownschool_flat.json.gz ascii_only/seph-blog1.json.gz
	./weft bench merge --json --edits 10000
