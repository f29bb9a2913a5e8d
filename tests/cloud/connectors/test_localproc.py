"""The localproc connector beyond the contract: what an instance may touch on the host, and that
nothing it started outlives it."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from stratuslab.cloud.base import InstanceSpec
from stratuslab.cloud.connectors.localproc import OVERLAID, PRIVATE, LocalProcConnector
from stratuslab.cloud.types import InstanceState
from stratuslab.errors import NotFound, NotSupported
from tests.support import wait_until

pytestmark = pytest.mark.spawns


@pytest.fixture
def connector(tmp_path: Path) -> Iterator[LocalProcConnector]:
    made = LocalProcConnector(root=str(tmp_path / "instances"), env={"GREETING": "hello"})
    try:
        yield made
    finally:
        for instance in made.list_instances(addresses=False):
            made.destroy(instance.name)


def name() -> str:
    return f"test-{secrets.token_hex(4)}"


def sleeping(seconds: str) -> list[int]:
    """Live processes that are ``sleep SECONDS``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().split(b"\0")[:2] == [
                b"sleep",
                seconds.encode(),
            ]:
                state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
                if state not in ("Z", "X"):
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_the_user_data_writes_only_the_instances_own_files(connector: LocalProcConnector) -> None:
    marker = f"stratus-test-{secrets.token_hex(6)}"
    places = [f"{location}/{marker}" for location in (*OVERLAID, *PRIVATE)]
    writes = "".join(f"echo {marker} > {place}\n" for place in places)
    spec = InstanceSpec(name=name(), image="debian-12", user_data=f"#!/bin/sh\n{writes}")
    connector.create(spec)
    folder = connector.ex_folder(spec.name)
    wait_until(lambda: (folder / "fs" / places[-1][1:]).exists(), what="the user-data to run")

    for place in places:
        assert not Path(place).exists(), f"{place} was written on the host"
        assert (folder / "fs" / place[1:]).read_text() == f"{marker}\n"
    # The host's /etc is still read through the overlay (the linker's cache, passwd...).
    seen = connector.exec(spec.name, ["cat", "/etc/passwd", f"/etc/{marker}"])
    assert seen.stdout == Path("/etc/passwd").read_text() + f"{marker}\n"
    assert connector.exec(spec.name, ["ls", "-A", "/opt"]).stdout == f"{marker}\n"


def test_destroy_ends_every_process_the_instance_started(connector: LocalProcConnector) -> None:
    marker = f"{secrets.randbelow(10**6) + 7_000_000}"
    user_data = (
        "#!/bin/sh\n"
        f"sleep {marker} &\n"
        f"setsid sh -c 'sleep {marker}' &\n"  # another session, as a detached agent is
        f"(trap '' TERM; sleep {marker}) &\n"
    )
    spec = InstanceSpec(name=name(), image="debian-12", user_data=user_data)
    connector.create(spec)
    folder = connector.ex_folder(spec.name)
    assert wait_until(lambda: len(sleeping(marker)) == 3, what="three sleeps")

    connector.destroy(spec.name)
    assert sleeping(marker) == []
    assert not folder.exists()
    with pytest.raises(NotFound):
        connector.get(spec.name)


def test_another_connector_over_the_same_root_sees_the_same_instances(
    connector: LocalProcConnector,
) -> None:
    spec = InstanceSpec(name=name(), image="debian-12", tags={"run": "r-1", "node-instance": "a.1"})
    connector.create(spec)
    other = LocalProcConnector(root=str(connector.root))
    (seen,) = other.list_instances(tags={"run": "r-1"})
    assert (seen.name, seen.state, seen.addresses) == (
        spec.name,
        InstanceState.RUNNING,
        ("127.0.0.1",),
    )
    assert seen.tags == {"run": "r-1", "node-instance": "a.1"}
    assert other.list_instances(has_tag="node-instance", addresses=False)[0].name == spec.name
    pid = seen.extra["pid"]
    other.destroy(spec.name)
    assert not Path(f"/proc/{pid}/stat").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert connector.list_instances() == []


def test_a_stopped_instance_keeps_its_files_and_does_not_run_its_user_data_again(
    connector: LocalProcConnector,
) -> None:
    user_data = "#!/bin/sh\necho booted >> /var/log/boots\n"
    spec = InstanceSpec(name=name(), image="debian-12", user_data=user_data)
    connector.create(spec)
    boots = connector.ex_folder(spec.name) / "fs/var/log/boots"
    wait_until(boots.exists, what="the user-data to run")
    assert connector.stop(spec.name, timeout=5).state == InstanceState.STOPPED
    assert connector.start(spec.name).state == InstanceState.RUNNING
    assert connector.exec(spec.name, ["cat", "/var/log/boots"]).stdout == "booted\n"


def test_the_environment_is_the_instances_own(connector: LocalProcConnector) -> None:
    spec = InstanceSpec(name=name(), image="debian-12")
    connector.create(spec)
    env = dict(
        line.split("=", 1) for line in connector.exec(spec.name, ["env"]).stdout.splitlines()
    )
    assert env["STRATUS_AGENT_SYSTEMD"] == "0"  # PID 1 is no systemd
    assert env["GREETING"] == "hello"  # the connector's env option
    assert env["HOME"] == "/root" and "PYTHONPATH" not in env  # nothing of the server's
    python = connector.exec(spec.name, ["python3", "-c", "import sys; print(sys.version_info[0])"])
    assert python.stdout == "3\n"
    assert connector.exec(spec.name, ["sh", "-c", "echo $$"]).stdout != ""


def test_user_data_that_is_no_script_is_not_supported(connector: LocalProcConnector) -> None:
    with pytest.raises(NotSupported, match="#! script"):
        connector.create(
            InstanceSpec(name=name(), image="debian-12", user_data="#cloud-config\n{}\n")
        )
    assert connector.list_instances() == []


def test_a_root_under_a_location_instances_hide_still_works() -> None:
    """/var/tmp is one of the private locations: the instance's own folder is under it on the
    host, and must still be reachable while the mounts are made."""
    root = Path(tempfile.mkdtemp(prefix="stratus-test-", dir="/var/tmp"))
    connector = LocalProcConnector(root=str(root))
    try:
        spec = InstanceSpec(
            name=name(), image="debian-12", user_data="#!/bin/sh\necho ok > /var/tmp/x\n"
        )
        connector.create(spec)
        written = root / spec.name / "fs/var/tmp/x"
        wait_until(written.exists, what="the user-data to run")
        assert connector.exec(spec.name, ["cat", "/var/tmp/x"]).stdout == "ok\n"
        connector.destroy(spec.name)
    finally:
        for instance in connector.list_instances(addresses=False):
            connector.destroy(instance.name)
        shutil.rmtree(root)
