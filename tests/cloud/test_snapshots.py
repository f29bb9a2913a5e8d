"""Snapshots through the service: owner-checked, bounded, named safely."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.engine import Engine

from stratuslab.cloud.clouds import ConnectorPool
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.cloud.instances import InstanceService, RunRequest
from stratuslab.cloud.snapshots import Snapshots, default_name
from stratuslab.errors import CapacityExceeded, Conflict, Invalid, NotFound


def snapshots(engine: Engine, owner: str, *, limit: int = 32) -> Snapshots:
    pool = ConnectorPool(engine)
    service = InstanceService(engine, owner=owner, connectors=pool, name_prefix="t")
    return Snapshots(service, pool, limit=limit)


def test_another_users_instance_has_no_snapshots_to_take_list_or_restore(
    engine: Engine, fake: FakeConnector
) -> None:
    alice = snapshots(engine, "alice")
    (view,) = alice.instances.run(RunRequest(image="debian-12"))
    alice.take(view.id, "mine")
    bob = snapshots(engine, "bob")
    for call in (
        lambda: bob.take(view.id, "theirs"),
        lambda: bob.of(view.id),
        lambda: bob.restore(view.id, "mine"),
        lambda: bob.delete(view.id, "mine"),
    ):
        with pytest.raises(NotFound):
            call()
    assert [s.name for s in alice.of(view.id)] == ["mine"]  # bob changed nothing


def test_an_instance_holds_at_most_the_bound(engine: Engine, fake: FakeConnector) -> None:
    service = snapshots(engine, "alice", limit=2)
    (view,) = service.instances.run(RunRequest(image="debian-12"))
    service.take(view.id, "one")
    service.take(view.id, "two")
    with pytest.raises(CapacityExceeded, match="max_snapshots: 2") as over:
        service.take(view.id, "three")
    assert "snapshot delete" in str(over.value.hint)
    fake.create_snapshot(view.name, "stratus-publish-0000")  # the server's own: not counted
    service.delete(view.id, "one")
    service.take(view.id, "three")
    assert [s.name for s in service.of(view.id)] == ["two", "three"]


def test_names_are_checked_and_the_default_is_the_time(engine: Engine, fake: FakeConnector) -> None:
    service = snapshots(engine, "alice")
    (view,) = service.instances.run(RunRequest(image="debian-12"))
    for bad in ("", "Caps", "-x", "a/b", "x" * 64, "stratus-mine"):
        with pytest.raises(Invalid):
            service.take(view.id, bad)
    assert default_name(datetime(2025, 1, 31, 14, 25, 1, tzinfo=UTC)) == "20250131-142501"
    taken = service.take(view.id)
    assert taken.name == default_name(taken.created_at)
    with pytest.raises(Conflict, match="has a snapshot called"):
        service.take(view.id, taken.name)


def test_an_instance_that_is_gone_has_none(engine: Engine, fake: FakeConnector) -> None:
    service = snapshots(engine, "alice")
    (view,) = service.instances.run(RunRequest(image="debian-12"))
    service.take(view.id, "kept")
    service.instances.kill(view.id)
    assert service.of(view.id) == []
    with pytest.raises(Conflict, match="is gone"):
        service.take(view.id, "late")
