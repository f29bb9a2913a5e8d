"""The connector contract. Every connector must pass this suite: the fake and localproc always,
LXD in CI (which installs and initialises it). A connector is done when it passes, not when it
imports. The ``connector`` fixture is in conftest.py, shared with test_contract_volumes.py."""

from __future__ import annotations

import hashlib
import io
import ipaddress
import secrets
import tarfile
from pathlib import Path

import pytest

from stratuslab.cloud.base import Capacity, Connector, InstanceSpec, Mount
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.cloud.types import Capability, InstanceState
from stratuslab.errors import Conflict, NotFound, NotSupported

IMAGE = "debian-12"


def name() -> str:
    return f"test-{secrets.token_hex(4)}"


def test_create_starts_a_tagged_instance_that_gets_an_ipv4_address(connector: Connector) -> None:
    spec = InstanceSpec(name=name(), image=IMAGE, tags={"id": "i-1", "owner": "alice"})
    created = connector.create(spec)
    assert created.name == spec.name
    assert created.state == InstanceState.RUNNING
    ready = connector.wait_for_address(spec.name, timeout=60)
    assert ipaddress.ip_address(ready.addresses[0]).version == 4
    assert {k: ready.tags[k] for k in ("id", "owner")} == {"id": "i-1", "owner": "alice"}
    assert connector.get(spec.name).addresses == ready.addresses


def test_resource_limits_are_applied(connector: Connector) -> None:
    spec = InstanceSpec(name=name(), image=IMAGE, cpu=1, ram_mb=256)
    connector.create(spec)
    instance = connector.get(spec.name)
    if connector.kind == "libcloud":  # sized by instance type: the smallest that fits
        assert instance.cpu and instance.ram_mb
        assert instance.cpu >= 1 and 256 <= instance.ram_mb <= 1024
        return
    assert (instance.cpu, instance.ram_mb) == (1, 256)


def test_names_are_unique(connector: Connector) -> None:
    spec = InstanceSpec(name=name(), image=IMAGE)
    connector.create(spec)
    with pytest.raises(Conflict):
        connector.create(spec)


def test_an_unknown_image_is_not_found(connector: Connector) -> None:
    with pytest.raises(NotFound, match="no image called 'no-such-image'"):
        connector.create(InstanceSpec(name=name(), image="no-such-image"))


def test_list_filters_on_tags(connector: Connector) -> None:
    marker = secrets.token_hex(4)
    mine = InstanceSpec(name=name(), image=IMAGE, tags={"batch": marker})
    other = InstanceSpec(name=name(), image=IMAGE, tags={"batch": "other"})
    connector.create(mine)
    connector.create(other)
    assert [i.name for i in connector.list_instances(tags={"batch": marker})] == [mine.name]
    assert {mine.name, other.name} <= {i.name for i in connector.list_instances()}


def test_list_compares_tag_values_exactly_whatever_they_hold(connector: Connector) -> None:
    """Values a backend's filter might match loosely ('.' as any character, case) or not at
    all ('+', spaces, quotes) are compared as they are."""
    key, marker = f"t{secrets.token_hex(4)}", secrets.token_hex(4)
    values = ["a.c", "abc", "a+b", 'x "y"  z', "Case"]
    made = {
        value: connector.create(
            InstanceSpec(name=name(), image=IMAGE, tags={key: value, "batch": marker})
        ).name
        for value in values
    }
    untagged = connector.create(InstanceSpec(name=name(), image=IMAGE, tags={"batch": marker}))
    for value in values:
        assert [i.name for i in connector.list_instances(tags={key: value})] == [made[value]]
    for near_miss in ["aab", "case", 'x "y" z', "a", ""]:
        assert connector.list_instances(tags={key: near_miss}, addresses=False) == []
    both = connector.list_instances(tags={key: "a+b", "batch": marker}, addresses=False)
    assert [i.name for i in both] == [made["a+b"]]
    carrying = connector.list_instances(has_tag=key, addresses=False)
    assert sorted(i.name for i in carrying) == sorted(made.values())
    assert {i.tags[key] for i in carrying} == set(values)
    in_batch = connector.list_instances(tags={"batch": marker}, addresses=False)
    assert untagged.name in {i.name for i in in_batch} and len(in_batch) == len(values) + 1


def test_a_listing_without_addresses_still_says_each_state(connector: Connector) -> None:
    marker = secrets.token_hex(4)
    spec = InstanceSpec(name=name(), image=IMAGE, tags={"batch": marker})
    connector.create(spec)
    ready = connector.wait_for_address(spec.name, timeout=60)
    (listed,) = connector.list_instances(tags={"batch": marker})
    assert (listed.state, listed.addresses) == (InstanceState.RUNNING, ready.addresses)
    (cheap,) = connector.list_instances(tags={"batch": marker}, addresses=False)
    assert (cheap.name, cheap.state, cheap.addresses) == (spec.name, InstanceState.RUNNING, ())
    assert cheap.tags["batch"] == marker
    connector.stop(spec.name, timeout=10)
    (stopped,) = connector.list_instances(has_tag="batch", tags={"batch": marker}, addresses=False)
    assert stopped.state == InstanceState.STOPPED


