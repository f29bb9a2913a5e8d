"""LXD connector behaviours that real LXD shows only under unlucky timing, scripted here."""

from __future__ import annotations

import json

import httpx

from stratuslab.cloud.connectors.lxd import LxdConnector
from stratuslab.cloud.connectors.lxd_api import LxdApi
from stratuslab.cloud.types import InstanceState


def test_a_clean_stop_that_times_out_is_forced() -> None:
    status = {"now": "Running"}
    puts: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "PUT" and path.endswith("/state"):
            body = json.loads(request.content)
            puts.append(body)
            return httpx.Response(
                202, json={"type": "async", "operation": f"/1.0/operations/{len(puts)}"}
            )
        if path == "/1.0/operations/1/wait":  # the clean stop: systemd was still booting
            failure = {"status_code": 400, "err": "Failed shutting down instance: timeout"}
            return httpx.Response(200, json={"type": "sync", "metadata": failure})
        if path == "/1.0/operations/2/wait":  # the forced stop
            status["now"] = "Stopped"
            return httpx.Response(200, json={"type": "sync", "metadata": {"status_code": 200}})
        if path == "/1.0/instances/box":
            return httpx.Response(
                200,
                json={
                    "type": "sync",
                    "metadata": {"name": "box", "status": status["now"], "config": {}},
                },
            )
        if path == "/1.0/instances/box/state":
            return httpx.Response(200, json={"type": "sync", "metadata": {"status": status["now"]}})
        return httpx.Response(404, json={"type": "error", "error": "not found", "error_code": 404})

    connector = LxdConnector(
        endpoint="unix:///x", api=LxdApi("unix:///x", transport=httpx.MockTransport(handler))
    )
    assert connector.stop("box", timeout=1).state == InstanceState.STOPPED
    assert [p["force"] for p in puts] == [False, True]


def test_a_state_query_that_fails_once_is_asked_again() -> None:
    """LXD fails now and then to read the network of a container that is starting."""
    calls = {"state": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/1.0/instances/box/state":
            calls["state"] += 1
            if calls["state"] == 1:
                message = "Failed to retrieve network information: bad file descriptor"
                return httpx.Response(
                    500, json={"type": "error", "error": message, "error_code": 500}
                )
            network = {
                "eth0": {
                    "addresses": [{"family": "inet", "scope": "global", "address": "10.1.2.3"}]
                }
            }
            return httpx.Response(
                200, json={"type": "sync", "metadata": {"status": "Running", "network": network}}
            )
        if request.url.path == "/1.0/instances/box":
            return httpx.Response(
                200,
                json={
                    "type": "sync",
                    "metadata": {"name": "box", "status": "Running", "config": {}},
                },
            )
        return httpx.Response(404, json={"type": "error", "error": "not found", "error_code": 404})

    connector = LxdConnector(
        endpoint="unix:///x", api=LxdApi("unix:///x", transport=httpx.MockTransport(handler))
    )
    assert connector.wait_for_address("box", timeout=5).addresses == ("10.1.2.3",)
    assert calls["state"] >= 2
