"""A run terminated while its containers are being created leaves none behind.

Teardown must not run beside the provisioning that is still creating containers: what it did
not find (a container whose creation LXD had not finished) would come up after the run ended,
tracked by nothing. The real server, the real CLI and LXD, as in test_deploy.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from stratuslab.cloud.connectors.lxd_api import LxdApi
from tests.integration.conftest import Stratus

pytestmark = pytest.mark.lxd
APP = "tests/integration/apps/wait"
INSTANCES = 6
SETTLE = 20.0  # seconds: longer than creating a container and waiting for its address


def test_a_run_terminated_while_its_containers_are_created_leaves_none(
    stratus: Stratus, lxd: LxdApi, live_env: dict[str, str], prefix: str
) -> None:
    assert stratus("server", "start").returncode == 0
    api = _Api(live_env)
    before = {run["id"] for run in api.call("GET", "/api/runs?limit=500")}
    deployer = subprocess.Popen(
        [sys.executable, "-m", "stratuslab", "deploy", APP, "--multiplicity",
         f"waiter={INSTANCES}", "--keep-running", "never", "-o", "json"],
        env=live_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        run_id = _poll(
            lambda: next(
                (r["id"] for r in api.call("GET", "/api/runs?limit=500") if r["id"] not in before),
                None,
            ),
            "the run to start",
        )
        # Terminate at once: the orchestrator has just begun creating the containers.
        _poll(lambda: api.run(run_id)["state"] == "Provisioning", "Provisioning", every=0.005)
        api.call("DELETE", f"/api/runs/{run_id}")
        _poll(lambda: api.run(run_id)["state"] == "Cancelled", "the run to end Cancelled")
        out, err = deployer.communicate(timeout=120)
    finally:
        if deployer.poll() is None:
            deployer.kill()
            deployer.communicate()
    assert json.loads(out)["state"] == "Cancelled", err[-2000:]
    # A container whose creation was under way would come up now: give it the time to.
    events = [e["message"] for e in api.call("GET", f"/api/runs/{run_id}/events")]
    deadline = time.monotonic() + SETTLE
    while time.monotonic() < deadline:
        assert _leftovers(lxd, run_id, prefix) == [], events
        time.sleep(1)


def _leftovers(lxd: LxdApi, run_id: str, prefix: str) -> list[str]:
    """Containers of the run: by its tag, or by the name the orchestrator gives them."""
    return [
        i["name"]
        for i in lxd.get("/1.0/instances", recursion=1)
        if (i.get("config") or {}).get("user.stratus.run") == run_id
        or i["name"].startswith(f"{prefix}-{run_id[:8]}-")
    ]


class _Api:
    """The server's JSON API with the site token, without a CLI start-up per request."""

    def __init__(self, env: dict[str, str]) -> None:
        self.base = f"http://127.0.0.1:{env['STRATUS_SERVER_PORT']}"
        token = (Path(env["STRATUS_DATA_DIR"]) / "api-token").read_text().strip()
        self.headers = {"Authorization": f"Bearer {token}", "X-Stratus-User": env["STRATUS_USER"]}

    def call(self, method: str, path: str) -> Any:
        request = urllib.request.Request(self.base + path, method=method, headers=self.headers)
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read() or b"null")

    def run(self, run_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.call("GET", f"/api/runs/{run_id}")
        return found


def _poll(check: Any, what: str, timeout: float = 180, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")
