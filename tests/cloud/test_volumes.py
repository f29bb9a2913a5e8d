"""The volume service on the fake cloud: recorded before the backend is asked, named by id on
the backend, unique names per owner, bounds, rights (another user's private volume is not
there, word for word; a public one is read and attached read-only), delete refused while
attached, instances killed keep their volumes, run-made volumes, a backend that fails leaves
nothing behind."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from stratuslab.cloud.base import Volume, VolumeSpec
from stratuslab.cloud.clouds import ConnectorPool
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.cloud.instances import RunRequest
from stratuslab.cloud.types import Capability
from stratuslab.cloud.volume_values import MAX_SIZE, MIN_SIZE
from stratuslab.cloud.volumes import VolumeService
from stratuslab.db.session import session_scope
from stratuslab.db.volume_models import VolumeRecord
from stratuslab.errors import (
    BackendError,
    CapacityExceeded,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    NotSupported,
    StratusError,
)
from tests.cloud.volume_support import GiB, instance, service


@pytest.fixture
def alice(engine: Engine, pool: ConnectorPool) -> VolumeService:
    return service(engine, pool, "alice")


@pytest.fixture
def bob(engine: Engine, pool: ConnectorPool) -> VolumeService:
    return service(engine, pool, "bob")


def records(engine: Engine) -> list[tuple[str, str, str | None]]:
    with session_scope(engine) as session:
        return [
            (r.name, r.state, r.error)
            for r in session.scalars(select(VolumeRecord).order_by(VolumeRecord.created_at))
        ]


def test_a_volume_is_recorded_named_by_its_id_on_the_backend_and_tagged(
    alice: VolumeService, fake: FakeConnector
) -> None:
    made = alice.create("data", size_bytes=2 * GiB, description="results")
    assert (made.state, made.owner, made.name, made.ref) == ("ready", "alice", "data", "alice/data")
    assert made.id.startswith("vol-") and len(made.id) == 12 and made.size_bytes == 2 * GiB
    (backend,) = fake.list_volumes()
    assert backend.name == f"stratus-{made.id}" and "data" not in backend.name
    assert dict(backend.tags) == {"id": made.id, "owner": "alice", "name": "data"}
    for ref in ("data", "alice/data", made.id):
        assert alice.get(ref) == made
    assert [v.id for v in alice.list()] == [made.id]
    assert made.to_dict()["ref"] == "alice/data" and made.to_dict()["attachments"] == []


def test_names_are_unique_among_an_owners_live_volumes_and_free_once_gone(
    alice: VolumeService, bob: VolumeService
) -> None:
    first = alice.create("data", size_bytes=MIN_SIZE)
    with pytest.raises(Conflict, match="you have a volume called 'data' already"):
        alice.create("data", size_bytes=MIN_SIZE)
    bob.create("data", size_bytes=MIN_SIZE)  # another owner's namespace
    assert alice.delete("data").state == "gone"
    assert alice.get(first.id).state == "gone"  # a gone volume is found by its id
    with pytest.raises(NotFound):
        alice.get("data")
    second = alice.create("data", size_bytes=MIN_SIZE)
    assert second.id != first.id and alice.get("data").id == second.id
    assert alice.delete(first.id).state == "gone"  # deleting what is gone changes nothing


def test_bad_input_is_refused_before_anything_is_recorded(
    engine: Engine, pool: ConnectorPool, alice: VolumeService, fake: FakeConnector
) -> None:
    cases: list[tuple[Callable[[], Any], type[StratusError], str]] = [
        (lambda: alice.create("Data", size_bytes=GiB), Invalid, "volume name 'Data'"),
        (lambda: alice.create("a/b", size_bytes=GiB), Invalid, "volume name"),
        (lambda: alice.create("x" * 64, size_bytes=GiB), Invalid, "up to 63"),
        (lambda: alice.create("d", size_bytes=MIN_SIZE - 1), Invalid, "a volume is from 16 MiB"),
        (lambda: alice.create("d", size_bytes=MAX_SIZE + 1), Invalid, "to 16 TiB"),
        (lambda: alice.create("d"), Invalid, "give a size"),
        (lambda: alice.create("d", size_bytes=GiB, description="x" * 1001), Invalid, "1000"),
        (lambda: alice.create("d", size_bytes=GiB, cloud="mars"), NotFound, "no cloud"),
        (lambda: alice.create("d", size_bytes=GiB, source="nothing"), NotFound, "'nothing'"),
    ]
    for call, kind, words in cases:
        with pytest.raises(kind, match=words):
            call()
    assert records(engine) == [] and fake.list_volumes() == []
    few = service(engine, pool, "alice", max_volumes=2)
    few.create("one", size_bytes=MIN_SIZE)
    few.create("two", size_bytes=MIN_SIZE)
    with pytest.raises(CapacityExceeded, match="alice holds 2 volumes, the most"):
        few.create("three", size_bytes=MIN_SIZE)
    assert len(fake.list_volumes()) == 2


class _NoVolumes(FakeConnector):
    capabilities = FakeConnector.capabilities - {Capability.VOLUMES}


def test_a_cloud_without_volumes_says_so(
    engine: Engine, pool: ConnectorPool, fake_namespace: str
) -> None:
    plain = _NoVolumes(namespace=fake_namespace)
    volumes = service(engine, pool, "alice")
    volumes._connector = lambda _cloud: plain
    with pytest.raises(NotSupported, match="cloud local \\(fake connector\\) has no volumes"):
        volumes.create("data", size_bytes=GiB)
    assert records(engine) == [] and volumes.reconcile("local").changed is False


class _FailsAfterMaking(FakeConnector):
    """A backend that makes the volume, then fails to say so (a timeout after the fact)."""

    def create_volume(self, spec: VolumeSpec) -> Volume:
        super().create_volume(spec)
        raise BackendError("the backend timed out")


def test_a_backend_failure_mid_create_leaves_no_pending_record_and_no_backend_volume(
    engine: Engine, alice: VolumeService, fake: FakeConnector, fake_namespace: str
) -> None:
    fake.ex_fail_next("create_volume", BackendError("pool is full"))
    with pytest.raises(BackendError, match="pool is full"):
        alice.create("data", size_bytes=GiB)
    assert records(engine) == [("data", "gone", "not created: pool is full")]
    failing = _FailsAfterMaking(namespace=fake_namespace)
    alice._connector = lambda _cloud: failing
    with pytest.raises(BackendError, match="timed out"):
        alice.create("data", size_bytes=GiB)
    assert [r[1] for r in records(engine)] == ["gone", "gone"]
    assert fake.list_volumes() == []  # what it made was deleted
    alice._connector = lambda _cloud: fake
    assert alice.create("data", size_bytes=GiB).state == "ready"  # the name is free


def test_another_users_private_volume_is_not_found_word_for_word_by_every_method(
    alice: VolumeService, bob: VolumeService
) -> None:
    secret = alice.create("secret", size_bytes=GiB)
    alice.snapshot("secret", "s1")
    bobs = instance(bob)

    def refusals() -> list[tuple[str, str | None]]:
        found = []
        for ref in ("alice/secret", secret.id):
            for call in (
                lambda r: bob.get(r),
                lambda r: bob.delete(r),
                lambda r: bob.resize(r, size_bytes=2 * GiB),
                lambda r: bob.attach(r, bobs.id, read_only=True),
                lambda r: bob.attach(r, bobs.id),
                lambda r: bob.detach(r, bobs.id),
                lambda r: bob.snapshot(r, "mine"),
                lambda r: bob.snapshots(r),
                lambda r: bob.restore(r, "s1"),
                lambda r: bob.delete_snapshot(r, "s1"),
                lambda r: bob.claim_for(r, path="/mnt/x", read_only=True),
                lambda r: bob.create("copy", size_bytes=GiB, source=r),
                lambda r: bob.create("copy", size_bytes=GiB, source=f"{r}/s1"),
            ):
                with pytest.raises(NotFound) as refused:
                    call(ref)
                found.append((refused.value.message, refused.value.hint))
        return found

    while_there = refusals()
    assert all("secret" in m or secret.id in m for m, _ in while_there)
    assert bob.list(public=True) == []
    alice.delete_snapshot("secret", "s1")
    alice.delete("secret")
    assert refusals() == while_there  # the same words as a volume that does not exist
    assert bob.create("copy", size_bytes=GiB).state == "ready"  # bob made nothing before


def test_another_users_public_volume_is_read_and_attached_read_only_never_changed(
    alice: VolumeService, bob: VolumeService, fake: FakeConnector
) -> None:
    shared = alice.create("dataset", size_bytes=GiB, public=True)
    alice.snapshot("dataset", "v1")
    bobs = instance(bob)
    assert bob.get("alice/dataset").id == shared.id and bob.get(shared.id).public
    assert [v.ref for v in bob.list(public=True)] == ["alice/dataset"]
    assert bob.list() == []  # public ones only when asked for
    assert [s.name for s in bob.snapshots("alice/dataset")] == ["v1"]
    with pytest.raises(
        Forbidden,
        match="others may read it and attach it read-only; only its owner may attach it read-write",
    ) as rw:
        bob.attach("alice/dataset", bobs.id)
    assert "--read-only" in str(rw.value.hint)
    attached = bob.attach("alice/dataset", bobs.id, read_only=True)
    assert [(a.instance, a.path, a.read_only) for a in attached.attachments] == [
        (bobs.id, "/mnt/dataset", True)
    ]
    assert fake.ex_mounts(bobs.name)[f"stratus-{shared.id}"].read_only
    for what, call in (
        ("delete it", lambda: bob.delete("alice/dataset")),
        ("resize it", lambda: bob.resize("alice/dataset", size_bytes=2 * GiB)),
        ("snapshot it", lambda: bob.snapshot("alice/dataset", "mine")),
        ("restore it", lambda: bob.restore("alice/dataset", "v1")),
        ("delete its snapshots", lambda: bob.delete_snapshot("alice/dataset", "v1")),
        (
            "attach it read-write",
            lambda: bob.claim_for("alice/dataset", path="/d", read_only=False),
        ),
    ):
        with pytest.raises(Forbidden, match=f"only its owner may {what}"):
            call()
    clone = bob.create("mine", source="alice/dataset/v1")
    assert (clone.owner, clone.source, clone.size_bytes) == ("bob", "alice/dataset/v1", GiB)
    assert bob.detach("alice/dataset", bobs.id).attachments == ()
    assert [s.name for s in alice.snapshots("dataset")] == ["v1"]  # nothing of alice's changed


def test_an_administrator_reaches_every_volume(
    engine: Engine, pool: ConnectorPool, alice: VolumeService
) -> None:
    alice.create("secret", size_bytes=GiB)
    root = service(engine, pool, "root", admin=True)
    assert root.list() == [] and [v.ref for v in root.list(all_owners=True)] == ["alice/secret"]
    assert root.resize("alice/secret", size_bytes=2 * GiB).size_bytes == 2 * GiB
    assert root.delete("alice/secret").state == "gone"


def test_attach_only_to_a_running_instance_the_caller_reaches(
    alice: VolumeService, bob: VolumeService, fake: FakeConnector
) -> None:
    data = alice.create("data", size_bytes=GiB)
    running, stopped, gone = instance(alice), instance(alice), instance(alice)
    alice.instances.stop(stopped.id)
    alice.instances.kill(gone.id)
    with pytest.raises(Conflict, match=f"instance {stopped.id} is stopped: start it") as refused:
        alice.attach("data", stopped.id)
    assert refused.value.hint == f"stratus instance start {stopped.id}"
    with pytest.raises(Conflict, match=f"instance {gone.id} is gone"):
        alice.attach("data", gone.id)
    with pytest.raises(NotFound, match="no instance"):
        alice.attach("data", instance(bob).id)
    for bad in ("relative", "/", "/etc", "/usr/lib", "/mnt/../etc", "/mnt/a b"):
        with pytest.raises(Invalid, match="mount path"):
            alice.attach("data", running.id, path=bad)
    assert alice.get("data").attachments == ()  # nothing was claimed by the refusals
    view = alice.attach("data", running.id, path="/srv/data")
    ((attachment),) = view.attachments
    assert (attachment.instance, attachment.instance_name, attachment.path) == (
        running.id,
        running.name,
        "/srv/data",
    )
    assert (attachment.read_only, attachment.state) == (False, "attached")
    assert fake.ex_mounts(running.name)[f"stratus-{data.id}"].path == "/srv/data"
    assert alice.attach("data", running.id, path="/srv/data") == view  # again: nothing changes
    with pytest.raises(Conflict, match="attached to instance"):
        alice.attach("data", running.id, path="/srv/other")
    assert alice.of_instances([running.id, stopped.id])[running.id][0].volume == "alice/data"
    assert bob.of_instances([running.id]) == {}  # not bob's instance


def test_a_backend_failure_on_attach_releases_the_claim(
    alice: VolumeService, fake: FakeConnector
) -> None:
    alice.create("data", size_bytes=GiB)
    target = instance(alice)
    fake.ex_fail_next("attach_volume", BackendError("device busy"))
    with pytest.raises(BackendError, match="device busy"):
        alice.attach("data", target.id)
    assert alice.get("data").attachments == ()
    assert alice.attach("data", target.id).attachments[0].state == "attached"


def test_delete_is_refused_while_attached_naming_where_and_detach_frees_it(
    alice: VolumeService, fake: FakeConnector
) -> None:
    data = alice.create("data", size_bytes=GiB)
    target = instance(alice)
    alice.attach("data", target.id)
    with pytest.raises(Conflict) as refused:
        alice.delete("data")
    assert f"instance {target.name} ({target.id}) at /mnt/data" in refused.value.message
    assert refused.value.hint == f"stratus volume detach alice/data {target.id}"
    assert alice.get("data").state == "ready" and len(fake.list_volumes()) == 1
    with pytest.raises(Conflict, match="is not attached to instance"):
        alice.detach("data", instance(alice).id)
    assert alice.detach("data", target.id).attachments == ()
    assert fake.ex_mounts(target.name) == {}
    assert alice.delete("data").state == "gone" and fake.list_volumes() == []
    assert alice.get(data.id).attachments == ()


def test_killing_an_instance_keeps_its_volume_and_frees_it(
    alice: VolumeService, fake: FakeConnector
) -> None:
    alice.create("data", size_bytes=GiB)
    first, second = instance(alice), instance(alice)
    alice.attach("data", first.id)
    with pytest.raises(Conflict, match=f"attached to {first.id} at /mnt/data"):
        alice.attach("data", second.id)  # one writer
    alice.instances.kill(first.id)
    shown = alice.get("data")
    assert (shown.state, shown.attachments) == ("ready", ())
    assert alice.of_instances([first.id]) == {}  # `instance show` of it lists no volume
    assert len(fake.list_volumes()) == 1
    assert alice.attach("data", second.id).attachments[0].instance == second.id
    assert alice.detach("data", first.id).attachments[0].instance == second.id  # gone: no-op


def test_the_owner_detaches_her_public_volume_from_another_users_instance_and_deletes_it(
    engine: Engine,
    pool: ConnectorPool,
    alice: VolumeService,
    bob: VolumeService,
    fake: FakeConnector,
) -> None:
    alice.create("dataset", size_bytes=GiB, public=True)
    bobs = instance(bob)
    bob.attach("alice/dataset", bobs.id, read_only=True)
    with pytest.raises(Conflict, match="attached to"):
        alice.delete("dataset")
    carol = service(engine, pool, "carol")
    with pytest.raises(NotFound, match=f"no instance {bobs.id!r}"):  # not hers, not her volume
        carol.detach("alice/dataset", bobs.id)
    carols = instance(carol)
    with pytest.raises(NotFound, match=f"no instance {carols.id!r}"):
        alice.detach("dataset", carols.id)  # her volume is not attached there
    assert alice.detach("dataset", bobs.id).attachments == ()
    assert fake.ex_mounts(bobs.name) == {}
    assert alice.delete("dataset").state == "gone"


def test_a_failed_delete_is_recorded_and_can_be_tried_again(
    alice: VolumeService, fake: FakeConnector
) -> None:
    alice.create("data", size_bytes=GiB)
    fake.ex_fail_next("delete_volume", BackendError("pool offline"))
    with pytest.raises(BackendError):
        alice.delete("data")
    failed = alice.get("data")
    assert (failed.state, failed.error) == ("error", "not deleted: pool offline")
    assert alice.delete("data").state == "gone" and fake.list_volumes() == []


def test_resize_grows_and_a_refused_shrink_changes_nothing(
    alice: VolumeService, fake: FakeConnector
) -> None:
    data = alice.create("data", size_bytes=GiB)
    assert alice.resize("data", size_bytes=3 * GiB).size_bytes == 3 * GiB
    assert fake.get_volume(f"stratus-{data.id}").size_bytes == 3 * GiB
    fake.ex_fail_next("resize_volume", Conflict("its files take 2 GiB"))
    with pytest.raises(Conflict, match="resizing volume alice/data: its files take 2 GiB"):
        alice.resize("data", size_bytes=MIN_SIZE)
    assert alice.get("data").size_bytes == 3 * GiB
    with pytest.raises(Invalid, match="a volume is from"):
        alice.resize("data", size_bytes=1)


def test_a_claim_puts_a_volume_in_an_instance_at_create(
    alice: VolumeService, bob: VolumeService, fake: FakeConnector
) -> None:
    data = alice.create("data", size_bytes=GiB)
    alice.create("shared", size_bytes=GiB, public=True)
    claim = alice.claim_for("data", path="/var/lib/db", read_only=False)
    assert (claim.volume_id, claim.label, claim.mount.volume) == (
        data.id,
        "alice/data",
        f"stratus-{data.id}",
    )
    (made,) = alice.instances.run(RunRequest(image="debian-12", volumes=(claim,)))
    assert fake.ex_mounts(made.name)[f"stratus-{data.id}"].path == "/var/lib/db"
    assert alice.get("data").attachments[0].instance == made.id
    with pytest.raises(Conflict, match="is on cloud local, not elsewhere"):
        alice.claim_for("data", path="/d", read_only=True, cloud="elsewhere")
    with pytest.raises(Invalid, match="mount path"):
        alice.claim_for("data", path="/etc", read_only=True)
    readers = bob.claim_for("alice/shared", path="/data", read_only=True)
    (theirs,) = bob.instances.run(RunRequest(image="debian-12", volumes=(readers,)))
    assert bob.of_instances([theirs.id])[theirs.id][0].read_only


def test_a_runs_volumes_are_found_and_deleted_by_its_teardown(
    alice: VolumeService, fake: FakeConnector
) -> None:
    one = alice.create("run1-db", size_bytes=GiB, run_id="run-1")
    alice.create("run1-cache", size_bytes=GiB, run_id="run-1")
    kept = alice.create("pgdata", size_bytes=GiB)
    assert fake.get_volume(f"stratus-{one.id}").tags["run"] == "run-1"
    assert sorted(v.name for v in alice.for_run("run-1")) == ["run1-cache", "run1-db"]
    fake.ex_fail_next("delete_volume", BackendError("busy"))
    with pytest.raises(BackendError, match="busy"):
        alice.delete_for_run("run-1")  # the other one is deleted all the same
    assert len(alice.delete_for_run("run-1")) == 1
    assert alice.delete_for_run("run-1") == []  # idempotent
    assert [v.id for v in alice.list()] == [kept.id]
    assert [v.name for v in fake.list_volumes()] == [f"stratus-{kept.id}"]
