"""Snapshots of volumes and clones from them: named safely, bounded, never restored under a
running instance, a snapshot of a missing volume is not found, clones made from own or public
volumes and snapshots, at the source's size at least."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine

from stratuslab.cloud import clouds
from stratuslab.cloud.clouds import ConnectorPool
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.cloud.volumes import VolumeService
from stratuslab.errors import CapacityExceeded, Conflict, Invalid, NotFound
from tests.cloud.volume_support import GiB, instance, service


@pytest.fixture
def alice(engine: Engine, pool: ConnectorPool) -> VolumeService:
    return service(engine, pool, "alice", max_snapshots=3)


def test_snapshots_are_named_safely_bounded_and_listed_oldest_first(
    alice: VolumeService,
) -> None:
    alice.create("data", size_bytes=GiB)
    taken = alice.snapshot("data")
    assert len(taken.name) == len("20250131-142501") and taken.volume == "alice/data"
    alice.snapshot("data", "before-upgrade")
    for bad in ("", "Caps", "-x", "a/b", "x" * 64, "stratus-mine"):
        with pytest.raises(Invalid):
            alice.snapshot("data", bad)
    with pytest.raises(Conflict, match="volume alice/data has a snapshot called 'before-upgrade'"):
        alice.snapshot("data", "before-upgrade")
    alice.snapshot("data", "third")
    with pytest.raises(CapacityExceeded, match="has 3 snapshots, the most") as full:
        alice.snapshot("data", "fourth")
    assert f"stratus volume snapshot delete alice/data {taken.name}" in str(full.value.hint)
    alice.delete_snapshot("data", taken.name)
    alice.delete_snapshot("data", taken.name)  # gone already: succeeds
    alice.snapshot("data", "fourth")
    assert [s.name for s in alice.snapshots("data")] == ["before-upgrade", "third", "fourth"]


def test_a_snapshot_of_a_missing_volume_is_not_found(alice: VolumeService) -> None:
    for call in (
        lambda: alice.snapshot("nothing", "s"),
        lambda: alice.snapshots("nothing"),
        lambda: alice.restore("nothing", "s"),
        lambda: alice.delete_snapshot("nothing", "s"),
    ):
        with pytest.raises(NotFound, match="no volume 'nothing'"):
            call()


def test_restore_is_refused_under_a_running_instance_and_names_it(
    alice: VolumeService,
) -> None:
    alice.create("data", size_bytes=GiB)
    alice.snapshot("data", "s1")
    target = instance(alice)
    alice.attach("data", target.id)
    with pytest.raises(Conflict, match=f"attached to running instance {target.name}") as refused:
        alice.restore("data", "s1")
    assert f"stratus volume detach alice/data {target.id}" in str(refused.value.hint)
    alice.instances.stop(target.id)
    assert alice.restore("data", "s1").state == "ready"  # a stopped one sees it at its start
    alice.instances.start(target.id)
    alice.detach("data", target.id)
    assert alice.restore("data", "s1").attachments == ()
    with pytest.raises(NotFound, match="volume alice/data has no snapshot called 'nope'"):
        alice.restore("data", "nope")


def test_clones_are_made_from_volumes_and_snapshots_at_the_sources_size_at_least(
    engine: Engine, pool: ConnectorPool, alice: VolumeService, fake: FakeConnector
) -> None:
    base = alice.create("base", size_bytes=2 * GiB)
    alice.snapshot("base", "v1")
    whole = alice.create("whole", source="base")
    assert (whole.source, whole.size_bytes) == ("alice/base", 2 * GiB)
    from_snapshot = alice.create("from-snap", size_bytes=GiB, source="base/v1")
    assert (from_snapshot.source, from_snapshot.size_bytes) == ("alice/base/v1", 2 * GiB)
    bigger = alice.create("bigger", size_bytes=4 * GiB, source="alice/base/v1")
    assert bigger.size_bytes == 4 * GiB
    assert fake.get_volume(f"stratus-{bigger.id}").size_bytes == 4 * GiB
    with pytest.raises(NotFound, match="volume alice/base has no snapshot called 'v2'"):
        alice.create("c", source="alice/base/v2")
    with pytest.raises(Invalid, match="write VOLUME, OWNER/VOLUME"):
        alice.create("c", source="a/b/c/d")
    clouds.record(engine, name="other", connector="fake", options={"namespace": "vol-other"})
    try:
        with pytest.raises(Invalid, match="a clone is made on its source's cloud"):
            alice.create("c", source="base", cloud="other")
    finally:
        FakeConnector.ex_reset("vol-other")
    assert alice.get(base.id).state == "ready" and len(alice.list()) == 4
