"""Several server processes: refused on SQLite, sharing the port on PostgreSQL (real processes).

Kills of a process holding a run's claim, with every run reaching Done and nothing left on
the backend, are measured by bench/takeover.py (the same real processes, ten trials a phase).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.stores import database
from tests.support import environment

SRC = str(Path(__file__).parents[2] / "src")


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def command(port: int) -> list[str]:
    return [sys.executable, "-m", "stratuslab", "server", "run", "--port", str(port)]


def env_of(root: Path, url: str) -> dict[str, str]:
    return {
        **environment(root, STRATUS_DATABASE_URL=url),
        "PYTHONPATH": SRC,
        "STRATUS_LXD_SUBNET": "127.0.0.2/8",
        **({} if url.startswith("sqlite") else {"STRATUS_SERVER_SHARE_PORTS": "true"}),
    }


def server(root: Path, port: int, url: str) -> subprocess.Popen[bytes]:
    with (root / f"server-{time.monotonic_ns()}.log").open("wb") as out:
        return subprocess.Popen(
            command(port), env=env_of(root, url), stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )


def health(port: int, process: subprocess.Popen[bytes]) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, f"the server exited {process.returncode}"
        try:
            return dict(httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json())
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the server did not answer"
            time.sleep(0.1)


def stopped(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    with database("postgresql", tmp_path) as made:
        yield made


@pytest.mark.spawns
def test_a_second_server_on_one_sqlite_store_is_refused_with_what_to_do(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'stratus.db'}"
    port = free_port()
    first = server(tmp_path, port, url)
    try:
        pid = health(port, first)["pid"]
        second = subprocess.run(  # on another port: the store refuses it
            command(free_port()),
            env=env_of(tmp_path, url),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        output = second.stdout + second.stderr
        assert second.returncode != 0
        assert f"another server process (pid {pid}) holds the SQLite store" in output
        assert "use PostgreSQL" in output
        assert first.poll() is None and health(port, first)["pid"] == pid  # left alone
        assert (tmp_path / "data" / "server.pid").read_text().strip() == str(pid)
    finally:
        stopped(first)
    again = server(tmp_path, port, url)  # the lock went with the first process
    try:
        assert health(port, again)["pid"] == again.pid
    finally:
        stopped(again)


@pytest.mark.spawns
@pytest.mark.postgres
def test_two_servers_on_postgresql_share_the_port_and_a_survivor_answers(
    tmp_path: Path, pg_url: str
) -> None:
    port = free_port()
    first = server(tmp_path, port, pg_url)
    second: subprocess.Popen[bytes] | None = None
    try:
        health(port, first)
        second = server(tmp_path, port, pg_url)  # the same data dir, store and port
        seen = set()
        deadline = time.monotonic() + 60
        while len(seen) < 2:  # new connections are spread over both
            assert time.monotonic() < deadline, f"only {seen} answered"
            seen.add(health(port, second)["pid"])
        assert seen == {first.pid, second.pid}
        # The pid file keeps the first: the CLI's daemon logic signals only that one.
        assert (tmp_path / "data" / "server.pid").read_text().strip() == str(first.pid)
        os.kill(first.pid, 9)
        first.wait()
        assert {health(port, second)["pid"] for _ in range(10)} == {second.pid}
    finally:
        stopped(first)
        if second is not None:
            stopped(second)
