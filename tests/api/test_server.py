"""The server as `stratus server run` starts it: plain HTTP on loopback for the CLI, HTTPS with
the site certificate on the bridge gateway for the nodes, one application behind both.

The bridge gateway is played by another loopback address (127.0.0.2), so that no LXD bridge
is needed: the settings' subnet says where the gateway is."""

from __future__ import annotations

import socket
import ssl
import threading
import time

import httpx
import pytest

from stratuslab.api.server import listening_sockets, serve
from stratuslab.cloud import sitecert
from stratuslab.config import Settings
from stratuslab.errors import Invalid


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def on_loopback(settings: Settings) -> Settings:
    return settings.with_overrides(lxd_subnet="127.0.0.2/8", server_port=free_port())


def wait_for(url: str, **client: object) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        try:
            return httpx.get(url, timeout=5, **client)  # type: ignore[arg-type]
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_the_cli_is_served_plain_on_loopback_and_the_nodes_over_tls_on_the_bridge(
    on_loopback: Settings,
) -> None:
    port = on_loopback.server_port
    server = threading.Thread(
        target=serve,
        args=(on_loopback,),
        kwargs={"host": "127.0.0.1", "port": port, "idle_exit": 1.5},
        daemon=True,
    )
    server.start()
    try:
        plain = wait_for(f"http://127.0.0.1:{port}/health")
        assert plain.status_code == 200
        trusted = ssl.create_default_context(cadata=sitecert.read_ca(on_loopback.tls_dir))
        secured = wait_for(f"https://127.0.0.2:{port}/health", verify=trusted)
        assert secured.status_code == 200 and secured.json()["pid"] == plain.json()["pid"]
        with pytest.raises(httpx.TransportError):  # the nodes' listener speaks nothing else
            httpx.get(f"http://127.0.0.2:{port}/health", timeout=5)
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"https://127.0.0.2:{port}/health", timeout=5)  # the system's CAs
    finally:
        server.join(30)  # it exits once idle
    assert not server.is_alive()


def test_the_plain_api_is_never_put_on_the_bridge(on_loopback: Settings) -> None:
    with pytest.raises(Invalid, match=r"127\.0\.0\.2 is the bridge gateway"):
        listening_sockets(on_loopback, host="127.0.0.2", port=on_loopback.server_port)


def test_a_host_without_the_bridge_still_serves_the_cli(settings: Settings) -> None:
    elsewhere = settings.with_overrides(lxd_subnet="192.0.2.1/24", server_port=free_port())
    plain, for_nodes = listening_sockets(elsewhere, host="127.0.0.1", port=elsewhere.server_port)
    try:
        assert plain.getsockname() == ("127.0.0.1", elsewhere.server_port) and for_nodes == []
    finally:
        plain.close()
