"""The server killed with SIGKILL early in Provisioning, on LXD: the next server carries the run
on. Node instances are then recorded ``creating`` (their instances recorded, their containers
being made), agents may complete Provisioning before anyone records their machine as running,
and the restarted server must adopt the containers that came up, make again those that did not,
and let the barrier count each node instance once its machine is recorded running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from stratuslab.cloud.connectors.lxd_api import LxdApi
from tests.integration.conftest import Stratus, cli_json
from tests.integration.test_deploy import APPS, leftovers, run_containers
from tests.support import wait_until

pytestmark = pytest.mark.lxd


class Site:
    """The server as a site's: a configured URL and token, so that a deployer waits for it to
    come back rather than starting one itself."""

    def __init__(self, stratus: Stratus, env: dict[str, str]) -> None:
        self.stratus = stratus
        cli_json(stratus, "server", "start")  # (which makes the token)
        self.url = f"http://127.0.0.1:{env['STRATUS_SERVER_PORT']}"
        self.token = (Path(env["STRATUS_DATA_DIR"]) / "api-token").read_text().strip()
        self.env = {**env, "STRATUS_SERVER_URL": self.url, "STRATUS_TOKEN": self.token}

    def get(self, path: str) -> Any:
        request = urllib.request.Request(
            self.url + path, headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())

    def runs(self) -> set[str]:
        return {r["id"] for r in self.get("/api/runs?all=true&limit=500")}


def machines_running(lxd: LxdApi, run_id: str) -> set[str]:
    """The node instances of ``run_id`` whose container LXD runs."""
    return {
        i["config"].get("user.stratus.node-instance", "")
        for i in run_containers(lxd, run_id)
        if i["status"] == "Running"
    }


@pytest.mark.parametrize("moment", ["recorded", "booting"])
def test_the_server_killed_early_in_provisioning_carries_the_run_on(
    stratus: Stratus, lxd: LxdApi, live_env: dict[str, str], moment: str
) -> None:
    """Killed the moment a node instance is recorded creating (its container is not made yet,
    or not started: the next server makes it again), or once the container of one recorded
    creating runs (the next server adopts it)."""
    site = Site(stratus, live_env)
    server = cli_json(stratus, "server", "status")
    assert server["running"] is True
    before = site.runs()
    deployer = subprocess.Popen(
        [sys.executable, "-m", "stratuslab", "deploy", f"{APPS}/tiny", "--keep-running", "never",
         "-o", "json"],
        env=site.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    run_id: str | None = None
    try:
        run_id = wait_until(
            lambda: next(iter(site.runs() - before), None), 120, "the run", interval=0.02
        )

        booted: list[str] = []  # recorded creating (and their container running), at the kill

        def creating() -> dict[str, dict[str, Any]] | None:
            found = {n["name"]: n for n in site.get(f"/api/runs/{run_id}")["nodes"]}
            waiting = {name for name, n in found.items() if n["provisioning"] == "creating"}
            if moment == "booting":
                waiting &= machines_running(lxd, run_id or "")
            booted[:] = sorted(waiting)
            return found if waiting else None

        seen = wait_until(creating, 120, "a node instance recorded creating", interval=0.02)
        os.kill(server["pid"], signal.SIGKILL)
        wait_until(
            lambda: not cli_json(stratus, "server", "status")["running"],
            30,
            "the killed server to stop answering",
            interval=0.2,
        )
        started = cli_json(stratus, "server", "start")
        assert started["outcome"] == "started" and started["pid"] != server["pid"], started
        out, err = deployer.communicate(timeout=600)
    finally:
        if deployer.poll() is None:
            deployer.kill()
            deployer.communicate()
            if run_id is not None:
                stratus("run", "terminate", "--no-wait", run_id)
    assert run_id is not None and deployer.returncode == 0, err[-3000:]
    assert json.loads(out)["state"] == "Done"
    view = site.get(f"/api/runs/{run_id}")
    assert view["state"] == "Done" and view["abort_reason"] is None
    assert sorted(n["name"] for n in view["nodes"]) == ["client.1", "client.2", "server.1"]
    assert all(n["hostname"] for n in view["nodes"]), view["nodes"]
    events = site.get(f"/api/runs/{run_id}/events")
    assert [e for e in events if e["kind"] in ("abort", "lost", "provisioning-failed")] == []
    assert [e["fields"]["state"] for e in events if e["kind"] == "state"] == [
        "Provisioning",
        "Executing",
        "SendingReports",
        "Ready",
        "Finalizing",
        "Done",
    ]
    if moment == "booting":  # the containers that ran are those the run went on with
        went_on = {n["name"]: n["instance_id"] for n in view["nodes"]}
        assert all(went_on[name] == seen[name]["instance_id"] for name in booted), (
            booted,
            seen,
            went_on,
        )
    assert leftovers(lxd, run_id) == []
