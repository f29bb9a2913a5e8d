"""`stratus deploy`, `stratus run` and `stratus module` in-process, on the fake cloud, with the
nodes simulated by a thread speaking the /run protocol (tests/integration has real nodes)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.config import Settings
from tests.deploy.junitdata import cases, checked
from tests.deploy.support import APP, BASE, DB, WEB, complete_all, nodes, wait_for_state, wait_until
from tests.support import CliResult, cli_on

Stratus = Callable[..., CliResult]


@pytest.fixture
def cli(deploy_api: TestClient, settings: Settings, capsys: pytest.CaptureFixture[str]) -> Stratus:
    return cli_on(deploy_api, settings, capsys)


@pytest.fixture
def repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's repository holding the test application, as the current directory."""
    (tmp_path / "apps/demo").mkdir(parents=True)
    for name, text in {
        "apps/base.yaml": BASE,
        "apps/db.yaml": DB,
        "apps/web.yaml": WEB,
        "apps/demo/module.yaml": APP,
    }.items():
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def drive(
    api: TestClient, fake: FakeConnector, *, abort: str | None = None
) -> Iterator[threading.Thread]:
    """Play the three node instances of the next run, in the background."""
    failures: list[BaseException] = []

    def play() -> None:
        try:
            run_id = wait_until(
                lambda: (r := api.get("/api/runs").json()) and r[0]["id"], what="a run"
            )
            members = nodes(api, fake, run_id, 3)
            complete_all(members, "Provisioning")
            wait_for_state(api, run_id, "Executing")
            members["db.1"].set("db.1:password", "pw")
            if abort:
                members["web.1"].set("web.1:abort", abort)
                wait_for_state(api, run_id, "SendingReports")
                complete_all(members, "SendingReports")
                return
            for state in ("Executing", "SendingReports", "Ready"):
                wait_for_state(api, run_id, state)
                complete_all(members, state)
        except BaseException as exc:  # surfaced by the test below
            failures.append(exc)

    thread = threading.Thread(target=play, daemon=True)
    thread.start()
    yield thread
    thread.join(timeout=30)
    if failures:
        raise failures[0]


def test_deploy_pushes_the_local_modules_runs_and_reports_done(
    cli: Stratus, deploy_api: TestClient, fake: FakeConnector, repository: Path
) -> None:
    nodes_played = drive(deploy_api, fake)
    next(nodes_played)
    result = cli(
        "deploy",
        "apps/demo",
        "--keep-running",
        "never",
        "--tags",
        "ci",
        "--param",
        "web:greeting=bonjour",
    )
    next(nodes_played, None)
    assert result.code == 0, result.err
    assert "pushed 4 module(s); deploying apps/demo/1" in result.err
    assert "Provisioning -> Executing" in result.err and "Finalizing -> Done" in result.err
    assert "Run " in result.out and "Done" in result.out
    run_id = deploy_api.get("/api/runs").json()[0]["id"]
    assert deploy_api.get(f"/run/{run_id}/web.2:greeting").text == "bonjour"
    assert fake.list_instances(tags={"run": run_id}) == []

    listed = json.loads(cli("run", "list", "-o", "json").out)
    assert [(r["id"], r["state"], r["tags"]) for r in listed] == [(run_id, "Done", ["ci"])]
    shown = json.loads(cli("run", "show", run_id[:8], "-o", "json").out)
    assert [n["name"] for n in shown["nodes"]] == ["db.1", "web.1", "web.2"]
    values = json.loads(cli("run", "params", run_id[:8], "--node", "web.1", "-o", "json").out)
    assert values["web.1:db_password"] == "pw" and all(k.startswith("web.1:") for k in values)
    kinds = [e["kind"] for e in json.loads(cli("run", "events", run_id[:8], "-o", "json").out)]
    assert kinds.count("complete") == 12 and kinds.count("provisioned") == 3


def test_an_unchanged_module_is_not_pushed_again(
    cli: Stratus, deploy_api: TestClient, repository: Path
) -> None:
    assert cli("module", "push", "apps/demo", "-o", "json").code == 0
    versions = {
        m["path"]: m["versions"] for m in json.loads(cli("module", "list", "-o", "json").out)
    }
    assert versions == {"apps/base": 1, "apps/db": 1, "apps/web": 1, "apps/demo": 1}
    assert (
        cli("module", "push", "apps/demo", "-o", "json").code == 0
    )  # an explicit push is a new version
    assert json.loads(cli("module", "show", "apps/demo", "-o", "json").out)["versions"] == [1, 2]
    shown = cli("module", "show", "apps/demo/1")
    assert "version 1 of 2" in shown.out and "kind: application" in shown.out


