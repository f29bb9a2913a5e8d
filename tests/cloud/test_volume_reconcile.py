"""Reconciliation of volumes, both ways, as `volume list` runs it: what the backend lost is
gone, what the store lost is recorded again from its tags, pending records past the grace
are settled one way or the other, and a listing that fails leaves the store as it is."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import delete
from sqlalchemy.engine import Engine

from stratuslab.cloud.base import VolumeSpec
from stratuslab.cloud.clouds import ConnectorPool
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.cloud.volumes import VolumeService
from stratuslab.db.models import utcnow
from stratuslab.db.session import session_scope
from stratuslab.db.volume_models import VolumeRecord
from stratuslab.errors import BackendUnavailable
from tests.cloud.volume_support import GiB, instance, service


@pytest.fixture
def alice(engine: Engine, pool: ConnectorPool) -> VolumeService:
    return service(engine, pool, "alice")


def forget(engine: Engine, volume_id: str) -> None:
    """The store loses a volume's record (a restore from an old backup)."""
    with session_scope(engine) as session:
        session.execute(delete(VolumeRecord).where(VolumeRecord.id == volume_id))


def pending(engine: Engine, volume_id: str, *, age: timedelta) -> None:
    """A record left pending by a process that died, ``age`` ago."""
    then = utcnow() - age
    with session_scope(engine) as session:
        session.add(
            VolumeRecord(
                id=volume_id,
                owner="alice",
                name=volume_id.removeprefix("vol-"),
                live_name=volume_id.removeprefix("vol-"),
                cloud="local",
                backend_name=f"stratus-{volume_id}",
                size_bytes=GiB,
                state="pending",
                created_at=then,
                updated_at=then,
            )
        )


def test_a_volume_the_backend_lost_is_gone_and_its_name_free(
    alice: VolumeService, fake: FakeConnector
) -> None:
    lost = alice.create("data", size_bytes=GiB)
    kept = alice.create("kept", size_bytes=GiB)
    fake.ex_vanish_volume(f"stratus-{lost.id}")
    assert [v.id for v in alice.list()] == [kept.id]
    gone = alice.get(lost.id)
    assert (gone.state, gone.error) == ("gone", "deleted outside StratusLab")
    assert alice.create("data", size_bytes=GiB).state == "ready"
    shown = alice.create("shown", size_bytes=GiB)
    fake.ex_vanish_volume(f"stratus-{shown.id}")
    assert alice.get("shown").state == "gone"  # `volume show` finds out too


def test_a_volume_the_store_lost_is_recorded_again_from_its_tags(
    engine: Engine, alice: VolumeService, fake: FakeConnector
) -> None:
    lost = alice.create("data", size_bytes=2 * GiB, public=True, run_id="run-7")
    forget(engine, lost.id)
    report = alice.reconcile("local")
    assert report.recovered == [lost.id] and report.vanished == []
    found = alice.get("data")
    assert (found.id, found.owner, found.size_bytes, found.public, found.run_id) == (
        lost.id,
        "alice",
        2 * GiB,
        True,
        "run-7",
    )
    assert found.recovered and found.state == "ready"
    assert alice.attach("data", instance(alice).id).attachments  # usable as before
    assert alice.reconcile("local").changed is False  # once is enough


def test_a_recovered_volume_whose_name_was_taken_meanwhile_is_reached_by_its_id(
    engine: Engine, alice: VolumeService
) -> None:
    lost = alice.create("data", size_bytes=GiB)
    forget(engine, lost.id)
    taker = alice.create("data", size_bytes=GiB)  # the name is free in the store
    assert alice.reconcile("local").recovered == [lost.id]
    again = alice.get(lost.id)
    assert again.recovered and "reach this one by id" in str(again.error)
    assert alice.get("data").id == taker.id
    assert sorted(v.id for v in alice.list()) == sorted([lost.id, taker.id])


def test_pending_records_past_the_grace_are_settled_and_young_ones_left_alone(
    engine: Engine, alice: VolumeService, fake: FakeConnector
) -> None:
    pending(engine, "vol-00000001", age=timedelta(minutes=2))  # made, never said so
    fake.create_volume(VolumeSpec("stratus-vol-00000001", GiB, {"id": "vol-00000001"}))
    pending(engine, "vol-00000002", age=timedelta(minutes=2))  # never made
    pending(engine, "vol-00000003", age=timedelta(seconds=5))  # being made right now
    report = alice.reconcile("local")
    assert (report.settled, report.failed) == (["vol-00000001"], ["vol-00000002"])
    assert alice.get("vol-00000001").state == "ready"
    never = alice.get("vol-00000002")
    assert (never.state, never.error) == ("gone", "never created")
    assert alice.get("vol-00000003").state == "pending"


def test_a_volume_recorded_gone_that_still_exists_is_shown_again(
    engine: Engine, alice: VolumeService
) -> None:
    made = alice.create("data", size_bytes=GiB)
    with session_scope(engine) as session:
        row = session.get_one(VolumeRecord, made.id)
        row.state, row.live_name, row.updated_at = "gone", None, utcnow() - timedelta(minutes=1)
    assert alice.reconcile("local").reappeared == [made.id]
    assert alice.get("data").state == "ready"


def test_a_listing_that_fails_leaves_the_store_as_it_is(
    alice: VolumeService, fake: FakeConnector
) -> None:
    made = alice.create("data", size_bytes=GiB)
    fake.ex_fail_next("list_volumes", BackendUnavailable("the daemon does not answer"))
    assert [v.id for v in alice.list()] == [made.id]
    with pytest.raises(BackendUnavailable):
        fake.ex_fail_next("list_volumes", BackendUnavailable("still down"))
        alice.reconcile("local")
