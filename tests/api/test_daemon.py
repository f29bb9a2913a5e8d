"""The local server as a process: what answers on its port, and what may be replaced or
stopped. Nothing here starts a process: a server of another build that is not this data dir's
is refused before anything is started or signalled."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stratuslab import build, config
from stratuslab.api import daemon
from stratuslab.config import Settings
from stratuslab.errors import BackendUnavailable
from tests.api.impostor import Impostor, health
from tests.support import environment

OTHER_BUILD = "0123456789abcdef"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """An installation under tmp_path; no store is opened here, so one kind is enough."""
    return config.load(environment(tmp_path))


def test_nothing_on_the_port_is_not_running(settings: Settings) -> None:
    with Impostor(health(pid=1)) as impostor:
        port = impostor.port
    state = daemon.state(settings.with_overrides(server_port=port))
    assert not state.running and state.build is None


def test_a_server_of_another_build_is_described(settings: Settings) -> None:
    with Impostor(health(pid=4242, build=OTHER_BUILD, idle_exit=300)) as impostor:
        state = daemon.state(settings.with_overrides(server_port=impostor.port))
    assert (state.pid, state.build, state.idle_exit, state.proven) == (
        4242,
        OTHER_BUILD,
        300,
        False,
    )
    assert state.describe() == f"pid 4242, version 0.1.0, build {OTHER_BUILD}"


def test_something_else_on_the_port_is_an_error_saying_what_answers(settings: Settings) -> None:
    with Impostor(lambda _path: (404, "text/plain", b"no such page")) as impostor:
        local = settings.with_overrides(server_port=impostor.port)
        with pytest.raises(BackendUnavailable, match=r"not as a StratusLab server.*no such page"):
            daemon.state(local)
        with pytest.raises(BackendUnavailable, match="not as a StratusLab server"):
            daemon.start(local, build=build.running())


@pytest.mark.parametrize("recorded", [None, "this process"])
def test_a_server_of_another_build_not_started_here_is_not_replaced(
    settings: Settings, recorded: str | None
) -> None:
    """Not in the pid file, or in it but not a StratusLab server's command line (this test
    process's pid, which a stale pid file could name after a reboot)."""
    pid = os.getpid()
    if recorded:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        (settings.data_dir / "server.pid").write_text(f"{pid}\n")
    with Impostor(health(pid=pid, build=OTHER_BUILD, idle_exit=0)) as impostor:
        local = settings.with_overrides(server_port=impostor.port)
        with pytest.raises(BackendUnavailable) as refused:
            daemon.start(local, build=build.running())
        with pytest.raises(BackendUnavailable) as refused_stop:
            daemon.stop(local)
    message = refused.value.message
    assert f"{impostor.url} answers with a StratusLab server of another build" in message
    assert f"(pid {pid}, version 0.1.0, build {OTHER_BUILD})" in message
    assert f"not started from {settings.data_dir}" in message
    assert f"not replacing it with this CLI's build {build.running()}" in message
    assert "\n" not in message
    assert refused.value.exit_code == 69
    assert refused_stop.value.message == (
        f"the server on {impostor.url} (pid {pid}, version 0.1.0, build {OTHER_BUILD}) "
        f"was not started from {settings.data_dir}"
    )
    assert [r.path.partition("?")[0] for r in impostor.received] == ["/health"] * 2


def test_a_server_of_this_build_is_left_running(settings: Settings) -> None:
    with Impostor(health(pid=4242, build=build.running(), idle_exit=0)) as impostor:
        started = daemon.start(
            settings.with_overrides(server_port=impostor.port), build=build.running()
        )
    assert (started.outcome, started.state.pid, started.previous) == ("running", 4242, None)


@pytest.mark.parametrize(
    ("argv", "idle_exit"),
    [
        (["/usr/bin/python3", "-P", "-m", "stratuslab", "server", "run", "--port", "1"], 0.0),
        (["python", "-m", "stratuslab", "server", "run", "--idle-exit", "300.0"], 300.0),
        (["/venv/bin/stratus", "server", "run", "--idle-exit=120"], 120.0),
        (["stratus", "server", "run", "--idle-exit"], 0.0),
    ],
)
def test_an_older_servers_idle_mode_is_read_from_its_command_line(
    argv: list[str], idle_exit: float
) -> None:
    assert daemon._is_server(argv)
    assert daemon._idle_exit_in(argv) == idle_exit


@pytest.mark.parametrize(
    "argv",
    [
        ["/usr/bin/python3", "-m", "pytest", "tests"],
        ["python", "-m", "http.server", "8421"],
        ["python", "-m", "stratuslab", "server", "status"],
        ["/opt/other/server", "run"],
        [],
    ],
)
def test_only_a_stratuslab_server_command_line_is_a_server(argv: list[str]) -> None:
    assert not daemon._is_server(argv)
