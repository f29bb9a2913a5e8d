"""Deployments end to end: the real CLI, the real server, real node agents on LXD.

The small applications under tests/integration/apps install no packages, so that each fault
test takes seconds; examples/webapp and examples/webapp-broken are the full story.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stratuslab.cloud.connectors.lxd_api import LxdApi
from tests.integration.conftest import Stratus, cli_json, destroy_container
from tests.support import wait_until

pytestmark = pytest.mark.lxd
APPS = "tests/integration/apps"


def deploy(
    stratus: Stratus, target: str, *args: str, timeout: float = 900
) -> tuple[int, dict[str, Any], str]:
    result = stratus("deploy", target, *args, "-o", "json", timeout=timeout)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout), result.stderr


def run_containers(lxd: LxdApi, run_id: str) -> list[dict[str, Any]]:
    """The LXD instances tagged with ``run_id``, whatever the store says."""
    found = lxd.get("/1.0/instances", recursion=1)
    return [i for i in found if (i.get("config") or {}).get("user.stratus.run") == run_id]


def leftovers(lxd: LxdApi, run_id: str) -> list[str]:
    return [i["name"] for i in run_containers(lxd, run_id)]


def params(stratus: Stratus, run_id: str, *more: str) -> dict[str, str | None]:
    return cli_json(stratus, "run", "params", run_id, *more)  # type: ignore[no-any-return]


def test_a_small_application_runs_every_recipe_and_wires_its_nodes(
    stratus: Stratus, lxd: LxdApi, tmp_path: Path
) -> None:
    # The default policy (on-success) keeps what ends well, as `make demo` relies on.
    code, run, _ = deploy(
        stratus,
        f"{APPS}/tiny",
        "--multiplicity",
        "client=3",
        "--param",
        "client:greeting=bonjour",
        "--get-reports",
        str(tmp_path),
    )
    try:
        assert code == 0, run
        assert run["state"] == "Ready" and run["abort_reason"] is None
        values = params(stratus, run["id"])
        token = values["server.1:token"]
        assert token and len(token) == 16
        assert (
            values["client.1:seen"] == token and values["client.2:seen"] == token
        )  # propagated outputs
        assert values["client.3:seen"] == token  # the instance --multiplicity added is wired too
        assert [values[f"client.{i}:greeted"] for i in (1, 2, 3)] == [
            f"bonjour from client {i}" for i in (1, 2, 3)
        ]  # --param reached every instance of the node
        assert values["client:multiplicity"] == "3" and values["client:ids"] == "1,2,3"
        assert values["client.1:unknown_key_exit"] == "7"  # ss-get of an unknown key: exit 7
        assert values["ss:url.service"] == f"http://{values['server.1:hostname']}:8000"
        assert values["server.1:statecustom"] == "token published"
        reports = tmp_path / run["id"]
        assert (reports / "server.1" / "reports" / "steps.txt").read_text().splitlines()[1:] == [
            "post-install ran",
            "deployment ran",
        ]
        assert (
            "no parameter 'server.1:no_such_key'"
            in (reports / "client.1" / "reports" / "unknown.err").read_text()
        )
        assert any(reports.joinpath("client.2", "logs").glob("*.log")), (
            "the agent's logs travel too"
        )
        logs = stratus("run", "logs", run["id"], "--node", "server.1")
        assert "published a token of 16 characters" in logs.stdout
        kept = run_containers(lxd, run["id"])
        assert sorted(i["config"]["user.stratus.node-instance"] for i in kept) == [
            "client.1",
            "client.2",
            "client.3",
            "server.1",
        ]
        assert {i["status"] for i in kept} == {"Running"}
    finally:
        terminated = stratus("run", "terminate", run["id"], "-o", "json")
    assert terminated.returncode == 0, terminated.stderr
    (ended,) = json.loads(terminated.stdout)
    assert ended["state"] == "Done" and ended["abort_reason"] is None
    assert leftovers(lxd, run["id"]) == []


def test_webapp_deploys_tests_and_tears_down(stratus: Stratus, lxd: LxdApi, tmp_path: Path) -> None:
    code, run, stderr = deploy(
        stratus, "examples/webapp", "--keep-running", "never", "--get-reports", str(tmp_path)
    )
    assert code == 0, (run.get("abort_reason"), stderr[-2000:])
    assert run["state"] == "Done"
    assert run["service_url"].startswith("http://10.")
    values = params(stratus, run["id"])
    assert run["service_url"] == values["ss:url.service"] == f"http://{values['lb.1:hostname']}"
    assert values["test.1:result"] == "passed"
    # The password (type: password) is masked, unless its owner asks; the recipes' output and
    # the run's events never show it.
    assert values["db.1:password"] == values["web.1:db_password"] == "********"
    shown = params(stratus, run["id"], "--show-secrets")
    password = shown["db.1:password"]
    assert password and len(password) == 20
    assert shown["web.1:db_password"] == password == shown["web.2:db_password"]
    logs = stratus("run", "logs", run["id"])
    events = stratus("run", "events", run["id"], "-o", "json")
    assert logs.returncode == 0 and events.returncode == 0
    assert password not in logs.stdout + logs.stderr + events.stdout
    report = (tmp_path / run["id"] / "test.1" / "reports" / "test-report.txt").read_text()
    assert "PASS: write and read back through the load balancer" in report
    assert "PASS: every web node answered" in report and "web.1" in report and "web.2" in report
    site = (tmp_path / run["id"] / "lb.1" / "reports" / "nginx-site.conf").read_text()
    for web in ("web.1", "web.2"):  # nginx balances over both web nodes, on their port
        assert f"server {values[f'{web}:hostname']}:{values[f'{web}:port']};" in site, site
        assert values[f"{web}:port"] == "8080"
    assert leftovers(lxd, run["id"]) == []


def test_webapp_broken_aborts_with_the_tests_message_and_still_reports(
    stratus: Stratus, lxd: LxdApi, tmp_path: Path
) -> None:
    code, run, _ = deploy(stratus, "examples/webapp-broken", "--get-reports", str(tmp_path))
    assert code == 1
    assert run["state"] == "Aborted"
    assert run["abort_reason"].startswith(
        "test.1: deployment recipe of examples/webapp-broken/broken-test exited"
    )
    assert "FAIL: item 'never-written' not found through http://" in run["abort_reason"]
    report = (tmp_path / run["id"] / "test.1" / "reports" / "test-report.txt").read_text()
    assert "FAIL: item 'never-written'" in report
    assert {p.name for p in (tmp_path / run["id"]).iterdir()} == {
        "db.1",
        "web.1",
        "web.2",
        "lb.1",
        "test.1",
    }
    assert leftovers(lxd, run["id"]) == []


def test_a_hanging_recipe_is_stopped_by_the_run_timeout(stratus: Stratus, lxd: LxdApi) -> None:
    started = time.monotonic()
    code, run, _ = deploy(stratus, f"{APPS}/hang", "--wait", "0.5")
    assert code == 2
    assert run["timed_out"] is True and run["state"] == "Aborted"
    assert run["abort_reason"] == "the run timed out after 30 s in Executing"
    assert time.monotonic() - started < 120
    reports = json.loads(stratus("run", "reports", run["id"], "-o", "json").stdout)
    assert [r["node_instance"] for r in reports] == ["stuck.1"]  # it was interrupted, and reported
    assert leftovers(lxd, run["id"]) == []


def test_setting_an_undeclared_output_aborts_naming_it(stratus: Stratus, lxd: LxdApi) -> None:
    code, run, _ = deploy(stratus, f"{APPS}/typo")
    assert code == 1
    assert (
        run["abort_reason"]
        == "sloppy.1: ss-set of 'sloppy.1:not_declared', a parameter no module declares"
    )
    assert params(stratus, run["id"])["sloppy.1:declared"] == "fine"
    assert leftovers(lxd, run["id"]) == []


def test_a_node_whose_container_is_killed_aborts_and_teardown_completes(
    stratus: Stratus, lxd: LxdApi, live_env: dict[str, str]
) -> None:
    with _waiting_in_executing(stratus, live_env) as (deployer, run_id):
        victim = next(
            i
            for i in run_containers(lxd, run_id)
            if i["config"].get("user.stratus.node-instance") == "waiter.2"
        )
        destroy_container(lxd, victim["name"])
        out, err = deployer.communicate(timeout=300)
    assert deployer.returncode == 1, err[-2000:]
    run = json.loads(out)
    assert run["state"] == "Aborted"
    reason = run["abort_reason"]
    # Killing is stop-then-delete: the supervisor may have seen either.
    assert reason.startswith("waiter.2: its machine i-"), reason
    assert reason.endswith(("is gone (deleted or killed)", "is stopped")), reason
    assert leftovers(lxd, run_id) == []


def test_the_server_killed_during_executing_carries_the_run_on(
    stratus: Stratus, lxd: LxdApi, live_env: dict[str, str]
) -> None:
    # The deployer talks to the server as to a site's (a configured URL), so that it waits for
    # the server to come back rather than starting one itself: only the test starts it again.
    cli_json(stratus, "server", "start")  # (which makes the token)
    token = (Path(live_env["STRATUS_DATA_DIR"]) / "api-token").read_text().strip()
    configured = {
        "STRATUS_SERVER_URL": f"http://127.0.0.1:{live_env['STRATUS_SERVER_PORT']}",
        "STRATUS_TOKEN": token,
    }
    with _waiting_in_executing(stratus, {**live_env, **configured}) as (deployer, run_id):
        killed = cli_json(stratus, "server", "status")
        assert killed["running"] is True
        os.kill(killed["pid"], signal.SIGKILL)
        wait_until(
            lambda: not cli_json(stratus, "server", "status")["running"],
            30,
            "the killed server to stop answering",
            interval=0.2,
        )
        started = cli_json(stratus, "server", "start")  # (the CLI would also start one itself)
        assert started["outcome"] == "started" and started["pid"] != killed["pid"], started
        _set_global(stratus, live_env, run_id, "go", "now")
        out, err = deployer.communicate(timeout=300)
    assert deployer.returncode == 0, err[-2000:]
    assert json.loads(out)["state"] == "Done"
    assert leftovers(lxd, run_id) == []


def _waiting_in_executing(stratus: Stratus, env: dict[str, str]) -> _deploying:
    """`stratus deploy` of the wait app in the background, entered once the run is in
    Executing, where its two waiter nodes wait for the run global ss:go."""
    return _deploying(
        stratus, env, f"{APPS}/wait", "--keep-running", "never", until_state="Executing"
    )


class _deploying:
    """`stratus deploy` in the background; yields (process, run id) once the run has reached
    ``until_state``. On the way out, a deployer still running is killed and its run
    terminated, so that a failed test leaves no node waiting until the run times out."""

    def __init__(
        self,
        stratus: Stratus,
        env: dict[str, str],
        target: str,
        *args: str,
        until_state: str | None = None,
    ) -> None:
        self.stratus, self.env, self.target, self.args = stratus, env, target, args
        self.until_state = until_state
        self.run_id: str | None = None

    def __enter__(self) -> tuple[subprocess.Popen[str], str]:
        env = self.stratus("server", "start")  # the server outlives the deploy under test
        assert env.returncode == 0, env.stderr
        before = {r["id"] for r in cli_json(self.stratus, "run", "list", "-n", "50")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stratuslab", "deploy", self.target, *self.args, "-o", "json"],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:

            def new_run() -> str | None:
                runs = cli_json(self.stratus, "run", "list", "-n", "50")
                return next((r["id"] for r in runs if r["id"] not in before), None)

            self.run_id = wait_until(new_run, 180, "the run to start", interval=0.5)
            if self.until_state is not None:
                wanted = self.until_state
                _wait_for(self.stratus, self.run_id, lambda run: run["state"] == wanted, wanted)
        except BaseException as exc:
            self.__exit__(type(exc))
            raise
        return self.process, self.run_id

    def __exit__(self, failed: type[BaseException] | None = None, *exc: object) -> None:
        running = self.process.poll() is None
        if running:
            self.process.kill()
            self.process.communicate()
        if (running or failed is not None) and self.run_id is not None:
            self.stratus("run", "terminate", "--no-wait", self.run_id)


def _wait_for(stratus: Stratus, run_id: str, condition: Callable[[Any], Any], what: str) -> None:
    wait_until(lambda: condition(cli_json(stratus, "run", "show", run_id)), 180, what, interval=0.5)


def _set_global(stratus: Stratus, env: dict[str, str], run_id: str, name: str, value: str) -> None:
    import urllib.request

    token = (Path(env["STRATUS_DATA_DIR"]) / "api-token").read_text().strip()
    request = urllib.request.Request(
        f"http://127.0.0.1:{env['STRATUS_SERVER_PORT']}/run/{run_id}/ss:{name}",
        data=value.encode(), method="PUT", headers={"Authorization": f"Bearer {token}"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 200


def test_a_scalable_run_grows_and_shrinks_with_its_hooks(stratus: Stratus, lxd: LxdApi) -> None:
    code, run, _ = deploy(stratus, f"{APPS}/scalable", "--mutable")
    assert code == 0 and run["state"] == "Ready"
    try:
        grown = stratus("run", "add", run["id"], "member", "-n", "1", "-o", "json")
        assert grown.returncode == 0, grown.stderr
        assert json.loads(grown.stdout)["added"] == ["member.2"]
        values = params(stratus, run["id"])
        assert values["member.2:joined"] == "installed"  # the new instance ran its recipes
        assert values["member.1:joined"] == "vm_add member member.2"  # the old one its hook
        assert len(leftovers(lxd, run["id"])) == 2

        shrunk = stratus("run", "remove", run["id"], "member", "2", "-o", "json")
        assert shrunk.returncode == 0, shrunk.stderr
        assert params(stratus, run["id"])["member.1:joined"] == "vm_remove member member.2"
        assert len(leftovers(lxd, run["id"])) == 1
    finally:
        stratus("run", "terminate", run["id"])
    assert leftovers(lxd, run["id"]) == []
