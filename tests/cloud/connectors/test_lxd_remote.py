"""Remote LXD over HTTPS, on the nested host (``cloud/nested_host.py``, the session's
``nested_lxd``): enrolment, the pinning of the host's certificate, the errors a site
administrator meets, and the network between instances of both hosts and the server (those
marked ``lxd``; the errors that need no LXD host run everywhere). The connector contract runs
on it too (conftest.py's ``lxd-remote``)."""

from __future__ import annotations

import contextlib
import http.server
import secrets
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stratuslab import config
from stratuslab.cloud.base import InstanceSpec
from stratuslab.cloud.connectors.lxd import LxdConnector
from stratuslab.cloud.connectors.lxd_remote import (
    CertificateChanged,
    certificate_fingerprint,
    client_key_pair,
    enroll,
    pinned_context,
)
from stratuslab.cloud.nested_host import NestedHost
from stratuslab.errors import BackendUnavailable, Forbidden, Invalid
from tests.cloud.connectors.support import destroying, open_connector

IMAGE = "debian-12"


def name() -> str:
    return f"test-{secrets.token_hex(4)}"


def trusted_fingerprints(options: dict[str, Any]) -> set[str]:
    connector = LxdConnector(**options)
    try:
        return {c["fingerprint"] for c in connector.api.get("/1.0/certificates", recursion=1)}
    finally:
        connector.close()


# -- enrolment ---------------------------------------------------------------------------


@pytest.mark.lxd
def test_the_trust_password_enrols_a_new_client_certificate(nested_lxd: NestedHost) -> None:
    options = enroll(nested_lxd.endpoint, password=nested_lxd.trust_password, profile="stratus")
    assert options["endpoint"] == nested_lxd.endpoint
    assert options["profile"] == "stratus"
    assert "PRIVATE KEY" in options["client_key_pem"]
    connector = LxdConnector(**options)
    try:
        assert connector.api.get("/1.0")["auth"] == "trusted"
    finally:
        connector.close()
    assert certificate_fingerprint(options["client_cert_pem"]) in trusted_fingerprints(options)


@pytest.mark.lxd
def test_a_trusted_certificate_enrols_again_without_the_password(
    nested_lxd: NestedHost, remote_lxd: dict[str, Any]
) -> None:
    again = enroll(
        nested_lxd.endpoint,
        cert_pem=remote_lxd["client_cert_pem"],
        key_pem=remote_lxd["client_key_pem"],
        profile="stratus",
    )
    assert again == remote_lxd


@pytest.mark.lxd
def test_a_wrong_trust_password_is_refused(nested_lxd: NestedHost) -> None:
    with pytest.raises(Forbidden, match="refused the trust password") as refused:
        enroll(nested_lxd.endpoint, password="not-" + nested_lxd.trust_password)
    assert refused.value.hint and "core.trust_password" in refused.value.hint


@pytest.mark.lxd
def test_an_unknown_certificate_without_a_password_is_not_trusted(
    nested_lxd: NestedHost,
) -> None:
    with pytest.raises(Forbidden, match="does not trust this client certificate") as refused:
        enroll(nested_lxd.endpoint)
    assert refused.value.hint and "trust password" in refused.value.hint


@pytest.mark.lxd
def test_the_fingerprint_given_must_be_the_hosts(
    nested_lxd: NestedHost, remote_lxd: dict[str, Any]
) -> None:
    real = certificate_fingerprint(remote_lxd["server_cert_pem"])
    wrong = "ab" * 32
    with pytest.raises(Forbidden) as refused:
        enroll(nested_lxd.endpoint, password=nested_lxd.trust_password, fingerprint=wrong)
    assert real in refused.value.message and wrong in refused.value.message
    # As `lxc info` prints it: with colons, in capitals.
    spelled = ":".join(real[i : i + 2] for i in range(0, len(real), 2)).upper()
    pinned = enroll(
        nested_lxd.endpoint,
        cert_pem=remote_lxd["client_cert_pem"],
        key_pem=remote_lxd["client_key_pem"],
        fingerprint=spelled,
    )
    assert pinned["server_cert_pem"] == remote_lxd["server_cert_pem"]


def test_an_unreachable_host_is_named_with_the_cause() -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"https://127.0.0.1:{port}"
    with pytest.raises(BackendUnavailable, match=f"{url} is not reachable: connection refused"):
        enroll(url, password="x")


def test_a_host_that_never_answers_is_unavailable_within_the_timeout() -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does) and says nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"https://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(BackendUnavailable, match=r"no answer within 0\.5 s"):
            enroll(url, password="x", timeout=0.5)


def test_what_does_not_speak_tls_is_not_lxd() -> None:
    with plain_http_server() as port, pytest.raises(Invalid, match="does not speak TLS"):
        enroll(f"https://127.0.0.1:{port}", password="x")


def test_bad_endpoints_are_refused_before_any_connection() -> None:
    for bad in ("http://10.0.0.1:8443", "https://", "10.0.0.1:8443", "https://h:99999"):
        with pytest.raises(Invalid):
            enroll(bad, password="x")


# -- the pinned certificate --------------------------------------------------------------


@pytest.mark.lxd
def test_a_host_presenting_another_certificate_is_refused_and_sent_nothing(
    remote_lxd: dict[str, Any], tmp_path: Path
) -> None:
    """The enrolled options, at an address where another TLS server now answers (another
    certificate, as after a reinstall, or someone in between): refused after the handshake,
    before the request (and nothing else) is sent."""
    with impostor(tmp_path) as (port, received, impostor_fingerprint):
        moved = {**remote_lxd, "endpoint": f"https://127.0.0.1:{port}"}
        connector = LxdConnector(**moved)
        try:
            with pytest.raises(CertificateChanged) as refused:
                connector.list_instances()
        finally:
            connector.close()
    pinned = certificate_fingerprint(remote_lxd["server_cert_pem"])
    assert impostor_fingerprint in refused.value.message and pinned in refused.value.message
    assert isinstance(refused.value, Forbidden)
    assert received == [b""]  # the impostor got a handshake and no request


