#!/usr/bin/env bash
# The main job: deploy examples/webapp on the local cloud (a database, two web servers, a load
# balancer and a test, from pristine instances), print the service URL and the test verdict,
# ask the service something from here, and tear it all down. Then the second act
# (scripts/burst_demo.py): the same application with four web servers on a local cloud capped
# at three instances, bursting to a second LXD host made on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
stratus=.venv/bin/stratus
run=""

teardown() {
  if [ -n "$run" ]; then
    echo "==> tearing down run $run"
    "$stratus" run terminate "$run" > /dev/null || true
  fi
}
trap teardown EXIT

echo "==> deploying examples/webapp"
status=0
"$stratus" deploy examples/webapp --tags demo || status=$?
run=$("$stratus" run list -n 1 -o json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
params=$("$stratus" run params "$run" -o json)
value() { .venv/bin/python -c "import json,sys; print(json.load(sys.stdin).get('$1') or '')" <<<"$params"; }
url=$(value ss:url.service)
verdict=$(value test.1:result)
echo
echo "==> service URL: ${url:-none}"
echo "==> test verdict: ${verdict:-failed}"
if [ "$status" -eq 0 ] && [ -n "$url" ]; then
  echo "==> asking the service from this host:"
  for i in 1 2 3 4; do curl -fsS "$url/"; done
  curl -fsS -X POST --data "hello from the demo" "$url/items"; echo
  curl -fsS "$url/items"; echo
fi
teardown
run=""
[ "$status" -eq 0 ] || exit "$status"
echo
echo "==> second act: bursting to a second host"
.venv/bin/python scripts/burst_demo.py
