"""The server a CLI starts on demand keeps its own site token: a STRATUS_TOKEN in the CLI's
environment (a user's API key, say) never becomes the administrator credential of that
server. A real server process, started and stopped as the CLI does."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from stratuslab import config
from stratuslab.api import daemon
from tests.support import environment

pytestmark = pytest.mark.spawns


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_token_in_the_clis_environment_is_not_the_started_servers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    env = environment(tmp_path, STRATUS_SERVER_PORT=str(port))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    borrowed = "0123456789abcdef0123456789abcdef.not-the-site-token"
    monkeypatch.setenv("STRATUS_TOKEN", borrowed)
    settings = config.load()
    daemon.start(settings, idle_exit=60)
    try:
        site_token = settings.token_file.read_text().strip()
        assert site_token and site_token != borrowed
        url = f"http://127.0.0.1:{port}/api/runs"
        admin = httpx.get(url, headers={"Authorization": f"Bearer {site_token}"}, timeout=10)
        assert admin.status_code == 200
        refused = httpx.get(url, headers={"Authorization": f"Bearer {borrowed}"}, timeout=10)
        assert refused.status_code == 401
    finally:
        daemon.stop(settings)
