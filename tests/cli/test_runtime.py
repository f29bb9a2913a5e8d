"""The CLI's client of the local server (or of a configured one): it sends the site token only
to a server that proved it holds it, and replaces a local server of another build by one of
its own."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import stratuslab
from stratuslab import build, config
from stratuslab.api import daemon
from stratuslab.cli.main import main
from stratuslab.cli.runtime import Runtime
from stratuslab.config import Settings
from stratuslab.errors import StratusError
from tests.api.impostor import Impostor, health
from tests.support import CliResult, environment, wait_until

TOKEN = "the-site-token-nobody-else-may-see"
OTHER_BUILD = "0123456789abcdef"


def _cli(settings: Settings, capsys: pytest.CaptureFixture[str], *args: str) -> CliResult:
    """`stratus ARGS...` in-process, with the client the CLI makes for itself."""
    runtime = Runtime()
    runtime.__dict__["settings"] = settings
    code = main(list(args), runtime=runtime)
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


@pytest.fixture
def site(settings: Settings) -> Settings:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.token_file.write_text(TOKEN + "\n")
    settings.token_file.chmod(0o600)
    return settings


def _only_health_was_asked(impostor: Impostor) -> bool:
    return all(r.method == "GET" and r.path.startswith("/health?") for r in impostor.received)


def test_an_impostor_of_this_build_gets_no_token_and_the_cli_says_so(
    site: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    posing = health(pid=4242, build=build.running(), idle_exit=300, proof="f" * 64)
    with Impostor(posing) as impostor:
        result = _cli(site.with_overrides(server_port=impostor.port), capsys, "module", "list")
    assert result.code == 77
    assert result.err.count("\n") == 1
    assert result.err.startswith(
        f"error: the server at {impostor.url} (pid 4242) did not prove it holds the site token, "
        "so the token was not sent; something may be posing as the local server"
    )
    assert impostor.received and _only_health_was_asked(impostor)
    assert not impostor.saw(TOKEN)


def test_an_impostor_of_another_build_is_neither_replaced_nor_told_the_token(
    site: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    with Impostor(health(pid=4242, build=OTHER_BUILD, idle_exit=0)) as impostor:
        result = _cli(site.with_overrides(server_port=impostor.port), capsys, "module", "list")
    assert result.code == 69
    assert result.err.count("\n") == 1
    assert result.err.startswith(
        f"error: {impostor.url} answers with a StratusLab server of another build "
        f"(pid 4242, version 0.1.0, build {OTHER_BUILD}) that was not started from "
        f"{site.data_dir}: not replacing it"
    )
    assert impostor.received and _only_health_was_asked(impostor)
    assert not impostor.saw(TOKEN)


def test_something_else_on_the_port_is_named(
    site: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    with Impostor(lambda _path: (404, "text/html", b"<h1>It works!</h1>")) as impostor:
        result = _cli(site.with_overrides(server_port=impostor.port), capsys, "module", "list")
    assert result.code == 69
    assert result.err.startswith(
        f"error: {impostor.url} answers, but not as a StratusLab server "
        "(HTTP 404: <h1>It works!</h1>)"
    )
    assert not impostor.saw(TOKEN)


def test_a_configured_server_must_prove_it_holds_the_token_too(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    with Impostor(health(pid=7, build=OTHER_BUILD, idle_exit=0)) as impostor:
        remote = settings.with_overrides(server_url=impostor.url + "/", token=TOKEN)
        result = _cli(remote, capsys, "module", "list")
    assert result.code == 77
    assert f"the server at {impostor.url} (pid 7) did not prove it holds the site token" in (
        result.err
    )
    assert impostor.received and _only_health_was_asked(impostor)
    assert not impostor.saw(TOKEN)


# -- a real server of another build ---------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def older_checkout(tmp_path: Path) -> Path:
    """This code with one file changed, as another checkout would have it."""
    copy = tmp_path / "older" / "stratuslab"
    shutil.copytree(build.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    init = copy / "__init__.py"
    init.write_text(init.read_text() + "# as an older checkout had it\n")
    return copy


@pytest.fixture
def site_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An installation of its own (data dir, port); every server it records is gone after."""
    env = {**os.environ, **environment(tmp_path / "site", STRATUS_SERVER_PORT=str(_free_port()))}
    for name in ("STRATUS_SERVER_URL", "STRATUS_TOKEN", "STRATUS_SERVER_HOST"):
        env.pop(name, None)
    settings = config.load(env)
    try:
        yield env
    finally:
        with contextlib.suppress(StratusError):
            daemon.stop(settings)
        with contextlib.suppress(OSError, ValueError):  # refused: still ours, in our data dir
            os.kill(int((settings.data_dir / "server.pid").read_text()), signal.SIGKILL)


@pytest.mark.spawns
def test_a_server_of_another_build_is_replaced_by_one_of_the_clis_in_its_mode(
    tmp_path: Path, older_checkout: Path, site_env: dict[str, str]
) -> None:
    settings = config.load(site_env)
    older_build = build.build_id(root=older_checkout)
    mine = build.running()
    assert older_build != mine

    def stratus(*args: str) -> subprocess.CompletedProcess[str]:
        cli_env = {**site_env, "PYTHONPATH": str(Path(stratuslab.__file__).parent.parent)}
        return subprocess.run(
            [sys.executable, "-m", "stratuslab", *args],
            env=cli_env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    older_command = [sys.executable, "-m", "stratuslab", "server", "run"]
    older_command += ["--port", str(settings.server_port), "--idle-exit", "600"]
    older_env = {**site_env, "PYTHONPATH": str(older_checkout.parent)}
    with (tmp_path / "older.log").open("wb") as log:
        older = subprocess.Popen(
            older_command,
            env=older_env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        first = wait_until(lambda: daemon.state(settings).build, timeout=60, what="older server")
        assert first == older_build

        status = stratus("server", "status", "-o", "json")
        assert status.returncode == 0, status.stderr
        shown = json.loads(status.stdout)
        assert (shown["pid"], shown["build"], shown["cli_build"]) == (older.pid, older_build, mine)
        assert not shown["build_matches"]

        listed = stratus("module", "list", "-o", "json")
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout) == []
        older.wait(timeout=30)  # it was stopped, gracefully
        now = daemon.state(settings)
        assert (now.build, now.idle_exit, now.proven) == (mine, 600, True)
        assert now.pid not in (None, older.pid)
        assert listed.stderr == (
            f"replaced the StratusLab server on {settings.local_server_url} of build "
            f"{older_build} (pid {older.pid}) by one of this CLI's build {mine} "
            f"(pid {now.pid}); it exits after 600 s idle\n"
        )

        status = stratus("server", "status")
        assert status.returncode == 0, status.stderr
        assert f"build {mine}, this CLI's build)" in status.stdout
    finally:
        if older.poll() is None:
            older.kill()
            older.wait()
