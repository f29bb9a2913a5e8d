"""Teardowns that fail, through the API and the CLI on the fake cloud: each failure is an event
with its reason, retried with back-off a bounded number of times; a teardown that gave up
waits in Finalizing, says why, tries again when the run is terminated again, and is ended by
``--force`` without losing track of what is left. Also: the instances a teardown kills are
heard by whoever watches them."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from stratuslab.api.app import create_app
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.cloud.instances import RunRequest
from stratuslab.config import Settings
from stratuslab.errors import BackendError
from stratuslab.services import build
from tests.deploy.support import Node, complete_all, nodes, push_app, start_run, wait_for_state
from tests.support import CliResult, cli_on, wait_until

ATTEMPTS = 3
BACKOFF = 0.2  # seconds before the second attempt, doubling after


@pytest.fixture
def teardown_api(settings: Settings, fake: FakeConnector) -> Iterator[TestClient]:
    """The deployment engine on the fake cloud, giving up a teardown after ATTEMPTS failed
    attempts BACKOFF, 2 * BACKOFF ... seconds apart (the site's defaults are 6 and 5 s: the
    orchestrator's configuration is set in the composition root, not through Settings)."""
    overrides = settings.with_overrides(token="test-token", report_grace_s=1)
    services = build(overrides, token="test-token")
    services.orchestrator.config = replace(
        services.orchestrator.config, teardown_attempts=ATTEMPTS, teardown_backoff=BACKOFF
    )
    app = create_app(overrides, services=services)
    with TestClient(app, headers={"Authorization": "Bearer test-token"}) as client:
        yield client


@pytest.fixture
def stuck(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Names of fake instances that cannot be destroyed, however often it is tried (the fake's
    own ``ex_fail_next`` fails one call only)."""
    names: set[str] = set()
    destroy = FakeConnector.destroy

    def refusing(self: FakeConnector, name: str) -> None:
        if name in names:
            raise BackendError(f"LXD: {name} is busy")
        destroy(self, name)

    monkeypatch.setattr(FakeConnector, "destroy", refusing)
    return names


def events(api: TestClient, run_id: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in api.get(f"/api/runs/{run_id}/events").json() if e["kind"] == kind]


def machine_of(fake: FakeConnector, run_id: str, node_instance: str) -> str:
    (name,) = [
        i.name
        for i in fake.list_instances(tags={"run": run_id})
        if i.tags["node-instance"] == node_instance
    ]
    return name


def to_finalizing(api: TestClient, run_id: str, members: dict[str, Node], how: str) -> None:
    """Bring the run to Finalizing the way ``how`` says: through every barrier, after an
    abort, or terminated before Ready."""
    if how == "cancelled":
        assert api.delete(f"/api/runs/{run_id}").status_code == 200
    elif how == "aborted":
        assert members["db.1"].set("db.1:abort", "the database is broken").status_code == 200
        wait_for_state(api, run_id, "SendingReports")
        complete_all(members, "SendingReports")
    else:
        for state in ("Provisioning", "Executing", "SendingReports", "Ready"):
            wait_for_state(api, run_id, state)
            complete_all(members, state)
    wait_for_state(api, run_id, "Finalizing")


@pytest.mark.parametrize(
    ("how", "ends"), [("done", "Done"), ("aborted", "Aborted"), ("cancelled", "Cancelled")]
)
def test_a_teardown_that_keeps_failing_gives_up_says_why_and_is_ended_by_force(
    teardown_api: TestClient,
    fake: FakeConnector,
    stuck: set[str],
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    how: str,
    ends: str,
) -> None:
    api = teardown_api
    stratus: Callable[..., CliResult] = cli_on(api, settings, capsys)
    push_app(api)
    run_id = start_run(api)["id"]
    members = nodes(api, fake, run_id, 3)
    busy = machine_of(fake, run_id, "web.2")
    stuck.add(busy)
    to_finalizing(api, run_id, members, how)

    def gave_up() -> dict[str, Any] | None:
        view: dict[str, Any] = api.get(f"/api/runs/{run_id}").json()
        teardown = view["teardown"]
        return view if teardown and teardown["attempts"] == ATTEMPTS else None

    view = wait_until(gave_up, what=f"{ATTEMPTS} failed teardown attempts")
    failed = events(api, run_id, "teardown-failed")
    assert [e["fields"]["attempt"] for e in failed] == [1, 2, 3]
    assert [e["fields"]["retry_in"] for e in failed] == [BACKOFF, 2 * BACKOFF, None]
    reasons = [e["fields"]["reason"] for e in failed]
    # The first attempt destroyed the two others; the busy one is all that later ones try.
    assert [r.split(": destroying i-")[0] for r in reasons] == [
        "1 of 3 instance(s) could not be destroyed",
        "1 of 1 instance(s) could not be destroyed",
        "1 of 1 instance(s) could not be destroyed",
    ]
    assert all(r.endswith(f"LXD: {busy} is busy") for r in reasons)
    reason = reasons[-1]
    assert view["state"] == "Finalizing"
    assert view["teardown"] == {"attempts": ATTEMPTS, "error": reason, "retry_at": None}

    time.sleep(1.5)  # a supervision round or more: a teardown that gave up is not tried again
    assert api.get(f"/api/runs/{run_id}").json()["state"] == "Finalizing"
    assert len(events(api, run_id, "teardown-failed")) == ATTEMPTS

    shown = stratus("run", "show", run_id)
    assert shown.code == 0, shown.err
    assert (
        f"teardown: {ATTEMPTS} attempt(s) failed: {reason}; gave up; "
        f"`stratus run terminate {run_id[:8]}` tries again, --force ends it"
    ) in shown.out

    # Terminating it again starts the teardown over; the machine is still busy.
    assert api.delete(f"/api/runs/{run_id}").status_code == 200
    wait_until(
        lambda: len(events(api, run_id, "teardown-failed")) > ATTEMPTS,
        what="a teardown attempt after terminating again",
    )
    assert events(api, run_id, "teardown-failed")[ATTEMPTS]["fields"]["attempt"] == 1
    assert api.get(f"/api/runs/{run_id}").json()["state"] == "Finalizing"

    forced = stratus("run", "terminate", "--force", run_id)
    assert forced.code == 0, forced.err
    assert f"run {run_id[:8]}: {ends}" in forced.out
    final = api.get(f"/api/runs/{run_id}").json()
    assert final["state"] == ends and final["ended_at"]
    assert [e["fields"]["state"] for e in events(api, run_id, "state")][-2:] == [
        "Finalizing",
        ends,
    ]

    # What could not be destroyed is still there, and still listed among the owner's
    # instances, with its run: nothing is untracked.
    left = {i.name for i in fake.list_instances(tags={"run": run_id})}
    assert left == {busy}
    listed = [i for i in api.get("/api/instances").json() if i["run_id"] == run_id]
    assert [(i["name"], i["state"], i["node_instance"]) for i in listed] == [
        (busy, "running", "web.2")
    ]


def test_a_teardown_that_fails_once_is_retried_and_the_run_ends_done(
    teardown_api: TestClient, fake: FakeConnector
) -> None:
    api = teardown_api
    push_app(api)
    run_id = start_run(api)["id"]
    members = nodes(api, fake, run_id, 3)
    fake.ex_fail_next("destroy", BackendError("LXD: the storage pool is busy"))
    to_finalizing(api, run_id, members, "done")
    wait_for_state(api, run_id, "Done")
    failed = events(api, run_id, "teardown-failed")
    assert [e["fields"]["attempt"] for e in failed] == [1]
    assert failed[0]["fields"]["retry_in"] == BACKOFF
    assert failed[0]["fields"]["reason"].endswith("LXD: the storage pool is busy")
    assert len(events(api, run_id, "torn-down")) == 1
    assert fake.list_instances(tags={"run": run_id}) == []
    instances = api.get("/api/instances", params={"gone": True}).json()
    assert {i["state"] for i in instances if i["run_id"] == run_id} == {"gone"}


def test_the_kills_of_a_terminated_run_reach_the_instance_watch(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    push_app(deploy_api)
    run_id = start_run(deploy_api)["id"]
    nodes(deploy_api, fake, run_id, 3)
    (watched,) = [
        i
        for i in deploy_api.get("/api/instances").json()
        if i["run_id"] == run_id and i["node_instance"] == "db.1"
    ]
    assert watched["state"] == "running"
    # A watch ends once every instance it follows has settled, and a running one has: a
    # pending instance of the same owner, watched beside it, keeps the stream open.
    services = deploy_api.app.state.services  # type: ignore[attr-defined]
    (companion,) = services.instances_of("alice").prepare(RunRequest(image="debian-12")).views
    lines: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def watch() -> None:
        ids = f"{watched['id']},{companion.id}"
        with deploy_api.stream("GET", f"/api/instances/watch?ids={ids}&timeout=30") as stream:
            for line in stream.iter_lines():
                if line.strip():
                    lines.put(json.loads(line))
        lines.put(None)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    first = [lines.get(timeout=30), lines.get(timeout=30)]  # the states as read: what follows
    assert [(c["instance"]["id"], c["what"]) for c in first if c] == [
        (watched["id"], "running"),
        (companion.id, "pending"),
    ]
    assert deploy_api.delete(f"/api/runs/{run_id}").status_code == 200  # is published
    wait_for_state(deploy_api, run_id, "Cancelled")
    gone = lines.get(timeout=30)
    assert gone is not None and gone["what"] == "gone"
    assert (gone["instance"]["id"], gone["instance"]["state"]) == (watched["id"], "gone")
    assert deploy_api.delete(f"/api/instances/{companion.id}").status_code == 200
    last = lines.get(timeout=30)
    assert last is not None and (last["instance"]["id"], last["what"]) == (companion.id, "gone")
    assert lines.get(timeout=30) is None  # every instance settled: the stream ended
    watcher.join(timeout=30)
