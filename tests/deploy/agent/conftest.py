"""Fixtures for the node agent's tests against the fake server (test_faults.py, test_install.py):
a fake run server and a node in a temporary directory. The tests against the real server use
``real_server`` and ``real_api`` (tests/deploy/conftest.py) instead.

The agent is run as the real thing: the zipapp the server ships (``stratus-agent.pyz``, built
by ``stratuslab.deploy.agent_bundle``) run as a subprocess, with every location moved under the
test's temporary directory. Every process a test starts carries a tag in its
environment, and the ``node`` fixture kills whatever still carries it at the end, even
detached agents and the recipes they started.

The agent must run on Python 3.9: ``STRATUS_TEST_AGENT_PYTHON=/path/to/python3.9`` runs it (not
the tests) with that interpreter.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stratuslab.cloud import sitecert
from stratuslab.deploy import agent_bundle
from tests.deploy.agent.fakeserver import FakeRun, FakeServer

PYTHON = os.environ.get("STRATUS_TEST_AGENT_PYTHON") or sys.executable


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie is dead: nothing here reaps orphans)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[0] not in ("Z", "X")


def tagged(tag: str) -> dict[int, str]:
    """The live processes whose environment carries ``tag``, with their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if f"STRATUS_TEST_TAG={tag}".encode() in (entry / "environ").read_bytes():
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                if alive(int(entry.name)):
                    found[int(entry.name)] = command.strip()
        except OSError:
            continue
    return found


def eventually(predicate: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


class Node:
    """A node instance in a temporary directory: its agent zipapp, locations and environment."""

    def __init__(self, root: Path, run: FakeRun, server_url: str, ca: str) -> None:
        self.root = root
        self.tag = secrets.token_hex(6)
        self.agent = root / "opt" / agent_bundle.NAME
        self.agent.parent.mkdir()
        self.agent.write_bytes(agent_bundle.bundle().data)
        self.agent.chmod(0o755)
        self.conf = root / "agent.conf"
        self.conf.write_text(
            json.dumps(
                {
                    "server": server_url,
                    "run": run.run_id,
                    "node_instance": run.instances[0],
                    "token": run.token,
                    "ca": ca,
                }
            )
        )
        self.conf.chmod(0o600)
        self.state_dir = root / "state"
        self.log_dir = root / "log"
        self.report_dir = root / "reports"
        self.bin_dir = root / "bin"
        self.unit_dir = root / "units"
        self.apt_calls = root / "apt.calls"
        fake_apt = root / "fake-apt"
        fake_apt.write_text(f'#!/bin/sh\necho "$DEBIAN_FRONTEND $*" >> {self.apt_calls}\necho ok\n')
        fake_apt.chmod(0o755)
        inherited = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("SLIPSTREAM_", "STRATUS_"))
        }
        self.env = {
            **inherited,
            "STRATUS_TEST_TAG": self.tag,
            "TEST_ROOT": str(root),
            "STRATUS_AGENT_CONF": str(self.conf),
            "STRATUS_AGENT_STATE_DIR": str(self.state_dir),
            "STRATUS_AGENT_LOG_DIR": str(self.log_dir),
            "SLIPSTREAM_REPORT_DIR": str(self.report_dir),
            "STRATUS_AGENT_WORKDIR": str(root / "home"),
            "STRATUS_AGENT_BIN_DIR": str(self.bin_dir),
            "STRATUS_AGENT_UNIT_DIR": str(self.unit_dir),
            "STRATUS_AGENT_SYSTEMD": "0",
            "STRATUS_AGENT_APT": str(fake_apt),
            "STRATUS_AGENT_RETRY_FOR": "20",
        }
        self._processes: list[subprocess.Popen[bytes]] = []

    def tool(self, *args: str, timeout: float = 30, **env: str) -> subprocess.CompletedProcess[str]:
        """Run ``stratus-agent.pyz ARGS`` to the end."""
        return subprocess.run(
            [PYTHON, str(self.agent), *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        """Start ``stratus-agent.pyz ARGS`` (``run`` by default) in the background."""
        with (self.root / "agent.out").open("ab") as out:
            process = subprocess.Popen(
                [PYTHON, str(self.agent), *(args or ("run",))],
                env={**self.env, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self._processes.append(process)
        return process

    def install_tools(self) -> None:
        """The ss-* launchers ``install`` writes, by the agent's own ``install-tools``, without
        starting anything."""
        done = self.tool("install-tools", str(self.bin_dir))
        assert done.returncode == 0, done.stderr

    def agent_log(self) -> str:
        try:
            return (self.log_dir / "agent.log").read_text()
        except FileNotFoundError:
            return ""

    def cleanup(self) -> None:
        for pid in tagged(self.tag):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for process in self._processes:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> sitecert.SiteCertificate:
    """A site CA and a server certificate for 127.0.0.1, which the fake server serves with."""
    return sitecert.ensure_in(tmp_path_factory.mktemp("site") / "tls", names=["127.0.0.1"])


@pytest.fixture
def fake_run() -> FakeRun:
    return FakeRun()


@pytest.fixture
def server(fake_run: FakeRun, site: sitecert.SiteCertificate) -> Iterator[FakeServer]:
    server = FakeServer(fake_run, site.server_context())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def node(
    tmp_path: Path, fake_run: FakeRun, server: FakeServer, site: sitecert.SiteCertificate
) -> Iterator[Node]:
    node = Node(tmp_path, fake_run, server.url, site.ca_pem)
    try:
        yield node
    finally:
        node.cleanup()
