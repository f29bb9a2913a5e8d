#!/usr/bin/env bash
# `make test`'s pytest: the LXD tests in one process, one at a time, and at the same time every
# other test spread over two workers (file by file, so a module's shared server stays on one).
# LXD creating and deleting containers for several tests at once has failed creations that never
# fail alone ("Failed to handle idmapped storage", issue 8), so LXD tests never run side by side;
# the rest does not touch LXD and shares nothing with them but the machine.
set -u
cd "$(dirname "$0")/.."
BIN=.venv/bin
log=$(mktemp -t stratus-tests.XXXXXX)
"$BIN/pytest" -m "not lxd" -n 2 --dist loadfile "$@" >"$log" 2>&1 &
rest=$!
trap 'kill "$rest" 2>/dev/null; rm -f "$log"' EXIT
echo "== tests on LXD (tests without LXD run meanwhile: their output follows) =="
"$BIN/pytest" -m lxd "$@"
lxd=$?
wait "$rest"
others=$?
echo "== tests without LXD (2 workers) =="
cat "$log"
echo "== LXD tests: exit $lxd; the others: exit $others =="
[ "$lxd" -eq 0 ] && [ "$others" -eq 0 ]
