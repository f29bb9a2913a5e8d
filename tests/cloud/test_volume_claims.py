"""Volume claims: one writer or many readers, decided under the volume's row lock, so that two
attaches racing for one volume never both win; an instance that is gone holds nothing. On
SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from stratuslab.cloud import clouds, volume_claims
from stratuslab.cloud.base import Mount
from stratuslab.cloud.volume_claims import VolumeClaim
from stratuslab.db.models import InstanceRecord
from stratuslab.db.session import session_scope
from stratuslab.db.volume_models import VolumeAttachmentRecord, VolumeRecord
from stratuslab.errors import Conflict
from tests.api import conftest as both_stores

store = both_stores.store  # these tests run on SQLite and on PostgreSQL


@pytest.fixture
def volume(engine: Engine) -> str:
    clouds.record(engine, name=clouds.DEFAULT_CLOUD, connector="fake", options={})
    with session_scope(engine) as session:
        session.add(
            VolumeRecord(
                id="vol-1",
                owner="alice",
                name="data",
                live_name="data",
                cloud=clouds.DEFAULT_CLOUD,
                backend_name="stratus-vol-1",
                size_bytes=1 << 30,
                state="ready",
            )
        )
        for n in range(1, 5):
            session.add(
                InstanceRecord(
                    id=f"i-{n}",
                    name=f"inst-{n}",
                    cloud=clouds.DEFAULT_CLOUD,
                    owner="alice",
                    image="debian-12",
                    state="running",
                )
            )
    return "vol-1"


def attach(engine: Engine, volume: str, instance: str, *, read_only: bool = False) -> bool:
    with session_scope(engine) as session:
        row = volume_claims.lock(session, volume)
        return volume_claims.claim(
            session,
            row,
            instance_id=instance,
            path="/mnt/data",
            read_only=read_only,
            label="alice/data",
        )


def attached_to(engine: Engine, volume: str) -> list[str]:
    with session_scope(engine) as session:
        return [h.instance_id for h in volume_claims.holders(session, volume)]


def test_a_volume_attached_read_write_is_attached_nowhere_else(engine: Engine, volume: str) -> None:
    assert attach(engine, volume, "i-1")
    with pytest.raises(Conflict, match=r"attached to i-1 at /mnt/data \(read-write\)"):
        attach(engine, volume, "i-2")
    with pytest.raises(Conflict, match="i-1"):
        attach(engine, volume, "i-2", read_only=True)
    assert attached_to(engine, volume) == ["i-1"]


def test_readers_share_a_volume_and_keep_a_writer_out(engine: Engine, volume: str) -> None:
    assert attach(engine, volume, "i-1", read_only=True)
    assert attach(engine, volume, "i-2", read_only=True)
    with pytest.raises(Conflict, match="read-only"):
        attach(engine, volume, "i-3")
    assert attached_to(engine, volume) == ["i-1", "i-2"]


def test_the_same_attachment_again_is_no_change_and_another_path_a_conflict(
    engine: Engine, volume: str
) -> None:
    assert attach(engine, volume, "i-1")
    assert not attach(engine, volume, "i-1")
    with pytest.raises(Conflict, match="attached to instance i-1"):
        attach(engine, volume, "i-1", read_only=True)


def test_an_instance_that_is_gone_holds_nothing(engine: Engine, volume: str) -> None:
    assert attach(engine, volume, "i-1")
    with session_scope(engine) as session:
        session.get_one(InstanceRecord, "i-1").state = "gone"
    assert attach(engine, volume, "i-2")
    assert attached_to(engine, volume) == ["i-2"]
    with session_scope(engine) as session:  # the record left behind was dropped
        kept = session.scalars(select(VolumeAttachmentRecord.instance_id)).all()
    assert kept == ["i-2"]


def test_a_volume_that_is_not_ready_cannot_be_attached(engine: Engine, volume: str) -> None:
    with session_scope(engine) as session:
        session.get_one(VolumeRecord, volume).state = "deleting"
    with pytest.raises(Conflict, match="alice/data is deleting"):
        attach(engine, volume, "i-1")


def race_once(engine: Engine, volume: str, instances: list[str]) -> tuple[list[str], list[str]]:
    """Attach ``volume`` read-write to each of ``instances`` at once; who won, what the
    others were told."""
    start = threading.Barrier(len(instances))
    won: list[str] = []
    lost: list[str] = []

    def race(instance: str) -> None:
        start.wait()
        try:
            if attach(engine, volume, instance):
                won.append(instance)
        except Conflict as exc:
            lost.append(str(exc))

    threads = [threading.Thread(target=race, args=(i,)) for i in instances]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return won, lost


def test_two_attaches_racing_for_one_volume_never_both_win(engine: Engine, volume: str) -> None:
    for _ in range(5):
        with session_scope(engine) as session:
            session.query(VolumeAttachmentRecord).delete()
        won, lost = race_once(engine, volume, [f"i-{n}" for n in range(1, 5)])
        assert len(won) == 1 and len(lost) == 3
        assert all(won[0] in message for message in lost)
        assert attached_to(engine, volume) == won


def test_a_requests_claims_are_all_made_or_none(engine: Engine, volume: str) -> None:
    with session_scope(engine) as session:
        session.add(
            VolumeRecord(
                id="vol-2",
                owner="alice",
                name="logs",
                live_name="logs",
                cloud=clouds.DEFAULT_CLOUD,
                backend_name="stratus-vol-2",
                size_bytes=1 << 30,
                state="ready",
            )
        )
    assert attach(engine, "vol-2", "i-1")  # held read-write by another instance

    class Request:
        volumes = (
            VolumeClaim("vol-1", Mount("stratus-vol-1", "/srv/data"), "alice/data"),
            VolumeClaim("vol-2", Mount("stratus-vol-2", "/srv/logs"), "alice/logs"),
        )

    with session_scope(engine) as session:
        refusal = volume_claims.claim_volumes(session, Request(), [{"id": "i-9"}], viewer="alice")
    assert isinstance(refusal, Conflict) and "alice/logs" in str(refusal)
    assert attached_to(engine, "vol-1") == []  # the first claim was taken back


def test_a_refusal_names_another_users_instance_only_to_the_volumes_owner(
    engine: Engine, volume: str
) -> None:
    assert attach(engine, volume, "i-1")  # alice's instance holds her volume read-write
    with session_scope(engine) as session:
        row = volume_claims.lock(session, volume)
        with pytest.raises(Conflict) as refused:
            volume_claims.claim(
                session,
                row,
                instance_id="i-bob",
                path="/mnt/data",
                read_only=True,
                label="alice/data",
                viewer="bob",
            )
    assert "i-1" not in str(refused.value) and "/mnt/data" not in str(refused.value)
    assert "an instance of another user (read-write)" in str(refused.value)
    # To alice, it is named.
    with pytest.raises(Conflict, match=r"i-1 at /mnt/data"), session_scope(engine) as session:
        row = volume_claims.lock(session, volume)
        volume_claims.claim(
            session,
            row,
            instance_id="i-2",
            path="/mnt/data",
            read_only=True,
            label="alice/data",
            viewer="alice",
        )