@pytest.mark.lxd
def test_the_connector_refuses_a_pin_that_is_not_the_hosts(
    remote_lxd: dict[str, Any],
) -> None:
    other_pem, _ = client_key_pair("someone else")
    connector = LxdConnector(**{**remote_lxd, "server_cert_pem": other_pem})
    try:
        with pytest.raises(CertificateChanged, match=certificate_fingerprint(other_pem)):
            connector.capacity()
    finally:
        connector.close()


def test_remote_options_come_whole() -> None:
    cert, key = client_key_pair()
    with pytest.raises(Invalid, match="needs client_cert_pem, client_key_pem and server_cert"):
        LxdConnector(endpoint="https://10.0.0.1:8443", client_cert_pem=cert, client_key_pem=key)


# -- the network between the hosts -------------------------------------------------------


@pytest.mark.lxd
def test_an_instance_on_the_nested_host_reaches_the_server_through_nat(
    nested_lxd: NestedHost, remote_lxd: dict[str, Any]
) -> None:
    gateway = config.load().bridge_gateway
    token = secrets.token_hex(8)
    with (
        bridge_server(gateway, token) as (port, clients),
        destroying(LxdConnector(**remote_lxd)) as remote,
    ):
        instance = name()
        remote.create(InstanceSpec(name=instance, image=IMAGE))
        remote.wait_for_address(instance, timeout=60)
        fetched = remote.exec(
            instance, ["curl", "-sS", "-m", "10", f"http://{gateway}:{port}/"], timeout=30
        )
    assert (fetched.exit_code, fetched.stdout) == (0, token), fetched.stderr
    assert clients == [nested_lxd.address]  # masqueraded by the nested host's bridge


@pytest.mark.lxd
def test_an_instance_on_this_host_reaches_one_on_the_nested_host_by_address(
    remote_lxd: dict[str, Any], tmp_path: Path
) -> None:
    local = open_connector("lxd", namespace="", root=tmp_path)
    with destroying(LxdConnector(**remote_lxd)) as remote, destroying(local) as here:
        there, near = name(), name()
        remote.create(InstanceSpec(name=there, image=IMAGE))
        here.create(InstanceSpec(name=near, image=IMAGE))
        address = remote.wait_for_address(there, timeout=60).addresses[0]
        served = remote.exec(
            there,
            [
                "sh",
                "-c",
                f"echo {there} > /root/index.html && cd /root && "
                "setsid python3 -m http.server 8080 </dev/null >/dev/null 2>&1 &",
            ],
        )
        assert served.exit_code == 0, served.stderr
        here.wait_for_address(near, timeout=60)
        fetched = here.exec(
            near,
            [
                "curl",
                "-sS",
                "-m",
                "5",
                "--retry",
                "10",
                "--retry-connrefused",
                "--retry-delay",
                "1",
                f"http://{address}:8080/index.html",
            ],
            timeout=60,
        )
    assert (fetched.exit_code, fetched.stdout.strip()) == (0, there), fetched.stderr


# -- helpers -----------------------------------------------------------------------------


@contextlib.contextmanager
def bridge_server(host: str, body: str) -> Iterator[tuple[int, list[str]]]:
    """An HTTP server on ``host`` (this host's bridge gateway) answering ``body``; the
    addresses of its clients are collected."""
    clients: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            clients.append(self.client_address[0])
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((host, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], clients
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextlib.contextmanager
def plain_http_server() -> Iterator[int]:
    """A loopback server answering every connection with plain HTTP (not TLS)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                with conn:
                    conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (a close alone does not)
        listener.close()
        thread.join(timeout=5)


@contextlib.contextmanager
def impostor(folder: Path) -> Iterator[tuple[int, list[bytes], str]]:
    """A loopback TLS server with a certificate of its own: what it receives after each
    handshake is collected (b"" when the client hung up without sending anything)."""
    cert_pem, key_pem = client_key_pair("impostor")  # a pair of its own, as enrol makes
    cert_file, key_file = folder / "impostor.crt", folder / "impostor.key"
    cert_file.write_text(cert_pem)
    key_file.write_text(key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    received: list[bytes] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.settimeout(10)
                try:
                    received.append(tls.recv(4096))
                except (ssl.SSLError, OSError):
                    received.append(b"")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    fingerprint = certificate_fingerprint(cert_pem)
    try:
        yield listener.getsockname()[1], received, fingerprint
    finally:
        thread.join(timeout=15)
        listener.close()


def test_the_pin_is_not_given_up_through_a_tls_proxy() -> None:
    """TLS inside TLS (an HTTPS proxy) goes through ``wrap_bio``, where the pinned certificate
    could not be compared: refused there, and the API's client takes no proxy from the
    environment in the first place."""
    server_pem, _ = client_key_pair("the host")
    cert_pem, key_pem = client_key_pair("us")
    context = pinned_context(server_pem, cert_pem, key_pem, url="https://10.0.0.9:8443")
    with pytest.raises(Invalid, match="not through a TLS proxy"):
        context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO())
    api = LxdConnector(
        endpoint="https://10.0.0.9:8443",
        server_cert_pem=server_pem,
        client_cert_pem=cert_pem,
        client_key_pem=key_pem,
    ).api
    assert api._http.trust_env is False
