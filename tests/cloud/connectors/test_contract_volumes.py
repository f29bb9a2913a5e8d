"""The connector contract's volume operations, on the fake and on LXD (marked ``lxd``).

Every post-condition of ``base_volumes.py`` is asserted on both; on LXD, where instances run
commands, also what the files do: what one instance writes another reads, a read-only mount
refuses writes, a mount is there when attach returns, a clone and a restore hold the files
they should, a size bounds what can be written. The two instances ``a`` and ``b`` are shared
by the module (each test detaches what it attached); every volume a test makes is detached
and deleted when it ends, even when it failed, and every instance is destroyed with the
module.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from stratuslab.cloud.base import Connector, InstanceSpec, Mount, VolumeSpec
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.cloud.connectors.localproc import LocalProcConnector
from stratuslab.cloud.connectors.lxd import LxdConnector
from stratuslab.cloud.types import Capability, InstanceState
from stratuslab.errors import Conflict, NotFound, NotSupported, StratusError
from tests.cloud.connectors.support import destroying, open_connector

IMAGE = "debian-12"
MiB = 1 << 20


def name(what: str) -> str:
    return f"test-{what}-{secrets.token_hex(4)}"


@dataclass
class Cloud:
    """The connector under test, its two shared running instances, and the volumes the
    current test made (detached and deleted after it)."""

    connector: Connector
    a: str
    b: str
    volumes: list[str] = field(default_factory=list)

    @property
    def files(self) -> bool:
        """Whether instances run commands here (LXD), so that files can be checked."""
        return self.connector.kind == "lxd"

    def volume(
        self,
        what: str,
        size: int = 64 * MiB,
        *,
        tags: dict[str, str] | None = None,
        source: str | None = None,
    ) -> str:
        made = name(what)
        self.volumes.append(made)  # before it exists: a create that fails half-way is cleaned
        spec = VolumeSpec(name=made, size_bytes=size, tags=tags or {}, source=source)
        self.connector.create_volume(spec)
        return made

    def sh(self, instance: str, script: str) -> str:
        """Run ``script`` in ``instance``; its stdout, or a failure with what it said."""
        ran = self.connector.exec(instance, ["sh", "-c", script], timeout=60)
        assert ran.exit_code == 0, f"{script!r} in {instance}: {ran.exit_code} {ran.stderr}"
        return ran.stdout

    def fails(self, instance: str, script: str) -> str:
        """Run ``script`` in ``instance``, which must fail; what it said on stderr."""
        ran = self.connector.exec(instance, ["sh", "-c", script], timeout=60)
        assert ran.exit_code != 0, f"{script!r} in {instance} succeeded: {ran.stdout}"
        return ran.stderr

    def mounted(self, instance: str, path: str) -> bool:
        return self.connector.exec(instance, ["mountpoint", "-q", path]).exit_code == 0

    def clean(self) -> None:
        for volume in self.volumes:
            try:
                users = self.connector.get_volume(volume).used_by
            except NotFound:
                continue
            for user in users:
                self.connector.detach_volume(user, volume)
            self.connector.delete_volume(volume)
        self.volumes.clear()


@pytest.fixture(scope="module", params=["fake", pytest.param("lxd", marks=pytest.mark.lxd)])
def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cloud]:
    namespace = f"test-{secrets.token_hex(4)}"
    made = open_connector(request.param, namespace=namespace, root=tmp_path_factory.mktemp("i"))
    try:
        with destroying(made) as connector:
            a, b = name("a"), name("b")
            for instance in (a, b):
                connector.create(InstanceSpec(name=instance, image=IMAGE))
            yield Cloud(connector, a, b)
    finally:
        FakeConnector.ex_reset(namespace)


@pytest.fixture
def cloud(shared: Cloud) -> Iterator[Cloud]:
    try:
        yield shared
    finally:
        shared.clean()


def test_volumes_are_created_tagged_listed_and_found(cloud: Cloud) -> None:
    assert Capability.VOLUMES in cloud.connector.capabilities
    marker = secrets.token_hex(4)
    one = cloud.volume("one", 32 * MiB, tags={"batch": marker, "owner": "alice"})
    other = cloud.volume("other", tags={"batch": "other", "owner": "a.ice"})
    found = cloud.connector.get_volume(one)
    assert (found.name, found.used_by) == (one, ())
    assert found.size_bytes >= 32 * MiB
    assert {k: found.tags[k] for k in ("batch", "owner")} == {"batch": marker, "owner": "alice"}
    assert [v.name for v in cloud.connector.list_volumes(tags={"batch": marker})] == [one]
    assert [v.name for v in cloud.connector.list_volumes(tags={"owner": "a.ice"})] == [other]
    assert cloud.connector.list_volumes(tags={"owner": "aaice"}) == []
    assert {one, other} <= {v.name for v in cloud.connector.list_volumes()}
    with pytest.raises(Conflict):
        cloud.connector.create_volume(VolumeSpec(name=one, size_bytes=32 * MiB))
    assert cloud.connector.get_volume(one).tags["batch"] == marker  # the first one, untouched
    with pytest.raises(NotFound):
        cloud.connector.get_volume(name("missing"))


def test_attach_mounts_at_once_and_repeats_only_what_is_there(cloud: Cloud) -> None:
    c = cloud.connector
    data, other = cloud.volume("data"), cloud.volume("other")
    c.attach_volume(cloud.a, Mount(data, "/mnt/data"))
    if cloud.files:  # mounted when the call returns: no wait, no retry
        assert cloud.mounted(cloud.a, "/mnt/data")
    assert c.get_volume(data).used_by == (cloud.a,)
    c.attach_volume(cloud.a, Mount(data, "/mnt/data"))  # the same again: nothing changes
    assert c.get_volume(data).used_by == (cloud.a,)
    with pytest.raises(Conflict, match="/mnt/data"):
        c.attach_volume(cloud.a, Mount(data, "/mnt/elsewhere"))
    with pytest.raises(Conflict):
        c.attach_volume(cloud.a, Mount(data, "/mnt/data", read_only=True))
    with pytest.raises(Conflict, match="/mnt/data"):
        c.attach_volume(cloud.a, Mount(other, "/mnt/data"))
    assert c.get_volume(other).used_by == ()
    with pytest.raises(NotFound):
        c.attach_volume(name("gone"), Mount(data, "/mnt/data"))
    with pytest.raises(NotFound):
        c.attach_volume(cloud.a, Mount(name("gone"), "/mnt/nothing"))
    c.detach_volume(cloud.a, data)
    if cloud.files:  # unmounted when the call returns
        assert not cloud.mounted(cloud.a, "/mnt/data")
    assert c.get_volume(data).used_by == ()
    c.detach_volume(cloud.a, data)  # idempotent: not attached there
    c.detach_volume(name("gone"), data)  # nor from an instance that does not exist
    c.detach_volume(cloud.a, name("gone"))


def test_files_written_through_one_mount_are_read_through_another(cloud: Cloud) -> None:
    c = cloud.connector
    data = cloud.volume("data")
    c.attach_volume(cloud.a, Mount(data, "/srv/data"))
    if cloud.files:
        cloud.sh(cloud.a, "echo from-a > /srv/data/note && sync")
    c.detach_volume(cloud.a, data)
    c.attach_volume(cloud.b, Mount(data, "/mnt/in", read_only=True))
    assert c.get_volume(data).used_by == (cloud.b,)
    if cloud.files:
        assert cloud.sh(cloud.b, "cat /mnt/in/note") == "from-a\n"
        said = cloud.fails(cloud.b, "echo no > /mnt/in/other")
        assert "Read-only file system" in said
        assert cloud.sh(cloud.b, "ls /mnt/in") == "note\n"
    # A writer and a reader at once: the backend allows it; the one-writer rule is the service's.
    c.attach_volume(cloud.a, Mount(data, "/srv/data"))
    assert c.get_volume(data).used_by == tuple(sorted((cloud.a, cloud.b)))
    if cloud.files:
        cloud.sh(cloud.a, "echo later > /srv/data/note")
        assert cloud.sh(cloud.b, "cat /mnt/in/note") == "later\n"


def test_an_attached_volume_is_not_deleted_and_delete_is_idempotent(cloud: Cloud) -> None:
    c = cloud.connector
    data = cloud.volume("data")
    c.attach_volume(cloud.a, Mount(data, "/mnt/data"))
    c.attach_volume(cloud.b, Mount(data, "/mnt/data", read_only=True))
    with pytest.raises(Conflict) as refused:
        c.delete_volume(data)
    assert cloud.a in refused.value.message and cloud.b in refused.value.message
    assert c.get_volume(data).used_by == tuple(sorted((cloud.a, cloud.b)))  # kept, attached
    c.detach_volume(cloud.a, data)
    with pytest.raises(Conflict, match=cloud.b):
        c.delete_volume(data)
    c.detach_volume(cloud.b, data)
    c.create_volume_snapshot(data, "kept")
    c.delete_volume(data)  # with its snapshots
    c.delete_volume(data)
    c.delete_volume(name("never"))
    with pytest.raises(NotFound):
        c.get_volume(data)
    assert data not in {v.name for v in c.list_volumes()}
    remade = cloud.volume("data")  # a name freed is free, snapshots included
    assert c.list_volume_snapshots(remade) == []


def test_create_mounts_volumes_before_first_boot_and_they_outlive_the_instance(
    cloud: Cloud,
) -> None:
    c = cloud.connector
    data, logs = cloud.volume("data"), cloud.volume("logs")
    mounts = (Mount(data, "/srv/data"), Mount(logs, "/var/log/app", read_only=True))
    box = name("box")
    created = c.create(InstanceSpec(name=box, image=IMAGE, volumes=mounts))
    assert created.state == InstanceState.RUNNING
    if cloud.files:  # mounted right after create: LXD mounted them before starting init
        assert cloud.mounted(box, "/srv/data") and cloud.mounted(box, "/var/log/app")
        cloud.sh(box, "echo kept > /srv/data/kept && sync")
        assert "Read-only" in cloud.fails(box, "touch /var/log/app/x")
    assert c.get_volume(data).used_by == (box,)
    c.destroy(box)
    assert (c.get_volume(data).used_by, c.get_volume(logs).used_by) == ((), ())
    c.attach_volume(cloud.a, Mount(data, "/srv/data"))
    if cloud.files:
        assert cloud.sh(cloud.a, "cat /srv/data/kept") == "kept\n"
    missing = name("missing")
    with pytest.raises(NotFound, match=missing):
        c.create(InstanceSpec(name=box, image=IMAGE, volumes=(Mount(missing, "/srv/x"),)))
    with pytest.raises(NotFound):
        c.get(box)  # nothing left of it


def test_a_stopped_instance_mounts_at_its_next_start_and_lets_a_restore_through(
    cloud: Cloud,
) -> None:
    c = cloud.connector
    data = cloud.volume("data")
    box = name("box")
    c.create(InstanceSpec(name=box, image=IMAGE))
    c.stop(box, timeout=2)  # it is still booting, deaf to a clean stop: forced after 2 s
    c.attach_volume(box, Mount(data, "/srv/data"))
    assert c.get_volume(data).used_by == (box,)  # attached in its configuration
    c.create_volume_snapshot(data, "empty")
    c.restore_volume_snapshot(data, "empty")  # attached, but to nothing running
    c.start(box)
    if cloud.files:
        assert cloud.mounted(box, "/srv/data")
    with pytest.raises(Conflict, match=box):
        c.restore_volume_snapshot(data, "empty")
    c.destroy(box)


def test_snapshots_are_taken_listed_restored_and_deleted(cloud: Cloud) -> None:
    c = cloud.connector
    data = cloud.volume("data", tags={"owner": "alice"})
    c.attach_volume(cloud.a, Mount(data, "/srv/data"))
    if cloud.files:
        cloud.sh(cloud.a, "echo one > /srv/data/kept && sync")
    taken = c.create_volume_snapshot(data, "second")  # named out of order: listed as taken
    assert taken.name == "second"
    c.create_volume_snapshot(data, "first")
    assert [s.name for s in c.list_volume_snapshots(data)] == ["second", "first"]
    with pytest.raises(Conflict):
        c.create_volume_snapshot(data, "second")
    with pytest.raises(Conflict, match=cloud.a):  # attached to a running instance
        c.restore_volume_snapshot(data, "second")
    if cloud.files:
        cloud.sh(cloud.a, "rm /srv/data/kept && echo new > /srv/data/later && sync")
    c.detach_volume(cloud.a, data)
    c.restore_volume_snapshot(data, "second")
    assert [s.name for s in c.list_volume_snapshots(data)] == ["second", "first"]  # kept
    assert c.get_volume(data).tags["owner"] == "alice"
    c.attach_volume(cloud.a, Mount(data, "/srv/data"))
    if cloud.files:
        assert cloud.sh(cloud.a, "cat /srv/data/kept") == "one\n"
        assert cloud.sh(cloud.a, "ls /srv/data") == "kept\n"
    with pytest.raises(NotFound, match="nothing"):
        c.restore_volume_snapshot(data, "nothing")
    c.delete_volume_snapshot(data, "second")
    c.delete_volume_snapshot(data, "second")  # idempotent
    assert [s.name for s in c.list_volume_snapshots(data)] == ["first"]
    missing = name("missing")
    calls: list[Callable[[], object]] = [
        lambda: c.create_volume_snapshot(missing, "x"),
        lambda: c.list_volume_snapshots(missing),
        lambda: c.restore_volume_snapshot(missing, "x"),
        lambda: c.delete_volume_snapshot(missing, "x"),
    ]
    for call in calls:
        with pytest.raises(NotFound):
            call()


def test_a_clone_has_the_files_of_its_source_and_goes_its_own_way(cloud: Cloud) -> None:
    c = cloud.connector
    source = cloud.volume("src", 48 * MiB, tags={"owner": "alice"})
    c.attach_volume(cloud.a, Mount(source, "/srv/src"))
    if cloud.files:
        cloud.sh(cloud.a, "echo then > /srv/src/f && sync")
    c.create_volume_snapshot(source, "then")
    if cloud.files:
        cloud.sh(cloud.a, "echo now > /srv/src/f && sync")
    now = cloud.volume("now", 16 * MiB, source=source, tags={"owner": "bob"})
    then = cloud.volume("then", 96 * MiB, source=f"{source}/then")
    assert c.get_volume(now).size_bytes >= 48 * MiB  # at least the source's size
    assert c.get_volume(then).size_bytes >= 96 * MiB
    assert c.get_volume(now).tags.get("owner") == "bob"  # its own tags, not the source's
    assert "owner" not in c.get_volume(then).tags
    assert c.list_volume_snapshots(now) == []
    c.attach_volume(cloud.b, Mount(now, "/srv/now"))
    c.attach_volume(cloud.b, Mount(then, "/srv/then"))
    if cloud.files:
        assert cloud.sh(cloud.b, "cat /srv/now/f /srv/then/f") == "now\nthen\n"
        cloud.sh(cloud.b, "echo clone > /srv/now/f && sync")
        assert cloud.sh(cloud.a, "cat /srv/src/f") == "now\n"
        cloud.sh(cloud.a, "echo source > /srv/src/f && sync")
        assert cloud.sh(cloud.b, "cat /srv/now/f /srv/then/f") == "clone\nthen\n"
    for missing in (name("missing"), f"{source}/missing"):
        made = name("copy")
        cloud.volumes.append(made)
        with pytest.raises(NotFound):
            c.create_volume(VolumeSpec(name=made, size_bytes=16 * MiB, source=missing))
        with pytest.raises(NotFound):
            c.get_volume(made)  # nothing created


def test_resize_sets_what_can_be_written_and_never_shrinks_below_the_files(cloud: Cloud) -> None:
    c = cloud.connector
    data = cloud.volume("data", 32 * MiB)
    c.attach_volume(cloud.a, Mount(data, "/srv/data"))
    write = "dd if=/dev/zero of=/srv/data/{0} bs=1M count={1} conv=fdatasync && sync"
    if cloud.files:  # on btrfs the size is a quota: df shows the pool, writes meet the quota
        assert "quota exceeded" in cloud.fails(cloud.a, write.format("big", 48))
        cloud.sh(cloud.a, "rm /srv/data/big && sync")
    grown = c.resize_volume(data, 96 * MiB)  # attached and mounted: no restart
    assert grown.size_bytes == 96 * MiB and grown.used_by == (cloud.a,)
    assert c.get_volume(data).size_bytes == 96 * MiB
    if cloud.files:
        cloud.sh(cloud.a, write.format("big", 48))
        with pytest.raises(Conflict, match="take"):
            c.resize_volume(data, 40 * MiB)  # below the 48 MiB written
        assert c.get_volume(data).size_bytes == 96 * MiB  # nothing changed
        cloud.sh(cloud.a, write.format("more", 8))  # still writable up to its size
        cloud.sh(cloud.a, "rm /srv/data/more && sync")
    shrunk = c.resize_volume(data, 64 * MiB)
    assert shrunk.size_bytes == 64 * MiB
    if cloud.files:
        assert "quota exceeded" in cloud.fails(cloud.a, write.format("more", 24))
        c.create_volume_snapshot(data, "s")
        with pytest.raises(Conflict, match="snapshots"):  # LXD cannot say what it holds then
            c.resize_volume(data, 56 * MiB)
        assert c.resize_volume(data, 80 * MiB).size_bytes == 80 * MiB  # growing is fine
    with pytest.raises(NotFound):
        c.resize_volume(name("missing"), 64 * MiB)


def test_attaches_racing_on_one_instance_lose_nothing(cloud: Cloud) -> None:
    """Two changes to one instance's devices at once, in rounds: an attach and a detach (a
    detach that wrote back the devices it read would drop the attach), and two attaches at
    one path (exactly one wins, the other is told)."""
    c = cloud.connector
    one, two, three = cloud.volume("one"), cloud.volume("two"), cloud.volume("three")

    def together(*calls: Callable[[], None]) -> list[StratusError | None]:
        start = threading.Barrier(len(calls))
        outcomes: list[StratusError | None] = [None] * len(calls)

        def run(i: int) -> None:
            start.wait()
            try:
                calls[i]()
            except StratusError as exc:
                outcomes[i] = exc

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        return outcomes

    for _ in range(3):
        c.attach_volume(cloud.a, Mount(one, "/mnt/one"))
        outcomes = together(
            lambda: c.detach_volume(cloud.a, one),
            lambda: c.attach_volume(cloud.a, Mount(two, "/mnt/two")),
        )
        assert outcomes == [None, None]
        assert (c.get_volume(one).used_by, c.get_volume(two).used_by) == ((), (cloud.a,))
        c.detach_volume(cloud.a, two)
        outcomes = together(
            lambda: c.attach_volume(cloud.a, Mount(two, "/mnt/race")),
            lambda: c.attach_volume(cloud.a, Mount(three, "/mnt/race")),
        )
        assert sorted(type(o).__name__ for o in outcomes) == ["Conflict", "NoneType"]
        winner, loser = (two, three) if outcomes[0] is None else (three, two)
        assert (c.get_volume(winner).used_by, c.get_volume(loser).used_by) == ((cloud.a,), ())
        c.detach_volume(cloud.a, winner)


def test_a_change_made_between_the_read_and_the_write_is_not_lost(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LXD's side of the race, made to happen every time: another client changes the
    instance's devices after the connector read them and before it writes them back. The
    write carries the ETag of the read, LXD refuses it, and the connector decides again."""
    c = cloud.connector
    if not isinstance(c, LxdConnector):
        pytest.skip("the fake changes devices under one lock: nothing can come in between")
    one, two, three = cloud.volume("one"), cloud.volume("two"), cloud.volume("three")
    other = LxdConnector(endpoint=c.api.endpoint, profile=c.profile)
    read = c.api.get_with_etag
    meddle: list[Callable[[], None]] = []
    reads: list[str] = []

    def read_then_meddle(path: str, **params: object) -> tuple[object, str]:
        got = read(path, **params)  # type: ignore[arg-type]
        reads.append(path)
        while meddle:
            meddle.pop()()
        return got

    monkeypatch.setattr(c.api, "get_with_etag", read_then_meddle)
    try:
        c.attach_volume(cloud.a, Mount(one, "/mnt/one"))
        meddle.append(lambda: other.attach_volume(cloud.a, Mount(two, "/mnt/two")))
        c.detach_volume(cloud.a, one)  # writes the devices back without /mnt/one
        assert len(reads) == 3  # the attach's, the detach's, and the detach's again
        assert (c.get_volume(one).used_by, c.get_volume(two).used_by) == ((), (cloud.a,))
        if cloud.files:
            assert cloud.mounted(cloud.a, "/mnt/two") and not cloud.mounted(cloud.a, "/mnt/one")
        meddle.append(lambda: other.attach_volume(cloud.a, Mount(three, "/mnt/race")))
        with pytest.raises(Conflict, match="/mnt/race"):
            c.attach_volume(cloud.a, Mount(one, "/mnt/race"))
        assert (c.get_volume(one).used_by, c.get_volume(three).used_by) == ((), (cloud.a,))
    finally:
        other.close()


def test_a_connector_without_volumes_refuses_them(tmp_path_factory: pytest.TempPathFactory) -> None:
    local = LocalProcConnector(root=str(tmp_path_factory.mktemp("local")))
    assert Capability.VOLUMES not in local.capabilities
    spec = InstanceSpec(name=name("box"), image=IMAGE, volumes=(Mount("v", "/srv/v"),))
    with pytest.raises(NotSupported, match="no volumes"):
        local.create(spec)
    with pytest.raises(NotSupported, match="no volumes"):
        local.create_volume(VolumeSpec(name="v", size_bytes=64 * MiB))
    assert local.list_instances() == []