def test_stop_and_start_are_idempotent(connector: Connector) -> None:
    spec = InstanceSpec(name=name(), image=IMAGE)
    connector.create(spec)
    assert connector.stop(spec.name, timeout=10).state == InstanceState.STOPPED
    assert connector.stop(spec.name, timeout=10).state == InstanceState.STOPPED
    assert connector.get(spec.name).addresses == ()
    assert connector.start(spec.name).state == InstanceState.RUNNING
    assert connector.start(spec.name).state == InstanceState.RUNNING
    assert connector.wait_for_address(spec.name, timeout=60).addresses


def test_destroy_is_idempotent_and_removes_the_instance(connector: Connector) -> None:
    spec = InstanceSpec(name=name(), image=IMAGE)
    connector.create(spec)
    connector.destroy(spec.name)
    connector.destroy(spec.name)
    connector.destroy(name())  # never existed
    with pytest.raises(NotFound):
        connector.get(spec.name)


def test_exec_reports_output_and_exit_codes(connector: Connector) -> None:
    spec = InstanceSpec(name=name(), image=IMAGE)
    connector.create(spec)
    if Capability.EXEC not in connector.capabilities:  # a public cloud's: reached by ssh
        with pytest.raises(NotSupported, match="cannot run commands"):
            connector.exec(spec.name, ["true"])
        return
    echoed = connector.exec(spec.name, ["echo", "hello", "world"])
    assert (echoed.exit_code, echoed.stdout) == (0, "hello world\n")
    assert connector.exec(spec.name, ["false"]).exit_code == 1
    missing = connector.exec(spec.name, ["no-such-command"])
    assert missing.exit_code == 127 and "not found" in missing.stderr
    assert connector.exec(spec.name, ["hostname"]).stdout.strip() == spec.name


def test_images_and_capacity_are_reported(connector: Connector) -> None:
    assert IMAGE in [i.name for i in connector.list_images()]
    image = connector.get_image(IMAGE)
    assert image.fingerprint and image.size_bytes > 0
    if connector.kind == "lxd":  # what an entry's os-arch defaults to
        assert image.properties["architecture"] in ("x86_64", "aarch64")
    capacity = connector.capacity()
    if connector.kind == "libcloud":  # EC2 tells quotas, not what is free: nothing is made up
        assert capacity == Capacity(None, None, None, None, None)
        return
    assert capacity.cpus and capacity.cpus > 0
    assert capacity.memory_free_mb and 0 < capacity.memory_free_mb <= (
        capacity.memory_total_mb or 0
    )
    assert capacity.disk_free_mb and capacity.disk_free_mb > 0


def test_volumes_at_create_need_the_capability(connector: Connector) -> None:
    if Capability.VOLUMES in connector.capabilities:  # test_contract_volumes.py covers those
        return
    spec = InstanceSpec(name=name(), image=IMAGE, volumes=(Mount("data", "/mnt/data"),))
    with pytest.raises(NotSupported):
        connector.create(spec)
    with pytest.raises(NotFound):  # nothing was made
        connector.get(spec.name)
    with pytest.raises(NotSupported, match="has no volumes"):
        connector.list_volumes()


def test_a_missing_instance_is_not_found(connector: Connector) -> None:
    with pytest.raises(NotFound):
        connector.get(name())


def test_publish_makes_an_image_of_a_running_instance_and_delete_is_idempotent(
    connector: Connector,
) -> None:
    spec = InstanceSpec(name=name(), image=IMAGE)
    connector.create(spec)
    alias = f"{spec.name}-image"
    if Capability.PUBLISH_IMAGE not in connector.capabilities:
        with pytest.raises(NotSupported):
            connector.publish_image(spec.name, alias=alias)
        return
    # Where the connector runs shell commands (LXD), the image holds what the instance wrote.
    wrote = connector.exec(spec.name, ["sh", "-c", "echo baked > /root/marker"]).exit_code == 0
    assert wrote or connector.kind == "fake"
    try:
        image = connector.publish_image(
            spec.name, alias=alias, properties={"stratus.test": "yes"}, description="published"
        )
        assert image.name == alias and image.properties["stratus.test"] == "yes"
        assert connector.get_image(alias).fingerprint == image.fingerprint
        assert connector.get(spec.name).state == InstanceState.RUNNING  # left as it was
        with pytest.raises(Conflict):
            connector.publish_image(spec.name, alias=alias)
        with pytest.raises(NotFound):
            connector.publish_image(name(), alias=f"{alias}-2")
        child = InstanceSpec(name=name(), image=alias)
        assert connector.create(child).state == InstanceState.RUNNING
        if wrote:
            assert connector.exec(child.name, ["cat", "/root/marker"]).stdout == "baked\n"
    finally:
        connector.delete_image(alias)
    connector.delete_image(alias)
    connector.delete_image(image.fingerprint)
    with pytest.raises(NotFound):
        connector.get_image(alias)


