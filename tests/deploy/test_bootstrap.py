"""The node bootstrap (user-data): it writes the configuration, and runs the agent zipapp only
when the bytes it downloaded have the digest it carries."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from stratuslab.deploy import agent_bundle, bootstrap

GOOD = b"#!/usr/bin/env python3\nthe agent\n"
GOOD_SHA256 = hashlib.sha256(GOOD).hexdigest()


class Downloads:
    """A server of /agent/stratus-agent.pyz answering each request with the next body given
    (the last one again once they are used up)."""

    def __init__(self, bodies: list[bytes]) -> None:
        self.bodies = bodies
        self.served = 0
        downloads = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                assert self.path == f"/agent/{agent_bundle.NAME}"
                body = downloads.bodies[min(downloads.served, len(downloads.bodies) - 1)]
                downloads.served += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def downloads() -> Iterator[Downloads]:
    served = Downloads([GOOD])
    try:
        yield served
    finally:
        served.server.shutdown()
        served.server.server_close()


def run_bootstrap(
    tmp_path: Path, url: str, *, attempts: int = 5
) -> subprocess.CompletedProcess[str]:
    """The bootstrap with the node's files under ``tmp_path`` and a python3 that only says how
    it was called."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    python3 = fake_bin / "python3"
    python3.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "python3.args"}\n')
    python3.chmod(0o755)
    script = bootstrap.script(
        server=url,
        run_id="run-1",
        node_instance="web.1",
        token="secret",
        sha256=GOOD_SHA256,
        root=str(tmp_path),
        attempts=attempts,
    )
    return subprocess.run(
        ["sh", "-c", script],
        env={"PATH": f"{fake_bin}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.spawns
def test_the_agent_with_the_expected_digest_is_installed(
    tmp_path: Path, downloads: Downloads
) -> None:
    done = run_bootstrap(tmp_path, downloads.url)
    assert done.returncode == 0, done.stderr
    agent = tmp_path / "opt/stratus" / agent_bundle.NAME
    assert agent.read_bytes() == GOOD and agent.stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "python3.args").read_text() == f"{agent} install\n"
    conf = tmp_path / "etc/stratus/agent.conf"
    assert json.loads(conf.read_text()) == {
        "server": downloads.url,
        "run": "run-1",
        "node_instance": "web.1",
        "token": "secret",
    }
    assert conf.stat().st_mode & 0o777 == 0o600


@pytest.mark.spawns
def test_other_bytes_are_refused_and_downloaded_again(tmp_path: Path, downloads: Downloads) -> None:
    downloads.bodies = [GOOD + b"# tampered\n", GOOD]
    done = run_bootstrap(tmp_path, downloads.url)
    assert done.returncode == 0, done.stderr
    assert downloads.served == 2
    assert f", not {GOOD_SHA256}: not run" in done.stderr
    assert (tmp_path / "opt/stratus" / agent_bundle.NAME).read_bytes() == GOOD
    assert (tmp_path / "python3.args").exists()


@pytest.mark.spawns
def test_an_agent_that_never_matches_is_never_run(tmp_path: Path, downloads: Downloads) -> None:
    downloads.bodies = [b"something else\n"]
    done = run_bootstrap(tmp_path, downloads.url, attempts=2)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        f"cannot fetch the agent (SHA-256 {GOOD_SHA256}) from {downloads.url}/agent/"
        f"{agent_bundle.NAME}"
    )
    assert downloads.served == 2
    assert not (tmp_path / "python3.args").exists()
    assert list((tmp_path / "opt/stratus").iterdir()) == []  # nothing of it is left


def test_user_data_carries_the_digest_of_this_servers_agent() -> None:
    text = bootstrap.user_data(
        server="http://10.0.0.1:8421/", run_id="r", node_instance="db.1", token="t"
    )
    assert f"\nexpected={agent_bundle.sha256()}\n" in text
    assert f"\nurl=http://10.0.0.1:8421/agent/{agent_bundle.NAME}\n" in text
    assert f"\nagent={agent_bundle.NODE_PATH}\n" in text
    assert text.endswith('\nexec python3 "$agent" install\n')
