"""`stratus-agent.pyz install`: the tools, the unit, and a started agent, idempotently."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import time
import zipfile

import pytest

from stratuslab.deploy.agent.tools import TOOL_NAMES
from tests.deploy.agent.conftest import PYTHON, Node, alive, eventually, tagged
from tests.deploy.agent.fakeserver import FakeRun

pytestmark = pytest.mark.spawns


def agents(node: Node) -> list[int]:
    return [pid for pid, command in tagged(node.tag).items() if command.endswith(" run")]


def test_install_writes_the_tools_and_the_unit(node: Node) -> None:
    node.bin_dir.mkdir()
    (node.bin_dir / "ss-get").symlink_to("/nowhere/old-ss-get")  # a stale link is replaced
    done = node.tool("install", STRATUS_AGENT_SYSTEMD="1", PATH=_fake_systemctl(node))
    assert done.returncode == 0, done.stderr
    assert sorted(path.name for path in node.bin_dir.iterdir()) == sorted(TOOL_NAMES)
    for name in TOOL_NAMES:
        tool = node.bin_dir / name
        assert not tool.is_symlink() and os.access(tool, os.X_OK)
        assert f"sys.path.insert(0, {str(node.agent)!r})" in tool.read_text()
    with zipfile.ZipFile(node.agent) as archive:  # compiled once, by the server, for its Python
        assert archive.read("stratus_agent/tools.pyc")[:4] == importlib.util.MAGIC_NUMBER
    random = [str(node.bin_dir / "ss-random"), "-s", "7"]
    drawn = subprocess.run(
        random, env=node.env, capture_output=True, text=True, timeout=30, check=False
    )
    assert drawn.returncode == 0 and len(drawn.stdout.strip()) == 7
    unit_path = node.unit_dir / "stratus-agent.service"
    unit = unit_path.read_text()
    written = {path: path.stat().st_mtime_ns for path in (unit_path, *node.bin_dir.iterdir())}
    assert "\n[Service]\nType=simple\n" in unit
    assert f"\nExecStart={PYTHON} {node.agent} run\n" in unit
    assert "\nRestart=on-failure\nRestartSec=2\n" in unit
    assert f'\nEnvironment="STRATUS_AGENT_CONF={node.conf}"\n' in unit
    assert "node-token" not in unit
    assert (node.root / "systemctl.calls").read_text().splitlines() == [
        "daemon-reload",
        "start --no-block stratus-agent",
    ]
    assert not (node.state_dir / "agent.pid").exists()  # systemd starts it, not install

    again = node.tool("install", STRATUS_AGENT_SYSTEMD="1", PATH=_fake_systemctl(node))
    assert again.returncode == 0, again.stderr
    assert (node.unit_dir / "stratus-agent.service").read_text() == unit
    assert all(not (node.bin_dir / name).is_symlink() for name in TOOL_NAMES)
    # Not rewritten: nothing changed, so nothing that watches them is disturbed.
    assert {path: path.stat().st_mtime_ns for path in written} == written


def _fake_systemctl(node: Node) -> str:
    fake_bin = node.root / "fake-bin"
    fake_bin.mkdir(exist_ok=True)
    systemctl = fake_bin / "systemctl"
    systemctl.write_text(f'#!/bin/sh\necho "$*" >> {node.root / "systemctl.calls"}\n')
    systemctl.chmod(0o755)
    return f"{fake_bin}:{node.env['PATH']}"


def test_without_systemd_install_starts_one_detached_agent(node: Node, fake_run: FakeRun) -> None:
    fake_run.advance_on_complete = False
    fake_run.set("ss:state", "Provisioning")
    done = node.tool("install")
    assert done.returncode == 0, done.stderr
    assert "the agent started (no systemd)" in done.stdout
    assert fake_run.wait_until(lambda: ("web.1", "Provisioning") in fake_run.completes)
    pid = int((node.state_dir / "agent.pid").read_text())
    assert agents(node) == [pid]

    again = node.tool("install")
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout
    time.sleep(0.5)
    assert agents(node) == [pid]

    fake_run.set("ss:state", "Done")
    assert eventually(lambda: not alive(pid))
    assert "the run is over (Done)" in node.agent_log()


def test_a_second_agent_leaves_the_run_to_the_first(node: Node, fake_run: FakeRun) -> None:
    fake_run.set("ss:state", "Initializing")
    first = node.start()
    assert eventually(lambda: "agent of web.1" in node.agent_log())
    second = node.start()
    assert second.wait(10) == 0
    assert "another agent is running" in node.agent_log()
    assert first.poll() is None
