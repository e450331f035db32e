#!/usr/bin/env bash
# first-hour.sh — what a newcomer does in the first hour, following
# README.md, in a temporary fresh clone:
#
#   clone → (make test, with FIRST_HOUR_MAKE_TEST=1) → build → weft serve
#   → weft token → weft doc edit → curl reads it back → the README's Go
#   example, in a separate module that depends on the clone, edits the same
#   document → curl sees that edit → SIGTERM → clean exit
#   → docker build (only where a docker engine answers).
#
# Usage: scripts/first-hour.sh [REPO]   (default: this checkout; what is
# committed, since it clones). It leaves nothing behind but prints where it
# worked when it fails (the directory is then kept). Needs git, go, curl
# and the Go module proxy (or a warm module cache).
set -euo pipefail

repo=${1:-$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)}
work=$(mktemp -d "${TMPDIR:-/tmp}/weft-first-hour.XXXXXX")
server_pid=
step() { printf '\n== %s\n' "$*"; }
fail() { printf 'first-hour: FAILED: %s\n(work directory kept: %s)\n' "$*" "$work" >&2; exit 1; }
cleanup() {
	code=$?
	if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
		kill "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
	fi
	if [ "$code" = 0 ]; then rm -rf "$work"; fi
}
trap cleanup EXIT

step "clone $repo"
git clone --quiet "$repo" "$work/weft"
cd "$work/weft"
git log --oneline -1

if [ "${FIRST_HOUR_MAKE_TEST:-0}" = 1 ]; then
	step "make test"
	start=$(date +%s)
	make test
	echo "make test took $(( $(date +%s) - start )) s"
fi

step "build (make build)"
make build
./weft version

step "serve"
secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
./weft serve --listen 127.0.0.1:0 --data "$work/data" --secret "$secret" >"$work/serve.out" 2>"$work/serve.err" &
server_pid=$!
url=
for _ in $(seq 1 300); do # up to 30 s for the one line it prints once listening
	url=$(sed -n 's/^weft serving \(http[^ ]*\) .*/\1/p' "$work/serve.out")
	[ -n "$url" ] && break
	kill -0 "$server_pid" 2>/dev/null || fail "weft serve exited: $(cat "$work/serve.err")"
	sleep 0.1
done
[ -n "$url" ] || fail "weft serve printed no URL in 30 s"
echo "serving $url"
curl -fsS "$url/readyz" >/dev/null || fail "/readyz"

step "token and a first edit from the command line"
token=$(./weft token --secret "$secret" --user alice --docs 'notes/*:write')
./weft doc edit notes/hello --server "$url" --token "$token" --field body --insert "Hello from the command line."
./weft doc edit notes/hello --server "$url" --token "$token" --field likes --add 1

step "curl reads it back"
got=$(curl -fsS -H "Authorization: Bearer $token" "$url/v1/docs/notes%2Fhello")
echo "$got"
case $got in *'"body":"Hello from the command line."'*'"likes":1'* | *'"likes":1'*'"body":"Hello from the command line."'*) ;; *) fail "curl did not read the edit back" ;; esac

step "the README's Go example, from a separate module"
mkdir "$work/app"
# The first ```go block after the "first-hour:go" marker in README.md.
awk '/first-hour:go/ {armed=1} armed && /^```go$/ {on=1; next} on && /^```$/ {exit} on' README.md >"$work/app/main.go"
[ -s "$work/app/main.go" ] || fail "README.md has no Go example after its first-hour:go marker"
(
	cd "$work/app"
	go mod init example.com/firsthour >/dev/null 2>&1
	go mod edit -require github.com/weftsync/weft@v0.0.0 -replace "github.com/weftsync/weft=$work/weft"
	go mod tidy >/dev/null
	WEFT_URL=$url WEFT_TOKEN=$token go run . || fail "the Go example failed"
)
got=$(curl -fsS -H "Authorization: Bearer $token" "$url/v1/docs/notes%2Fhello")
case $got in *'Hello from Go.'*) ;; *) fail "the Go example's edit is not on the server: $got" ;; esac

step "SIGTERM: a clean stop"
kill -TERM "$server_pid"
code=0
wait "$server_pid" || code=$?
server_pid=
[ "$code" = 0 ] || fail "weft serve exited $code after SIGTERM: $(cat "$work/serve.err")"
./weft doc get notes/hello --data "$work/data" | grep -q 'Hello from Go.' || fail "the data directory lacks the edit after the stop"

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
	step "docker build"
	docker build -q -t weft-first-hour "$work/weft"
else
	step "docker build: skipped (no docker engine here)"
fi

printf '\nfirst-hour: OK\n'
