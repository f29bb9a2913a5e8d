"""End-to-end fixtures: the real `stratus` CLI, the real server, the real LXD cloud.

Each test session gets its own data directory (store, token, server log), its own server port
and its own instance-name prefix; everything with that prefix is deleted at the end, even when
a test failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stratuslab import config
from stratuslab.cloud.connectors.lxd_api import LxdApi
from stratuslab.errors import BackendError, Invalid, NotFound, StratusError
from tests.support import environment
from tests.verify.conftest import git_server  # noqa: F401  (a real git server, for watches)

Stratus = Callable[..., subprocess.CompletedProcess[str]]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def live_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("live")
    prefix = f"test-{secrets.token_hex(3)}"
    env = {
        **os.environ,
        **environment(root, STRATUS_INSTANCE_PREFIX=prefix, STRATUS_SERVER_PORT=str(_free_port())),
    }
    env.pop("STRATUS_SERVER_URL", None)
    try:
        yield env
    finally:
        stratus_bin = [sys.executable, "-m", "stratuslab"]
        subprocess.run(
            [*stratus_bin, "server", "stop"], env=env, capture_output=True, timeout=60, check=False
        )
        delete_instances(prefix)


def delete_instances(prefix: str) -> None:
    """Delete every LXD instance whose name starts with ``prefix``; one that vanishes meanwhile
    (a run's teardown got there first) does not stop the others from being deleted."""
    settings = config.load()
    api = LxdApi(settings.lxd_endpoint)
    failures: list[str] = []
    try:
        for url in api.get("/1.0/instances"):
            name = url.rsplit("/", 1)[-1]
            if name.startswith(prefix):
                try:
                    destroy_container(api, name)
                except StratusError as exc:
                    failures.append(f"{name}: {exc}")
    finally:
        api.close()
    assert not failures, f"instances left behind: {failures}"


def destroy_container(api: LxdApi, name: str) -> None:
    """Stop (forced) and delete LXD instance ``name`` behind StratusLab's back, as
    `lxc delete --force` does; an instance that is already gone is fine."""
    with contextlib.suppress(NotFound, Invalid, BackendError):  # gone, or stopped already
        api.put(LxdApi.path("instances", name, "state"), {"action": "stop", "force": True})
    with contextlib.suppress(NotFound):
        api.delete(LxdApi.path("instances", name))


def cli_json(stratus: Stratus, *args: str) -> Any:
    """What `stratus ARGS... -o json` printed, once it has succeeded."""
    result = stratus(*args, "-o", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def cli(env: dict[str, str]) -> Stratus:
    """`stratus ARGS...` as a user runs it in the installation ``env`` names, its local cloud
    recorded first."""

    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "stratuslab", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    init = run("cloud", "init", "-o", "json")
    assert init.returncode == 0, init.stderr
    return run


@pytest.fixture(scope="session")
def stratus(live_env: dict[str, str]) -> Stratus:
    """Run `stratus ARGS...` as a user would; the local cloud is recorded in this session."""
    return cli(live_env)


@pytest.fixture(scope="session")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@pytest.fixture
def prefix(live_env: dict[str, str]) -> str:
    return live_env["STRATUS_INSTANCE_PREFIX"]


@pytest.fixture
def lxd() -> Iterator[LxdApi]:
    api = LxdApi(config.load().lxd_endpoint)
    yield api
    api.close()