def test_snapshots_are_taken_listed_restored_and_deleted(connector: Connector) -> None:
    spec = InstanceSpec(name=name(), image=IMAGE)
    connector.create(spec)
    if Capability.SNAPSHOT not in connector.capabilities:
        with pytest.raises(NotSupported):
            connector.create_snapshot(spec.name, "before")
        return
    # Where the connector runs shell commands (LXD), a restore brings back the files.
    sh = connector.kind != "fake"
    if sh:
        connector.wait_for_address(spec.name, timeout=60)
        wrote = connector.exec(spec.name, ["sh", "-c", "echo kept > /root/kept"])
        assert wrote.exit_code == 0, wrote.stderr
    taken = connector.create_snapshot(spec.name, "before")
    assert (taken.name, taken.stateful) == ("before", False)
    assert taken.created_at is not None
    with pytest.raises(Conflict):
        connector.create_snapshot(spec.name, "before")
    connector.create_snapshot(spec.name, "second")
    assert [s.name for s in connector.list_snapshots(spec.name)] == ["before", "second"]
    if sh:
        changed = connector.exec(spec.name, ["sh", "-c", "rm /root/kept; echo new > /root/later"])
        assert changed.exit_code == 0, changed.stderr
    connector.restore_snapshot(spec.name, "before")
    assert connector.get(spec.name).state == InstanceState.RUNNING  # restored in place
    if sh:
        connector.wait_for_address(spec.name, timeout=60)
        assert connector.exec(spec.name, ["cat", "/root/kept"]).stdout == "kept\n"
        assert connector.exec(spec.name, ["test", "-e", "/root/later"]).exit_code == 1
    connector.stop(spec.name, timeout=10)
    connector.restore_snapshot(spec.name, "second")
    assert connector.get(spec.name).state == InstanceState.STOPPED  # a stopped one stays so
    with pytest.raises(NotFound, match="no snapshot called 'nothing'"):
        connector.restore_snapshot(spec.name, "nothing")
    connector.delete_snapshot(spec.name, "before")
    connector.delete_snapshot(spec.name, "before")  # idempotent
    assert [s.name for s in connector.list_snapshots(spec.name)] == ["second"]
    missing = name()
    for call in (
        lambda: connector.create_snapshot(missing, "x"),
        lambda: connector.list_snapshots(missing),
        lambda: connector.restore_snapshot(missing, "x"),
        lambda: connector.delete_snapshot(missing, "x"),
    ):
        with pytest.raises(NotFound):
            call()


def test_an_exported_image_is_the_tarball_whose_sha256_is_its_fingerprint(
    connector: Connector, tmp_path: Path
) -> None:
    dest = tmp_path / "image.tar"
    if Capability.EXPORT_IMAGE not in connector.capabilities:
        with pytest.raises(NotSupported, match="cannot export images"):
            connector.export_image(IMAGE, dest)
        assert not dest.exists()
        return
    exported = IMAGE
    if isinstance(connector, FakeConnector):  # what it was made with has no bytes: import some
        with pytest.raises(NotSupported, match="no bytes for image 'debian-12'"):
            connector.export_image(IMAGE, dest)
        archive = image_archive(tmp_path / "archive.tar")
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        exported = f"test-{secrets.token_hex(4)}"
        connector.import_image(archive, name=exported, sha256=digest)
    image = connector.export_image(exported, dest)
    assert image.fingerprint == connector.get_image(exported).fingerprint
    digest = hashlib.sha256()
    with dest.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    assert digest.hexdigest() == image.fingerprint
    assert connector.get_image(exported) == image  # still there, as it was
    with pytest.raises(NotFound):
        connector.export_image("no-such-image", tmp_path / "none.tar")
    assert not (tmp_path / "none.tar").exists()


def image_archive(path: Path) -> Path:
    """A small unified image tarball: metadata.yaml and a root file system of one file."""
    metadata = b"architecture: x86_64\ncreation_date: 1\nproperties:\n  os: debian\n"
    with tarfile.open(path, "w") as tar:
        for member, data in (("metadata.yaml", metadata), ("rootfs/etc/hostname", b"box\n")):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
