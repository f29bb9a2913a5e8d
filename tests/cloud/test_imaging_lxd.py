"""On real LXD, one container for the module: a running instance saved as an image that an
instance starts from with what was written before the save, and its snapshots taken, listed,
restored and deleted through the service."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stratuslab import config
from stratuslab.cloud import clouds
from stratuslab.cloud.connectors.lxd import LxdConnector
from stratuslab.cloud.imaging import ImageService
from stratuslab.cloud.instances import InstanceService, RunRequest
from stratuslab.cloud.snapshots import Snapshots
from stratuslab.db.session import dispose, engine_for

pytestmark = pytest.mark.lxd


@dataclass
class World:
    lxd: LxdConnector
    instances: InstanceService
    images: ImageService
    snapshots: Snapshots
    box: str  # the instance's id: running, with /root/before written


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root: Path = tmp_path_factory.mktemp("imaging-lxd")
    url = f"sqlite:///{root / 'stratus.db'}"
    engine = engine_for(url)
    settings = config.load()
    options = {"endpoint": settings.lxd_endpoint, "profile": settings.lxd_profile}
    clouds.record(engine, name="local", connector="lxd", options=options)
    lxd = LxdConnector(**options)
    prefix = f"test-imgops-{secrets.token_hex(4)}"
    instances = InstanceService(
        engine, owner="alice", connectors=lambda _cloud: lxd, name_prefix=prefix
    )
    images = ImageService(
        engine, owner="alice", admin=False, instances=instances, connectors=lambda _c: lxd
    )
    try:
        (view,) = instances.run(RunRequest(image="debian-12"))
        wrote = instances.exec(view.id, ["sh", "-c", "echo written-before > /root/before"])
        assert wrote.exit_code == 0, wrote.stderr
        yield World(lxd, instances, images, Snapshots(instances, lambda _c: lxd), view.id)
    finally:
        for listed in lxd.list_instances(addresses=False):  # clean up even when a test failed
            if listed.name.startswith(prefix):
                lxd.destroy(listed.name)
        lxd.close()
        dispose(url)


def test_a_saved_running_instance_starts_again_with_what_it_held(world: World) -> None:
    name = f"saved-{secrets.token_hex(3)}"
    try:
        made = world.images.save(world.box, name=name, description="saved while running")
        assert made.image.name == f"alice/{name}" and made.image.size_bytes > 0
        assert world.instances.get(world.box).state == "running"  # it kept running
        assert made.image.properties["stratus.instance"] == world.box
        (child,) = world.instances.run(RunRequest(image=f"alice/{name}"))
        read = world.instances.exec(child.id, ["cat", "/root/before"])
        assert read.stdout == "written-before\n"
        world.instances.kill(child.id)
    finally:
        world.lxd.delete_image(f"alice/{name}")
        world.images.catalog.forget(cloud="local", alias=f"alice/{name}")


def test_snapshots_through_the_service(world: World) -> None:
    taken = world.snapshots.take(world.box, "clean")
    assert [s.name for s in world.snapshots.of(world.box)] == [taken.name]
    changed = world.instances.exec(world.box, ["sh", "-c", "rm /root/before; touch /root/after"])
    assert changed.exit_code == 0, changed.stderr
    restored = world.snapshots.restore(world.box, "clean")
    assert restored.state == "running"
    world.lxd.wait_for_address(restored.name, timeout=60)
    assert world.instances.exec(world.box, ["cat", "/root/before"]).stdout == "written-before\n"
    assert world.instances.exec(world.box, ["test", "-e", "/root/after"]).exit_code == 1
    world.snapshots.delete(world.box, "clean")
    assert world.snapshots.of(world.box) == []
