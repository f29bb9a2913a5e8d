"""Logging in with an X.509 client certificate over real TLS: the server (uvicorn, with the
site's TLS context and protocol, as `stratus server` runs its HTTPS listener) verifies the
chain against the CAs it trusts for users; a registered DN logs its user in; a proxy of that
certificate does where the site allows proxies; an unregistered DN, a certificate of another
CA, and no certificate at all do not. On both stores."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography.x509.oid import NameOID

from stratuslab.accounts.certificates import Certificates
from stratuslab.accounts.users import Accounts
from stratuslab.api import tls
from stratuslab.api.app import create_app
from stratuslab.api.server import listen, serve
from stratuslab.config import Settings
from stratuslab.db.session import engine_for
from stratuslab.principal import SERVER, Principal
from stratuslab.services import Services
from tests.accounts import pki
from tests.support import wait_until

ALICE_DN = "/O=Grid/OU=Users/CN=Alice Smith"


class Pki:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.authority = pki.ca("Users CA")
        self.server = pki.issue(
            self.authority, pki.name((NameOID.COMMON_NAME, "127.0.0.1")), server=True
        )
        self.alice = pki.issue(
            self.authority,
            pki.name(
                (NameOID.ORGANIZATION_NAME, "Grid"),
                (NameOID.ORGANIZATIONAL_UNIT_NAME, "Users"),
                (NameOID.COMMON_NAME, "Alice Smith"),
            ),
        )
        self.stranger = pki.issue(
            self.authority,
            pki.name((NameOID.ORGANIZATION_NAME, "Grid"), (NameOID.COMMON_NAME, "Carol")),
        )
        other = pki.ca("Another CA")
        self.forged = pki.issue(
            other,
            pki.name(
                (NameOID.ORGANIZATION_NAME, "Grid"),
                (NameOID.ORGANIZATIONAL_UNIT_NAME, "Users"),
                (NameOID.COMMON_NAME, "Alice Smith"),
            ),
        )
        self.ca_file = folder / "users-ca.pem"
        self.authority.write(folder, "users-ca")
        self.server_files = self.server.write(folder, "server")

    def client(self, who: pki.Issued | None, *, chain: list[pki.Issued] = ()) -> ssl.SSLContext:  # type: ignore[assignment]
        made = ssl.create_default_context(cafile=str(self.ca_file))
        if who is not None:
            cert_file, key_file = who.write(self.folder, f"client-{id(who)}", chain=list(chain))
            made.load_cert_chain(str(cert_file), str(key_file))
        return made


@pytest.fixture
def certs(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def https_server(
    settings: Settings, certs: Pki, *, allow_proxies: bool
) -> Iterator[tuple[int, Services]]:
    app = create_app(settings.with_overrides(token="test-token", tls_allow_proxies=allow_proxies))
    made = tls.context(
        cert_file=certs.server_files[0],
        key_file=certs.server_files[1],
        client_ca_file=certs.ca_file,
        allow_proxies=allow_proxies,
    )
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="on",
        http=tls.protocol_class(),
        ssl_context_factory=lambda _config, _default: made,
    )
    server = uvicorn.Server(config)
    sockets = [listen("127.0.0.1", 0)]
    port = sockets[0].getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": sockets}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the HTTPS server did not start"
        time.sleep(0.05)
    try:
        services: Services = app.state.services
        if services.accounts.principal("alice") is None:
            services.accounts.add_user("alice", caller=SERVER)
        services.certificates.register("alice", ALICE_DN, caller=Principal.for_user("alice"))
        yield port, services
    finally:
        server.should_exit = True
        thread.join(timeout=20)


@pytest.fixture
def strict(settings: Settings, certs: Pki) -> Iterator[tuple[int, Services]]:
    yield from https_server(settings, certs, allow_proxies=False)


@pytest.fixture
def with_proxies(settings: Settings, certs: Pki) -> Iterator[tuple[int, Services]]:
    yield from https_server(settings, certs, allow_proxies=True)


def get(port: int, context: ssl.SSLContext, path: str = "/api/runs") -> tuple[int, Any]:
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=20)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read() or b"null")
    finally:
        connection.close()


def test_a_registered_certificate_logs_its_user_in(
    strict: tuple[int, Services], certs: Pki
) -> None:
    port, _ = strict
    assert get(port, certs.client(certs.alice))[0] == 200
    # What it reads, it reads as alice: the certificates she registered, and nobody else's.
    status, mine = get(port, certs.client(certs.alice), "/api/certificates")
    assert status == 200 and [(c["user"], c["dn"]) for c in mine] == [("alice", ALICE_DN)]


def test_an_unregistered_dn_and_no_certificate_are_told_to_log_in(
    strict: tuple[int, Services], certs: Pki
) -> None:
    port, _ = strict
    status, body = get(port, certs.client(certs.stranger))
    assert status == 401 and body["error"]["message"] == "no user registered this certificate's DN"
    status, body = get(port, certs.client(None))
    assert status == 401 and "log in first" in body["error"]["message"]


def test_a_certificate_of_a_ca_the_site_does_not_trust_fails_the_handshake(
    strict: tuple[int, Services], certs: Pki
) -> None:
    port, _ = strict
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        get(port, certs.client(certs.forged))


def test_a_disabled_user_is_not_logged_in_by_the_certificate(
    strict: tuple[int, Services], certs: Pki
) -> None:
    port, services = strict
    services.accounts.set_disabled("alice", True, caller=SERVER)
    assert get(port, certs.client(certs.alice))[0] == 401


def test_a_proxy_logs_in_only_where_the_site_allows_proxies(settings: Settings, certs: Pki) -> None:
    proxy = pki.proxy(certs.alice)
    for allow, expected in ((False, "refused"), (True, 200)):
        for port, _ in https_server(settings, certs, allow_proxies=allow):
            try:
                status: Any = get(port, certs.client(proxy, chain=[certs.alice]))[0]
            except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
                status = "refused"  # OpenSSL refuses a proxy chain unless allowed
            assert status == expected


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_server_serves_https_for_users_beside_plain_http_and_stops_both(
    settings: Settings, certs: Pki
) -> None:
    """`stratus server run` (``serve``) with TLS settings: both listeners answer, a certificate
    logs alice in on the HTTPS one, and when the server exits (here: idle) both stop."""
    plain, secure = free_port(), free_port()
    tuned = settings.with_overrides(
        token="test-token",
        server_port=plain,
        tls_host="127.0.0.1",
        tls_port=secure,
        tls_cert_file=str(certs.server_files[0]),
        tls_key_file=str(certs.server_files[1]),
        tls_client_ca_file=str(certs.ca_file),
    )
    engine = engine_for(tuned.database_url)
    Accounts(engine).add_user("alice", caller=SERVER)
    Certificates(engine).register("alice", ALICE_DN, caller=SERVER)
    thread = threading.Thread(
        target=serve, args=(tuned,), kwargs={"host": "127.0.0.1", "port": plain, "idle_exit": 2}
    )
    thread.start()
    try:
        wait_until(lambda: _answers(secure), what="the HTTPS listener")
        health = httpx.get(f"http://127.0.0.1:{plain}/health", timeout=10)
        assert health.status_code == 200
        status, mine = get(secure, certs.client(certs.alice), "/api/certificates")
        assert status == 200 and [c["user"] for c in mine] == ["alice"]
    finally:
        thread.join(timeout=30)
    assert not thread.is_alive(), "the server did not stop"
    assert not _answers(secure) and not _answers(plain)


def _answers(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0
