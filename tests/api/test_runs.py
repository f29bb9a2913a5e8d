"""Runs through the API on the fake cloud: the state machine, barriers, runtime parameters,
aborts, policies, timeouts, dead nodes, and that nothing outlives its run. The same behaviour is
proven with real nodes on LXD in tests/integration/test_deploy.py."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from stratuslab.api.app import create_app
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.config import Settings
from stratuslab.errors import BackendError
from tests.deploy.support import (
    complete_all,
    nodes,
    push_app,
    start_run,
    state,
    wait_for_state,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("fake")


def states_seen(api: TestClient, run_id: str) -> list[str]:
    """Every state the run went to, in order, from its ``state`` events' fields (the message
    is for people and may change its wording)."""
    events = api.get(f"/api/runs/{run_id}/events").json()
    return [e["fields"]["state"] for e in events if e["kind"] == "state"]


def test_a_run_goes_through_every_state_and_leaves_nothing(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    push_app(deploy_api)
    run = start_run(deploy_api, tags=["ci", "nightly"])
    assert run["state"] == "Initializing" and run["module"] == "apps/demo/1"
    members = nodes(deploy_api, fake, run["id"], 3)
    assert sorted(members) == ["db.1", "web.1", "web.2"]
    view = deploy_api.get(f"/api/runs/{run['id']}").json()
    assert all(n["hostname"] and n["vmstate"] == "running" for n in view["nodes"])

    db = members["db.1"]
    assert db.get("ss:state").text == "Provisioning"
    complete_all(members, "Provisioning")
    wait_for_state(deploy_api, run["id"], "Executing")
    assert db.set("password", "s3cret").status_code == 200  # a bare name is the caller's own
    assert db.set("db.1:ready", "true").status_code == 200
    for web in ("web.1", "web.2"):  # the output reached the mapped input of every instance
        assert members[web].get("db_password").text == "s3cret"
        assert members[web].get(f"{web}:db_password").text == "s3cret"
        assert members[web].get(f"{web}:greeting").text == "hello"
    complete_all(members, "Executing")
    wait_for_state(deploy_api, run["id"], "SendingReports")
    for member in members.values():
        upload = deploy_api.put(
            f"/api/runs/{run['id']}/reports/{member.name}",
            content=b"\x1f\x8b fake",
            headers=member.headers,
        )
        assert upload.status_code == 201
    complete_all(members, "SendingReports")
    wait_for_state(deploy_api, run["id"], "Ready")
    complete_all(members, "Ready")
    wait_for_state(deploy_api, run["id"], "Done")

    seen = states_seen(deploy_api, run["id"])
    assert seen == ["Provisioning", "Executing", "SendingReports", "Ready", "Finalizing", "Done"]
    assert fake.list_instances(tags={"run": run["id"]}) == []
    instances = deploy_api.get("/api/instances", params={"gone": True}).json()
    assert {i["state"] for i in instances if i["run_id"] == run["id"]} == {"gone"}
    reports = deploy_api.get(f"/api/runs/{run['id']}/reports").json()
    assert [r["node_instance"] for r in reports] == ["db.1", "web.1", "web.2"]
    final = deploy_api.get(f"/api/runs/{run['id']}").json()
    assert (
        final["ended_at"] and final["tags"] == ["ci", "nightly"] and final["abort_reason"] is None
    )


def test_a_blocked_get_answers_the_moment_the_value_is_set(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    push_app(deploy_api)
    run = start_run(deploy_api)
    members = nodes(deploy_api, fake, run["id"], 3)
    answered: dict[str, float] = {}

    def blocked_get() -> None:
        reply = members["web.2"].get("web.2:db_password", wait=10)
        answered["at"] = time.monotonic()
        answered["value"] = reply.text  # type: ignore[assignment]

    waiter = threading.Thread(target=blocked_get)
    waiter.start()
    time.sleep(0.3)
    assert "at" not in answered
    set_at = time.monotonic()
    members["db.1"].set("db.1:password", "pw")
    waiter.join(timeout=10)
    assert answered["value"] == "pw"  # type: ignore[comparison-overlap]
    assert answered["at"] - set_at < 0.5
    assert members["web.1"].get("web.1:ready", wait=0.2).status_code == 412


def test_parameter_errors_follow_the_protocol(deploy_api: TestClient, fake: FakeConnector) -> None:
    push_app(deploy_api)
    run = start_run(deploy_api)
    members = nodes(deploy_api, fake, run["id"], 3)
    web = members["web.1"]
    assert web.get("web.1:nosuch").status_code == 404
    assert web.get("web.1:ready").status_code == 412
    assert web.get("db:hostname").text.startswith("10.99.")  # node:param means instance 1
    assert web.get("web:ids").text == "1,2" and web.get("web:multiplicity").text == "2"
    assert web.set("ss:state", "Done").status_code == 409
    assert web.set("web.1:ready", "x" * 5000).status_code == 422
    intruder = {"Authorization": "Bearer not-a-token"}
    assert deploy_api.get(f"/run/{run['id']}/ss:state", headers=intruder).status_code == 401
    # A run global nobody declared is a broken recipe, like an undeclared output.
    undeclared = web.set("ss:custom", "no module declares it")
    assert undeclared.status_code == 404 and "'ss:custom'" in undeclared.text
    reason = deploy_api.get(f"/api/runs/{run['id']}").json()["abort_reason"]
    assert reason == "web.1: ss-set of 'ss:custom', a parameter no module declares"


def test_setting_an_undeclared_output_aborts_the_run_naming_it(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    push_app(deploy_api)
    run = start_run(deploy_api)
    members = nodes(deploy_api, fake, run["id"], 3)
    answer = members["db.1"].set("db.1:passwrd", "oops")
    assert answer.status_code == 404 and "'db.1:passwrd'" in answer.text
    reason = deploy_api.get(f"/api/runs/{run['id']}").json()["abort_reason"]
    assert reason == "db.1: ss-set of 'db.1:passwrd', a parameter no module declares"


def test_abort_first_reason_wins_and_everything_fails_fast(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    push_app(deploy_api)
    run = start_run(deploy_api)
    members = nodes(deploy_api, fake, run["id"], 3)
    complete_all(members, "Provisioning")
    wait_for_state(deploy_api, run["id"], "Executing")
    assert members["web.2"].set("web.2:abort", "tests failed: 3 of 5").status_code == 200
    assert members["db.1"].set("db.1:abort", "a later reason").status_code == 200
    wait_for_state(deploy_api, run["id"], "SendingReports")
    refused = members["db.1"].get("ss:state")
    assert refused.status_code == 409 and refused.text == "web.2: tests failed: 3 of 5"
    assert members["db.1"].set("db.1:ready", "true").status_code == 409
    assert members["db.1"].get("ss:state", ignoreabort="true").text == "SendingReports"
    assert members["db.1"].get("db.1:abort", ignoreabort="true").text == "db.1: a later reason"
    complete_all(members, "SendingReports")  # reports are still collected
    wait_for_state(deploy_api, run["id"], "Aborted")
    assert fake.list_instances(tags={"run": run["id"]}) == []
    assert "Ready" not in states_seen(deploy_api, run["id"])


def test_a_completion_for_a_state_the_run_left_is_refused(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    push_app(deploy_api)
    run = start_run(deploy_api)
    members = nodes(deploy_api, fake, run["id"], 3)
    members["web.1"].set("web.1:abort", "boom")
    wait_for_state(deploy_api, run["id"], "SendingReports")
    late = members["db.1"].complete("Executing")
    assert late.status_code == 409 and "the run is in SendingReports" in late.text


@pytest.mark.parametrize(("policy", "aborted", "kept"), [
    ("on-success", False, True), ("on-success", True, False), ("on-error", True, True),
    ("on-error", False, False), ("always", False, True), ("never", False, False),
])  # fmt: skip
def test_keep_running_policies(
    deploy_api: TestClient, fake: FakeConnector, policy: str, aborted: bool, kept: bool
) -> None:
    push_app(deploy_api)
    run = start_run(deploy_api, keep_running=policy)
    members = nodes(deploy_api, fake, run["id"], 3)
    if aborted:
        members["db.1"].set("db.1:abort", "broken")
        wait_for_state(deploy_api, run["id"], "SendingReports")
    else:
        for state_name in ("Provisioning", "Executing", "SendingReports"):
            wait_for_state(deploy_api, run["id"], state_name)
            complete_all(members, state_name)
    complete_all(members, "SendingReports") if aborted else None
    if kept:
        wait_for_state(deploy_api, run["id"], "Ready")
        if not aborted:
            complete_all(members, "Ready")
        time.sleep(0.3)
        assert state(deploy_api, run["id"]) == "Ready"
        assert len(fake.list_instances(tags={"run": run["id"]})) == 3
        assert deploy_api.delete(f"/api/runs/{run['id']}").status_code == 200
    elif not aborted:
        wait_for_state(deploy_api, run["id"], "Ready")
        complete_all(members, "Ready")
    wait_for_state(deploy_api, run["id"], "Aborted" if aborted else "Done")
    assert fake.list_instances(tags={"run": run["id"]}) == []


def test_terminating_before_ready_cancels(deploy_api: TestClient, fake: FakeConnector) -> None:
    push_app(deploy_api)
    run = start_run(deploy_api)
    nodes(deploy_api, fake, run["id"], 3)
    assert deploy_api.delete(f"/run/{run['id']}").status_code == 204
    wait_for_state(deploy_api, run["id"], "Cancelled")
    assert fake.list_instances(tags={"run": run["id"]}) == []
    assert deploy_api.delete(f"/api/runs/{run['id']}").status_code == 409


def test_a_run_that_overruns_its_timeout_is_aborted_and_torn_down(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    push_app(deploy_api)
    run = start_run(deploy_api, timeout_s=1)
    nodes(deploy_api, fake, run["id"], 3)  # nobody completes anything: a hanging recipe
    wait_for_state(deploy_api, run["id"], "Aborted", timeout=20)
    final = deploy_api.get(f"/api/runs/{run['id']}").json()
    assert final["timed_out"] is True
    assert final["abort_reason"].startswith("the run timed out after 1 s in ")
    assert fake.list_instances(tags={"run": run["id"]}) == []


def test_a_node_whose_machine_dies_aborts_the_run(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    push_app(deploy_api)
    run = start_run(deploy_api)
    members = nodes(deploy_api, fake, run["id"], 3)
    complete_all(members, "Provisioning")
    wait_for_state(deploy_api, run["id"], "Executing")
    victim = next(
        i
        for i in fake.list_instances(tags={"run": run["id"]})
        if i.tags["node-instance"] == "web.2"
    )
    fake.ex_vanish(victim.name)
    wait_until(
        lambda: deploy_api.get(f"/api/runs/{run['id']}").json()["abort_reason"], what="the abort"
    )
    reason = deploy_api.get(f"/api/runs/{run['id']}").json()["abort_reason"]
    assert reason.startswith("web.2: its machine i-") and "is gone" in reason
    complete_all({k: v for k, v in members.items() if k != "web.2"}, "SendingReports")
    wait_for_state(deploy_api, run["id"], "Aborted")  # without waiting for the dead node
    assert fake.list_instances(tags={"run": run["id"]}) == []


def test_provisioning_failures_within_the_allowance_remove_the_instance(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    app = push_app_with_failures(deploy_api, allowed=1)
    fake.ex_fail_next("create", BackendError("LXD: no space left"))
    run = start_run(deploy_api, module=app)

    def settled() -> dict[str, Any] | None:
        view: dict[str, Any] = deploy_api.get(f"/api/runs/{run['id']}").json()
        provisioning = sorted(n["provisioning"] for n in view["nodes"])
        return view if provisioning == ["failed", "ready"] else None

    view = wait_until(settled, what="one instance failed, the other running")
    assert [n["removed"] for n in view["nodes"] if n["provisioning"] == "failed"] == [True]
    removed = next(n["name"] for n in view["nodes"] if n["removed"])
    assert view["abort_reason"] is None
    assert len(fake.list_instances(tags={"run": run["id"]})) == 1
    params = deploy_api.get(f"/api/runs/{run['id']}/params").json()
    assert params["web:multiplicity"] == "1"
    assert params["web:ids"] == ("2" if removed == "web.1" else "1")


def test_provisioning_failures_beyond_the_allowance_abort(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    push_app(deploy_api)
    fake.ex_fail_next("create", BackendError("LXD: no space left"))
    run = start_run(deploy_api)
    reason = wait_until(
        lambda: deploy_api.get(f"/api/runs/{run['id']}").json()["abort_reason"], what="abort"
    )
    assert "instance(s) failed to start (0 allowed): LXD: no space left" in reason


def test_a_new_server_carries_on_runs_left_by_one_that_stopped(
    settings: Settings, fake: FakeConnector
) -> None:
    """The state lives in the store: a second server picks the run up where the first left it.
    (A server killed with SIGKILL is tested on LXD, in tests/integration/test_deploy.py.)"""
    overrides = settings.with_overrides(token="test-token", report_grace_s=1)
    headers = {"Authorization": "Bearer test-token"}
    with TestClient(create_app(overrides), headers=headers) as first:
        push_app(first)
        run = start_run(first)
        members = nodes(first, fake, run["id"], 3)
        complete_all(members, "Provisioning")
        wait_for_state(first, run["id"], "Executing")
    with TestClient(create_app(overrides), headers=headers) as second:
        for member in members.values():
            member.api = second
        for state_name in ("Executing", "SendingReports", "Ready"):
            wait_for_state(second, run["id"], state_name)
            complete_all(members, state_name)
        wait_for_state(second, run["id"], "Done")
    assert fake.list_instances(tags={"run": run["id"]}) == []


def push_app_with_failures(api: TestClient, *, allowed: int) -> str:
    app = f"""kind: application
