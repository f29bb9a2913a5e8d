"""Who a barrier waits for, on the fake cloud: a node instance whose machine was never made is
not waited for, and a node instance counts only once its machine is recorded as running, as
it is when a killed server's half-made machines are adopted by the next."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from stratuslab.api.app import create_app
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.config import Settings
from stratuslab.db.models import InstanceRecord, NodeInstanceRecord, RuntimeParameterRecord
from stratuslab.db.session import session_scope
from stratuslab.errors import BackendError
from stratuslab.principal import SERVER
from stratuslab.services import Services
from tests.deploy.support import Node, complete_all, nodes, push_app, start_run, wait_for_state
from tests.support import wait_until

BARRIERS = ["Provisioning", "Executing", "SendingReports", "Ready"]


@pytest.fixture
def patient_api(settings: Settings, fake: FakeConnector) -> Iterator[TestClient]:
    """The deployment engine on the fake cloud, waiting two minutes for the reports of an
    aborted run: waiting for a node that never answers would outlast any test's patience."""
    app = create_app(settings.with_overrides(token="test-token", report_grace_s=120))
    with TestClient(app, headers={"Authorization": "Bearer test-token"}) as client:
        yield client


def services_of(api: TestClient) -> Services:
    return api.app.state.services  # type: ignore[attr-defined,no-any-return]


def members(api: TestClient, fake: FakeConnector, run_id: str) -> dict[str, Node]:
    """The run's node instances that have a machine on the fake backend, with the tokens their
    user-data carries, whether or not their machine is recorded as running yet."""
    found = {}
    for instance in fake.list_instances(tags={"run": run_id}):
        user_data = instance.extra["user_data"]
        config = json.loads(user_data.split("'STRATUS_AGENT_CONF'\n", 1)[1].split("\n", 1)[0])
        name = config["node_instance"]
        found[name] = Node(api, run_id, name, config["token"])
    return found


def node_view(api: TestClient, run_id: str, name: str) -> dict[str, Any]:
    (found,) = [n for n in api.get(f"/api/runs/{run_id}").json()["nodes"] if n["name"] == name]
    return found  # type: ignore[no-any-return]


def kinds(api: TestClient, run_id: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in api.get(f"/api/runs/{run_id}/events").json() if e["kind"] == kind]


@pytest.fixture
def failing_later(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[set[str], threading.Event]]:
    """Node instances whose machine is never made: its creation waits until the event is set,
    then fails (so that the others are up when it does; a create that fails at once, as
    ``ex_fail_next`` makes it, may abort the run before the others are recorded running)."""
    names: set[str] = set()
    release = threading.Event()
    create = FakeConnector.create

    def failing(self: FakeConnector, spec: Any) -> Any:
        if spec.tags.get("node-instance") in names:
            release.wait(30)
            raise BackendError("LXD: no space left")
        return create(self, spec)

    monkeypatch.setattr(FakeConnector, "create", failing)
    try:
        yield names, release
    finally:
        release.set()  # never leave the orchestrator's thread waiting


