"""On real LXD, through the volume service: a volume attached to a running container holds
what is written to it, outlives the container when it is killed, and gives it to the next one
it is attached to."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stratuslab import config
from stratuslab.cloud import clouds
from stratuslab.cloud.connectors.lxd import LxdConnector
from stratuslab.cloud.instances import InstanceService, RunRequest
from stratuslab.cloud.volumes import VolumeService
from stratuslab.db.session import dispose, engine_for
from stratuslab.errors import Conflict

pytestmark = pytest.mark.lxd


@dataclass
class World:
    lxd: LxdConnector
    instances: InstanceService
    volumes: VolumeService


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root: Path = tmp_path_factory.mktemp("volumes-lxd")
    url = f"sqlite:///{root / 'stratus.db'}"
    engine = engine_for(url)
    settings = config.load()
    options = {"endpoint": settings.lxd_endpoint, "profile": settings.lxd_profile}
    clouds.record(engine, name="local", connector="lxd", options=options)
    lxd = LxdConnector(**options)
    token = secrets.token_hex(4)
    prefix, owner = f"test-volsvc-{token}", f"test-{token}"  # ours alone: cleaned up by them
    instances = InstanceService(engine, owner=owner, connectors=lambda _c: lxd, name_prefix=prefix)
    volumes = VolumeService(engine, owner=owner, connectors=lambda _c: lxd, instances=instances)
    try:
        yield World(lxd, instances, volumes)
    finally:  # clean up even when a test failed
        for listed in lxd.list_instances(addresses=False):
            if listed.name.startswith(prefix):
                lxd.destroy(listed.name)
        for volume in lxd.list_volumes(tags={"owner": owner}):
            lxd.delete_volume(volume.name)
        lxd.close()
        dispose(url)


def test_a_volume_keeps_its_files_when_its_instance_is_killed_and_gives_them_to_the_next(
    world: World,
) -> None:
    volumes, instances = world.volumes, world.instances
    data = volumes.create("data", size_bytes=64 << 20)
    (first,) = instances.run(RunRequest(image="debian-12"))
    attached = volumes.attach("data", first.id)
    assert [(a.instance, a.path) for a in attached.attachments] == [(first.id, "/mnt/data")]
    # Mounted the moment attach returns: no wait, no restart.
    wrote = instances.exec(first.id, ["sh", "-c", "echo kept-across > /mnt/data/notes && sync"])
    assert wrote.exit_code == 0, wrote.stderr
    with pytest.raises(Conflict, match=f"attached to instance {first.name}"):
        volumes.delete("data")
    instances.kill(first.id)
    shown = volumes.get("data")
    assert (shown.state, shown.attachments) == ("ready", ())
    assert world.lxd.get_volume(f"stratus-{data.id}").used_by == ()
    (second,) = instances.run(RunRequest(image="debian-12"))
    volumes.attach("data", second.id, path="/srv/data", read_only=True)
    read = instances.exec(second.id, ["cat", "/srv/data/notes"])
    assert (read.exit_code, read.stdout.strip()) == (0, "kept-across"), read.stderr
    refused = instances.exec(second.id, ["sh", "-c", "echo x > /srv/data/other"])
    assert refused.exit_code != 0  # read-only, as asked
    assert volumes.detach("data", second.id).attachments == ()
    gone = instances.exec(second.id, ["test", "-e", "/srv/data/notes"])
    assert gone.exit_code != 0  # unmounted the moment detach returns
    assert volumes.delete("data").state == "gone"
    assert world.lxd.list_volumes(tags={"id": data.id}) == []