nodes:
  web:
    component: apps/web
    multiplicity: 2
    max-provisioning-failures: {allowed}
    parameters:
      db_password: "'fixed'"
"""
    stored = push_app(api, app=app, path="tolerant/app")
    return f"{stored['path']}/{stored['version']}"


def test_a_teardown_left_undone_by_a_dead_server_is_finished_by_the_next(
    settings: Settings, fake: FakeConnector
) -> None:
    """The first server records Finalizing and dies before tearing down (simulated by writing
    the state as its last act); the next one finds the run and destroys its instances."""
    from sqlalchemy import update

    from stratuslab.db.models import RunRecord
    from stratuslab.db.session import engine_for, session_scope

    overrides = settings.with_overrides(token="test-token", report_grace_s=1)
    headers = {"Authorization": "Bearer test-token"}
    with TestClient(create_app(overrides), headers=headers) as first:
        push_app(first)
        run = start_run(first, keep_running="always")
        nodes(first, fake, run["id"], 3)
    with session_scope(engine_for(overrides.database_url)) as session:
        session.execute(
            update(RunRecord)
            .where(RunRecord.id == run["id"])
            .values(state="Finalizing", claimed_by="elsewhere:1:1")
        )
    assert len(fake.list_instances(tags={"run": run["id"]})) == 3
    with TestClient(create_app(overrides), headers=headers) as second:
        wait_for_state(second, run["id"], "Done")
    assert fake.list_instances(tags={"run": run["id"]}) == []
