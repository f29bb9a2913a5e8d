#!/usr/bin/env bash
# The main job, for now: start an instance from the base image on the local cloud, run a
# command in it, print its address and what the command printed, and destroy it.
set -euo pipefail
cd "$(dirname "$0")/.."
stratus=.venv/bin/stratus
name="demo-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"

cleanup() { "$stratus" instance kill "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "==> starting $name from debian-12"
started=$(date +%s.%N)
json=$("$stratus" instance run debian-12 --name "$name" -o json)
took=$(echo "$(date +%s.%N) - $started" | bc)
address=$(.venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)[0]["addresses"][0])' <<<"$json")
printf '==> %s is running at %s (%.1f s)\n' "$name" "$address" "$took"

echo "==> running a command in it"
"$stratus" instance exec "$name" -- sh -c \
  '. /etc/os-release; echo "$(hostname): $PRETTY_NAME, kernel $(uname -r), $(python3 --version)"'

echo "==> destroying it"
"$stratus" instance kill "$name" >/dev/null
trap - EXIT
echo "==> done: $name is gone"
