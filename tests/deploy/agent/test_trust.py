"""Whom a node trusts: the server its site CA vouches for, at the address it calls, and nobody
else. Real TLS servers on loopback: the site's, one of another CA for the same address (a
neighbour posing as the server), one of the site's CA for another address, and one speaking
plain HTTP. The node's token reaches the first only."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from stratuslab.cloud import sitecert
from stratuslab.deploy.agent.client import RunClient
from stratuslab.deploy.agent.config import Config
from stratuslab.deploy.agent.exits import UNREACHABLE, USAGE, ToolError

TOKEN = "node-token-of-web.1"


class Quiet(ThreadingHTTPServer):
    """Says nothing of the handshakes it fails: refusing them is what the node is for."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass


class Answering:
    """An HTTPS server on 127.0.0.1 with the certificate of ``tls``, answering every GET with
    'ready' and recording the Authorization header of each request."""

    def __init__(self, tls: ssl.SSLContext) -> None:
        self.authorizations: list[str | None] = []
        answering = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                answering.authorizations.append(self.headers.get("Authorization"))
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "5")
                self.end_headers()
                self.wfile.write(b"ready")

            def log_message(self, *_args: object) -> None:
                pass

        self.httpd = Quiet(("127.0.0.1", 0), Handler)
        self.httpd.socket = tls.wrap_socket(
            self.httpd.socket, server_side=True, do_handshake_on_connect=False
        )
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Listening:
    """Something on the port that is not a TLS server: it accepts connections and records
    every byte sent to it, answering nothing."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"https://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            with connection:
                connection.settimeout(2)
                try:
                    while chunk := connection.recv(65536):
                        self.received += chunk
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


def site_in(folder: Path, *names: str) -> sitecert.SiteCertificate:
    return sitecert.ensure_in(folder, names=list(names))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> sitecert.SiteCertificate:
    return site_in(tmp_path_factory.mktemp("site"), "127.0.0.1")


def serving(tls: ssl.SSLContext) -> Iterator[Answering]:
    server = Answering(tls)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def genuine(site: sitecert.SiteCertificate) -> Iterator[Answering]:
    yield from serving(site.server_context())


@pytest.fixture
def impostor(tmp_path: Path) -> Iterator[Answering]:
    """A certificate for the very address the node calls, from a CA of its own."""
    yield from serving(site_in(tmp_path / "other", "127.0.0.1").server_context())


@pytest.fixture
def elsewhere(tmp_path: Path, site: sitecert.SiteCertificate) -> Iterator[Answering]:
    """The site CA's own certificate, for another address than the one the node calls."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    for name in (sitecert.CA_FILE, sitecert.CA_KEY):
        (folder / name).write_bytes((site.cert_file.parent / name).read_bytes())
    moved = site_in(folder, "10.210.0.77")
    assert moved.ca_pem == site.ca_pem
    yield from serving(moved.server_context())


def client(url: str, ca: str, *, retry_for: float = 0) -> RunClient:
    config = Config(server=url, run="run-1", node_instance="web.1", token=TOKEN, ca=ca, path="-")
    return RunClient(config, retry_for=retry_for)


def test_the_server_the_site_ca_vouches_for_gets_the_request_and_the_token(
    genuine: Answering, site: sitecert.SiteCertificate
) -> None:
    assert client(genuine.url, site.ca_pem).get("ready") == "ready"
    assert genuine.authorizations == [f"Bearer {TOKEN}"]


@pytest.mark.parametrize("who", ["impostor", "elsewhere"])
def test_a_server_with_another_certificate_is_refused_at_once_and_gets_no_token(
    who: str, request: pytest.FixtureRequest, site: sitecert.SiteCertificate
) -> None:
    server: Answering = request.getfixturevalue(who)
    started = time.monotonic()
    with pytest.raises(ToolError) as refused:
        client(server.url, site.ca_pem, retry_for=30).get("ready")
    assert refused.value.code == UNREACHABLE
    assert refused.value.message.startswith(f"cannot trust {server.url}: ")
    assert refused.value.message.endswith("it is not the server the site CA vouches for")
    assert time.monotonic() - started < 5  # not retried: waiting cannot make it trustworthy
    assert server.authorizations == []


def test_a_plain_http_server_never_sees_the_token(site: sitecert.SiteCertificate) -> None:
    """Something on the server's port that does not speak TLS: the node tries again until its
    period ends and says it cannot reach the server; all it ever sent was TLS hellos."""
    listening = Listening()
    try:
        with pytest.raises(ToolError) as refused:
            client(listening.url, site.ca_pem, retry_for=1).get("ready")
    finally:
        listening.close()
    assert refused.value.code == UNREACHABLE
    assert listening.received.startswith(b"\x16\x03")  # a TLS handshake record
    assert TOKEN.encode() not in listening.received
    assert b"Authorization" not in listening.received


def test_a_site_ca_that_is_not_pem_is_a_usage_error(genuine: Answering) -> None:
    with pytest.raises(ToolError) as refused:
        client(genuine.url, "not a certificate").get("ready")
    assert refused.value.code == USAGE
    assert refused.value.message.startswith("the site CA is not a PEM certificate")
    assert genuine.authorizations == []


def test_the_site_certificates_pass_strict_x509_checks(
    genuine: Answering, site: sitecert.SiteCertificate
) -> None:
    """What Python 3.13 and later check by default (VERIFY_X509_STRICT), checked here too, so
    that a node with a newer Python trusts the server just as well."""
    context = ssl.create_default_context(cadata=site.ca_pem)
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    port = int(genuine.url.rsplit(":", 1)[1])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as plain,
        context.wrap_socket(plain, server_hostname="127.0.0.1") as secured,
    ):
        assert secured.version() in ("TLSv1.2", "TLSv1.3")