def test_a_node_instance_that_never_got_a_machine_is_not_waited_for_in_sending_reports(
    patient_api: TestClient, fake: FakeConnector, failing_later: tuple[set[str], threading.Event]
) -> None:
    api = patient_api
    names, release = failing_later
    names.add("db.1")
    push_app(api)  # db, web.1, web.2: no provisioning failure allowed
    run_id = start_run(api)["id"]

    def others_up() -> dict[str, Node] | None:
        found = members(api, fake, run_id)
        ready = [n["provisioning"] for n in api.get(f"/api/runs/{run_id}").json()["nodes"]]
        return found if sorted(found) == ["web.1", "web.2"] and ready.count("ready") == 2 else None

    reporting = wait_until(others_up, what="web.1 and web.2 running, db.1's machine not made")
    complete_all(reporting, "Provisioning")  # the barrier still waits for db.1
    release.set()
    aborted = wait_until(
        lambda: api.get(f"/api/runs/{run_id}").json()["abort_reason"], what="the abort"
    )
    assert aborted == "node db: 1 instance(s) failed to start (0 allowed): LXD: no space left"
    wait_for_state(api, run_id, "SendingReports")  # an abort goes straight there
    db = node_view(api, run_id, "db.1")
    assert (db["provisioning"], db["hostname"]) == ("failed", None)

    complete_all(reporting, "SendingReports")
    # Waiting for db.1 would last report_grace_s (120 s), far beyond this wait.
    wait_for_state(api, run_id, "Aborted", timeout=20)
    assert kinds(api, run_id, "lost") == []  # nobody was waited for until given up on
    assert [e["fields"]["state"] for e in kinds(api, run_id, "state")] == [
        "Provisioning",
        "SendingReports",
        "Finalizing",
        "Aborted",
    ]
    completed = {(e["node_instance"], e["fields"]["state"]) for e in kinds(api, run_id, "complete")}
    assert ("web.1", "SendingReports") in completed and ("web.2", "SendingReports") in completed
    assert fake.list_instances(tags={"run": run_id}) == []


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[set[str], threading.Event]]:
    """Node instances whose machine, once created, waits for its address until the event is
    set: the orchestrator is mid-creation, the node instance recorded ``creating``."""
    names: set[str] = set()
    release = threading.Event()
    wait_for_address = FakeConnector.wait_for_address

    def holding(self: FakeConnector, name: str, timeout: float) -> Any:
        if self.get(name).tags.get("node-instance") in names:
            release.wait(30)
        return wait_for_address(self, name, timeout)

    monkeypatch.setattr(FakeConnector, "wait_for_address", holding)
    try:
        yield names, release
    finally:
        release.set()  # never leave the orchestrator's thread waiting


def test_a_barrier_counts_a_node_instance_once_its_machine_is_recorded_running(
    deploy_api: TestClient, fake: FakeConnector, held: tuple[set[str], threading.Event]
) -> None:
    api = deploy_api
    names, release = held
    names.add("db.1")
    push_app(api)
    run_id = start_run(api)["id"]

    def created() -> dict[str, Node] | None:
        found = members(api, fake, run_id)  # db.1's machine exists; it waits for its address
        ready = [n["provisioning"] for n in api.get(f"/api/runs/{run_id}").json()["nodes"]]
        return found if len(found) == 3 and ready.count("ready") == 2 else None

    three = wait_until(created, what="two machines running, db.1's being made")
    assert node_view(api, run_id, "db.1")["provisioning"] == "creating"
    complete_all(three, "Provisioning")  # db.1's agent is faster than the server's record
    view = services_of(api).runs.view(run_id, caller=SERVER)
    assert view["state"] == "Provisioning" and view["waiting"] == 1
    db = node_view(api, run_id, "db.1")
    assert (db["provisioning"], db["completed"], db["hostname"]) == (
        "creating",
        "Provisioning",
        None,
    )

    release.set()
    wait_for_state(api, run_id, "Executing")
    db = node_view(api, run_id, "db.1")
    assert db["provisioning"] == "ready" and db["hostname"]
    order = [
        (e["kind"], e["node_instance"], e["fields"].get("state"))
        for e in api.get(f"/api/runs/{run_id}/events").json()
        if e["node_instance"] == "db.1" or e["kind"] == "state"
    ]
    completed = order.index(("complete", "db.1", "Provisioning"))
    provisioned = order.index(("provisioned", "db.1", None))
    assert completed < provisioned < order.index(("state", None, "Executing"))