def test_an_aborted_run_exits_1_with_its_reason(
    cli: Stratus, deploy_api: TestClient, fake: FakeConnector, repository: Path
) -> None:
    nodes_played = drive(deploy_api, fake, abort="the tests failed: 2 of 7")
    next(nodes_played)
    result = cli("deploy", "apps/demo", "-o", "json")
    next(nodes_played, None)
    assert result.code == 1
    run = json.loads(result.out)
    assert run["state"] == "Aborted" and run["abort_reason"] == "web.1: the tests failed: 2 of 7"


def test_a_run_that_times_out_exits_2(
    cli: Stratus, deploy_api: TestClient, fake: FakeConnector, repository: Path
) -> None:
    result = cli(
        "deploy", "apps/demo", "--wait", "0.02", "-o", "json"
    )  # 1 s; nobody completes anything
    assert result.code == 2
    run = json.loads(result.out)
    assert run["timed_out"] is True and run["state"] == "Aborted"
    assert fake.list_instances(tags={"run": run["id"]}) == []


def test_a_malformed_module_is_refused_before_anything_is_pushed(
    cli: Stratus, deploy_api: TestClient, repository: Path
) -> None:
    (repository / "apps/web.yaml").write_text(WEB.replace("inputs:", "inputz:"))
    result = cli("deploy", "apps/demo")
    assert result.code == 65
    assert result.err.startswith("error: apps/web.yaml:3: unknown key 'inputz' in a component")
    assert deploy_api.get("/api/modules").json() == []
    assert cli("module", "check", "apps/demo").code == 65


def test_bad_options_are_explained(cli: Stratus, repository: Path) -> None:
    assert (
        "write it as --param NODE:NAME=VALUE"
        in cli("deploy", "apps/demo", "--param", "greeting").err
    )
    assert (
        "multiplicity 'many' is not a number"
        in cli("deploy", "apps/demo", "--multiplicity", "web=many").err
    )
    unknown = cli("deploy", "apps/demo", "--param", "web:nosuch=1")
    assert unknown.code == 65 and "nosuch" in unknown.err
    assert cli("deploy", "no/such/module").err.startswith("error: no module 'no/such/module'")


def test_an_aborted_run_still_writes_its_junit_report_before_exiting_1(
    cli: Stratus, deploy_api: TestClient, fake: FakeConnector, repository: Path
) -> None:
    nodes_played = drive(deploy_api, fake, abort="the tests failed: 2 of 7")
    next(nodes_played)
    target = repository / "results" / "junit.xml"
    target.parent.mkdir()
    result = cli("deploy", "apps/demo", "--junit", str(target))
    next(nodes_played, None)
    assert result.code == 1
    assert f"JUnit report in {target}" in result.err
    written = target.read_bytes()
    root = checked(written)
    failure = cases(root)["web.1 packages"].find("failure")  # the first phase it was to run
    assert failure is not None and failure.get("message") == "web.1: the tests failed: 2 of 7"
    assert [p.name for p in target.parent.iterdir()] == ["junit.xml"]  # nothing half-written

    run_id = deploy_api.get("/api/runs").json()[0]["id"]
    shown = cli("run", "junit", run_id[:8])
    assert (shown.code, shown.out.encode()) == (0, written)
    again = repository / "again.xml"
    assert cli("run", "junit", run_id[:8], "--output-file", str(again)).code == 0
    assert again.read_bytes() == written
    assert cli("run", "junit", "0000ffff").code != 0


def test_a_kept_run_aborted_by_a_machine_that_never_started_ends_the_deploy(
    cli: Stratus, deploy_api: TestClient, fake: FakeConnector, repository: Path
) -> None:
    """The failed node instance completes nothing: the deploy does not wait for it (it did,
    until its --wait ran out, as the server's barrier did not)."""
    from stratuslab.errors import BackendError
    from tests.deploy.support import Node

    fake.ex_fail_next("create", BackendError("LXD: No root device could be found"))
    failures: list[BaseException] = []

    def play() -> None:
        try:
            run_id = wait_until(
                lambda: (r := deploy_api.get("/api/runs").json()) and r[0]["id"], what="a run"
            )
            made = wait_until(
                lambda: len(found := fake.list_instances(tags={"run": run_id})) == 2 and found,
                what="the two machines that start",
            )
            members = {}
            for instance in made:
                conf = instance.extra["user_data"].split("'STRATUS_AGENT_CONF'\n", 1)[1]
                config = json.loads(conf.split("\n", 1)[0])
                name = config["node_instance"]
                members[name] = Node(deploy_api, run_id, name, config["token"])
            for state in ("SendingReports", "Ready"):
                wait_for_state(deploy_api, run_id, state)
                complete_all(members, state)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=play, daemon=True)
    thread.start()
    result = cli("deploy", "apps/demo", "--keep-running", "always", "--wait", "1", "-o", "json")
    thread.join(timeout=30)
    if failures:
        raise failures[0]
    assert result.code == 1
    run = json.loads(result.out)
    assert run["state"] == "Ready" and "No root device could be found" in run["abort_reason"]
