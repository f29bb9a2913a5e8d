"""The node bootstrap (user-data): it writes the configuration and the site CA, downloads the
agent zipapp over HTTPS from a server that CA vouches for only, and runs it only when the bytes
it downloaded have the digest it carries."""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from stratuslab.cloud import sitecert
from stratuslab.deploy import agent_bundle, bootstrap
from stratuslab.errors import Invalid

GOOD = b"#!/usr/bin/env python3\nthe agent\n"
GOOD_SHA256 = hashlib.sha256(GOOD).hexdigest()


class Quiet(ThreadingHTTPServer):
    """Says nothing of the handshakes it fails: the impostor's are refused on purpose."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass


class Downloads:
    """A server of /agent/stratus-agent.pyz answering each request with the next body given
    (the last one again once they are used up)."""

    def __init__(self, bodies: list[bytes], tls: ssl.SSLContext) -> None:
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

        self.server = Quiet(("127.0.0.1", 0), Handler)
        self.server.socket = tls.wrap_socket(
            self.server.socket, server_side=True, do_handshake_on_connect=False
        )
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def site_in(folder: Path) -> sitecert.SiteCertificate:
    return sitecert.ensure_in(folder, names=["127.0.0.1"])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> sitecert.SiteCertificate:
    return site_in(tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="module")
def other_site(tmp_path_factory: pytest.TempPathFactory) -> sitecert.SiteCertificate:
    """Another site's CA and certificate, for the same address: a neighbour posing as it."""
    return site_in(tmp_path_factory.mktemp("other"))


def serving(tls: ssl.SSLContext) -> Iterator[Downloads]:
    served = Downloads([GOOD], tls)
    try:
        yield served
    finally:
        served.server.shutdown()
        served.server.server_close()


@pytest.fixture
def downloads(site: sitecert.SiteCertificate) -> Iterator[Downloads]:
    yield from serving(site.server_context())


@pytest.fixture
def impostor(other_site: sitecert.SiteCertificate) -> Iterator[Downloads]:
    yield from serving(other_site.server_context())


def run_bootstrap(
    tmp_path: Path, url: str, ca: str, *, attempts: int = 5
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
        ca=ca,
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
    tmp_path: Path, downloads: Downloads, site: sitecert.SiteCertificate
) -> None:
    done = run_bootstrap(tmp_path, downloads.url, site.ca_pem)
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
        "ca": site.ca_pem,
    }
    assert conf.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / bootstrap.CA_PATH.lstrip("/")).read_text() == site.ca_pem


@pytest.mark.spawns
def test_other_bytes_are_refused_and_downloaded_again(
    tmp_path: Path, downloads: Downloads, site: sitecert.SiteCertificate
) -> None:
    downloads.bodies = [GOOD + b"# tampered\n", GOOD]
    done = run_bootstrap(tmp_path, downloads.url, site.ca_pem)
    assert done.returncode == 0, done.stderr
    assert downloads.served == 2
    assert f", not {GOOD_SHA256}: not run" in done.stderr
    assert (tmp_path / "opt/stratus" / agent_bundle.NAME).read_bytes() == GOOD
    assert (tmp_path / "python3.args").exists()


@pytest.mark.spawns
def test_an_agent_that_never_matches_is_never_run(
    tmp_path: Path, downloads: Downloads, site: sitecert.SiteCertificate
) -> None:
    downloads.bodies = [b"something else\n"]
    done = run_bootstrap(tmp_path, downloads.url, site.ca_pem, attempts=2)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        f"cannot fetch the agent (SHA-256 {GOOD_SHA256}) from {downloads.url}/agent/"
        f"{agent_bundle.NAME}"
    )
    assert downloads.served == 2
    assert not (tmp_path / "python3.args").exists()
    assert list((tmp_path / "opt/stratus").iterdir()) == []  # nothing of it is left


@pytest.mark.spawns
def test_a_server_with_another_certificate_gets_no_download_and_nothing_runs(
    tmp_path: Path, impostor: Downloads, site: sitecert.SiteCertificate
) -> None:
    """A neighbour answering on the server's address, with a certificate of its own CA for
    that very address, serves the right agent even: the node fetches nothing from it."""
    done = run_bootstrap(tmp_path, impostor.url, site.ca_pem, attempts=2)
    assert done.returncode == 1
    assert "SSL certificate problem" in done.stderr
    assert impostor.served == 0  # the handshake failed: no request was ever sent
    assert not (tmp_path / "python3.args").exists()


def test_user_data_carries_the_digest_of_this_servers_agent_and_the_site_ca(
    site: sitecert.SiteCertificate,
) -> None:
    text = bootstrap.user_data(
        server="https://10.0.0.1:8421/", ca=site.ca_pem, run_id="r", node_instance="db.1", token="t"
    )
    assert f"\nexpected={agent_bundle.sha256()}\n" in text
    assert f"\nurl=https://10.0.0.1:8421/agent/{agent_bundle.NAME}\n" in text
    assert f"<<'STRATUS_SERVER_CA'\n{site.ca_pem}STRATUS_SERVER_CA\n" in text
    conf = text.split("<<'STRATUS_AGENT_CONF'\n", 1)[1].split("\n", 1)[0]
    assert json.loads(conf)["ca"] == site.ca_pem
    assert f"\nagent={agent_bundle.NODE_PATH}\n" in text
    assert text.endswith('\nexec python3 "$agent" install\n')


@pytest.mark.parametrize(
    ("server", "ca", "message"),
    [
        ("http://10.0.0.1:8421", None, "the server URL 'http://10.0.0.1:8421' is not https://"),
        ("https://10.0.0.1:8421", "", "the site CA is not a PEM certificate"),
        ("https://10.0.0.1:8421", "not a certificate", "the site CA is not a PEM certificate"),
    ],
    ids=["plain http", "no CA", "not PEM"],
)
def test_a_bootstrap_that_would_send_the_token_in_clear_or_trust_nobody_is_refused(
    site: sitecert.SiteCertificate, server: str, ca: str | None, message: str
) -> None:
    with pytest.raises(Invalid, match=message):
        bootstrap.user_data(
            server=server,
            ca=site.ca_pem if ca is None else ca,
            run_id="r",
            node_instance="db.1",
            token="t",
        )
