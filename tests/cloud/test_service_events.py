"""What the instance service tells its event sink: every change it makes, once committed,
whoever asked (a user through the API, the deployment engine, reconciliation)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import delete, update
from sqlalchemy.engine import Engine

from stratuslab.cloud import events
from stratuslab.cloud.clouds import ConnectorPool
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.cloud.instances import InstanceService, InstanceView, RunRequest
from stratuslab.db.models import InstanceRecord, utcnow
from stratuslab.db.session import session_scope
from stratuslab.errors import BackendError
from stratuslab.hub import Hub

Told = list[tuple[str, str, str]]  # (instance id, what happened, its state then)


@pytest.fixture
def told() -> Told:
    return []


@pytest.fixture
def service(engine: Engine, fake: FakeConnector, told: Told) -> Iterator[InstanceService]:
    def sink(view: InstanceView, what: str) -> None:
        told.append((view.id, what, view.state))

    pool = ConnectorPool(engine)
    yield InstanceService(engine, owner="alice", connectors=pool, on_event=sink)
    pool.close()


def test_the_lifecycle_is_told_step_by_step(service: InstanceService, told: Told) -> None:
    (view,) = service.run(RunRequest(image="debian-12", name="box"))
    service.stop("box")
    service.start("box")
    service.kill("box")
    service.kill("box")  # already gone: nothing changes, nothing is told
    assert [(what, state) for vid, what, state in told if vid == view.id] == [
        ("recorded", "pending"),
        ("created", "pending"),
        ("running", "running"),
        ("stopped", "stopped"),
        ("started", "running"),
        ("gone", "gone"),
    ]


def test_a_failed_creation_is_told_as_failed(
    service: InstanceService, fake: FakeConnector, told: Told
) -> None:
    fake.ex_fail_next("create", BackendError("LXD: disk full"))
    with pytest.raises(BackendError):
        service.run(RunRequest(image="debian-12"))
    assert [(what, state) for _vid, what, state in told] == [
        ("recorded", "pending"),
        ("failed", "gone"),
    ]


def test_reconciliation_tells_what_it_found(
    service: InstanceService, fake: FakeConnector, engine: Engine, told: Told
) -> None:
    vanishing, adopted, revived, stopped = (
        service.run(RunRequest(image="debian-12", name=name))[0]
        for name in ("vanishing", "adopted", "revived", "stopped")
    )
    fake.ex_vanish(vanishing.name)
    fake.stop(stopped.name)
    with session_scope(engine) as session:
        session.execute(delete(InstanceRecord).where(InstanceRecord.id == adopted.id))
        session.execute(
            update(InstanceRecord)
            .where(InstanceRecord.id == revived.id)
            .values(state="gone", ended_at=utcnow())
        )
    told.clear()
    service.list_instances()
    assert sorted(told) == sorted(
        [
            (vanishing.id, "vanished", "gone"),
            (adopted.id, "recovered", "running"),
            (revived.id, "reappeared", "running"),
            (stopped.id, "changed", "stopped"),
        ]
    )
    told.clear()
    service.list_instances()
    assert told == []  # nothing changed since


def test_a_refresh_that_finds_a_change_tells_it(
    service: InstanceService, fake: FakeConnector, told: Told
) -> None:
    (view,) = service.run(RunRequest(image="debian-12", name="box"))
    told.clear()
    assert service.get("box").state == "running"
    fake.stop("box")
    assert service.get("box").state == "stopped"
    fake.ex_vanish("box")
    assert service.get("box").state == "gone"
    assert told == [(view.id, "changed", "stopped"), (view.id, "vanished", "gone")]


def test_a_sink_that_fails_does_not_undo_the_change(engine: Engine, fake: FakeConnector) -> None:
    def broken(view: InstanceView, what: str) -> None:
        raise RuntimeError("the hub is full")

    pool = ConnectorPool(engine)
    service = InstanceService(engine, owner="alice", connectors=pool, on_event=broken)
    (view,) = service.run(RunRequest(image="debian-12"))
    assert view.state == "running"
    assert service.kill(view.id).state == "gone"
    assert service.get(view.id, refresh=False).state == "gone"
    pool.close()


def test_without_a_sink_the_service_works_and_tells_no_one(instances: InstanceService) -> None:
    assert instances.on_event is None
    (view,) = instances.run(RunRequest(image="debian-12"))
    assert instances.kill(view.id).state == "gone"


def test_the_hub_publisher_sends_what_the_watch_stream_reads(
    service: InstanceService,
) -> None:
    hub = Hub()
    (view,) = service.run(RunRequest(image="debian-12", name="box"))
    events.publisher(hub)(view, "running")
    (event,) = hub.since(0, topics=[f"instance:{view.id}"])
    assert event.payload == {"what": "running", "instance": view.to_dict()}