@pytest.mark.parametrize("state", ["Executing", "SendingReports", "Ready"])
def test_a_machine_a_dead_server_left_half_recorded_is_adopted_by_the_next_round(
    deploy_api: TestClient, fake: FakeConnector, state: str
) -> None:
    """The server was killed between creating web.2's machine and recording it as running:
    the node instance is left ``creating``, its instance ``pending`` with no address, its
    hostname unset. The next supervision round adopts the machine whatever state the run is
    in, and the barrier that web.2 already completed moves on."""
    api = deploy_api
    services = services_of(api)
    push_app(api)
    run_id = start_run(api)["id"]
    everyone = nodes(api, fake, run_id, 3)
    for before in BARRIERS[: BARRIERS.index(state)]:
        wait_for_state(api, run_id, before)
        complete_all(everyone, before)
    wait_for_state(api, run_id, state)
    services.supervisor.stop()  # no round until the test asks for one
    instance_id = node_view(api, run_id, "web.2")["instance_id"]
    with session_scope(services.engine) as session:
        session.execute(
            update(NodeInstanceRecord)
            .where(NodeInstanceRecord.run_id == run_id, NodeInstanceRecord.name == "web.2")
            .values(provisioning="creating")
        )
        session.execute(
            update(RuntimeParameterRecord)
            .where(
                RuntimeParameterRecord.run_id == run_id,
                RuntimeParameterRecord.key == "web.2:hostname",
            )
            .values(value=None, set_at=None)
        )
        session.execute(
            update(InstanceRecord)
            .where(InstanceRecord.id == instance_id)
            .values(state="pending", addresses=[], started_at=None)
        )

    complete_all(everyone, state)  # web.2 too, while it is recorded creating
    view = services.runs.view(run_id, caller=SERVER)
    assert view["state"] == state and view["waiting"] == 1

    services.supervisor.round()
    adopted = wait_until(
        lambda: (n := node_view(api, run_id, "web.2"))["provisioning"] == "ready" and n,
        what="web.2 adopted",
    )
    assert adopted["hostname"] and adopted["instance_id"] == instance_id
    assert adopted["vmstate"] == "running"
    after = BARRIERS[BARRIERS.index(state) + 1] if state != "Ready" else "Finalizing"
    wait_for_state(api, run_id, after)
    assert api.get(f"/api/runs/{run_id}").json()["abort_reason"] is None
    (record,) = [i for i in api.get("/api/instances").json() if i["id"] == instance_id]
    assert record["state"] == "running" and record["addresses"] == [adopted["hostname"]]


@pytest.fixture
def slow_to_boot(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[set[str], threading.Event]]:
    """Node instances whose machine is being made until the event is set: the instance
    exists on the backend but gets no address before. db.1's creation fails at once."""
    names: set[str] = set()
    release = threading.Event()
    create, wait_for_address = FakeConnector.create, FakeConnector.wait_for_address

    def failing(self: FakeConnector, spec: Any) -> Any:
        if spec.tags.get("node-instance") == "db.1":
            raise BackendError("LXD: no space left")
        return create(self, spec)

    def slow(self: FakeConnector, name: str, timeout: float) -> Any:
        if self.get(name).tags.get("node-instance") in names:
            release.wait(30)
        return wait_for_address(self, name, timeout)

    monkeypatch.setattr(FakeConnector, "create", failing)
    monkeypatch.setattr(FakeConnector, "wait_for_address", slow)
    try:
        yield names, release
    finally:
        release.set()


def test_the_reports_of_machines_on_their_way_when_the_run_aborts_are_still_collected(
    patient_api: TestClient, fake: FakeConnector, slow_to_boot: tuple[set[str], threading.Event]
) -> None:
    """db.1's machine fails at once while web.1 and web.2 are still being made: the run aborts
    to SendingReports, and waits for the reports of the two whose machines are on their way
    (their agents will boot and send them), not for db.1, which never got one."""
    api = patient_api
    names, release = slow_to_boot
    names.update({"web.1", "web.2"})
    push_app(api)
    run_id = start_run(api)["id"]
    wait_until(lambda: api.get(f"/api/runs/{run_id}").json()["abort_reason"], what="db.1's failure")
    wait_for_state(api, run_id, "SendingReports")
    creating = {
        n["name"]: n["provisioning"] for n in api.get(f"/api/runs/{run_id}").json()["nodes"]
    }
    assert creating == {"db.1": "failed", "web.1": "creating", "web.2": "creating"}
    assert api.get(f"/api/runs/{run_id}").json()["waiting"] == 2  # the two on their way
    release.set()  # they boot; their agents run SendingReports
    up = wait_until(
        lambda: (found := members(api, fake, run_id)) and len(found) == 2 and found,
        what="web.1 and web.2 up",
    )
    wait_until(
        lambda: all(node_view(api, run_id, n)["provisioning"] == "ready" for n in up),
        what="both recorded running",
    )
    for node in up.values():
        answer = node.complete("SendingReports")
        assert answer.status_code == 200, answer.text  # their reports are still wanted
    wait_for_state(api, run_id, "Aborted", timeout=20)
    completed = {(e["node_instance"], e["fields"]["state"]) for e in kinds(api, run_id, "complete")}
    assert completed == {("web.1", "SendingReports"), ("web.2", "SendingReports")}
    assert kinds(api, run_id, "lost") == []
