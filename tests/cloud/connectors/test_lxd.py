"""LXD connector behaviours that real LXD shows only under unlucky timing, scripted here."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
import pytest

from stratuslab.cloud.base import InstanceSpec
from stratuslab.cloud.connectors.lxd import LxdConnector
from stratuslab.cloud.connectors.lxd_api import LxdApi
from stratuslab.cloud.types import InstanceState
from stratuslab.errors import BackendError, BackendUnavailable, NotFound


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


NETWORK_ERROR = "Failed to retrieve network information: bad file descriptor"
RUNNING_STATE = {
    "status": "Running",
    "network": {
        "eth0": {"addresses": [{"family": "inet", "scope": "global", "address": "10.1.2.3"}]}
    },
}
FINGERPRINT = "ab" * 32


def sync(metadata: object) -> httpx.Response:
    return httpx.Response(200, json={"type": "sync", "metadata": metadata})


def error(message: str, code: int) -> httpx.Response:
    return httpx.Response(code, json={"type": "error", "error": message, "error_code": code})


def on(handler: Callable[[httpx.Request], httpx.Response]) -> LxdConnector:
    return LxdConnector(
        endpoint="unix:///x", api=LxdApi("unix:///x", transport=httpx.MockTransport(handler))
    )


def box(status: str = "Running", **extra: object) -> dict[str, object]:
    config = {"user.stratus.id": "i-1", "user.stratus.run": "r-1", "limits.cpu": "1"}
    return {"name": "box", "status": status, "config": config, **extra}


def test_an_instance_lxd_lists_without_its_state_is_asked_for_alone() -> None:
    """While a container starts, LXD may fail to render its state in a listing and send only
    {name, status: Error}: without its tags, reconciliation would take it for gone."""
    asked = {"box": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/1.0/instances":
            other = {"name": "other", "status": "Running", "config": {}, "state": {}}
            return sync([{"name": "box", "status": "Error", "config": None}, other])
        if request.url.path == "/1.0/instances/box":
            asked["box"] += 1
            if asked["box"] == 1:  # the same trouble, once more
                return error(NETWORK_ERROR, 500)
            return sync(box(state=RUNNING_STATE))
        return error("not found", 404)

    (found,) = on(handler).list_instances(tags={"run": "r-1"})
    assert (found.name, found.state, found.addresses) == (
        "box",
        InstanceState.RUNNING,
        ("10.1.2.3",),
    )
    assert found.tags == {"id": "i-1", "run": "r-1"}
    assert asked["box"] == 2


def test_an_instance_deleted_between_listing_and_asking_is_left_out() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/1.0/instances":
            return sync([{"name": "box", "status": "Error"}])
        return error("Instance not found", 404)

    assert on(handler).list_instances() == []


def test_an_unreachable_lxd_fails_the_address_wait_at_once() -> None:
    """Nothing to wait for when LXD is down: BackendUnavailable (exit 69), not a 120 s poll."""
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        raise httpx.ConnectError("connection refused", request=request)

    started = time.monotonic()
    with pytest.raises(BackendUnavailable):
        on(handler).wait_for_address("box", timeout=120)
    assert calls["n"] == 1 and time.monotonic() - started < 1


def test_a_request_lxd_does_not_answer_in_time_is_not_sent_again() -> None:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(BackendError, match="did not answer") as caught:
        on(handler).get("box")
    assert not isinstance(caught.value, BackendUnavailable)
    assert calls["n"] == 1


def test_an_error_lxd_keeps_answering_with_is_raised_after_a_few_tries() -> None:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return error(NETWORK_ERROR, 500)

    with pytest.raises(BackendError, match="Failed to retrieve network information"):
        on(handler).wait_for_address("box", timeout=120)
    assert calls["n"] == 6  # the first try and five more


def test_get_asks_once_and_the_address_wait_once_more_than_it_polls() -> None:
    requests: list[str] = []
    polls = {"state": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(f"{request.url.path}?{request.url.query.decode()}")
        if request.url.path == "/1.0/instances/box/state":
            polls["state"] += 1
            return sync(RUNNING_STATE if polls["state"] == 3 else {"status": "Running"})
        if request.url.path == "/1.0/instances/box":
            if request.url.params.get("recursion") == "1":
                return sync(box(state=RUNNING_STATE))
            return sync(box())
        return error("not found", 404)

    connector = on(handler)
    instance = connector.get("box")
    assert (instance.addresses, instance.cpu, instance.tags["id"]) == (("10.1.2.3",), 1, "i-1")
    assert requests == ["/1.0/instances/box?recursion=1"]
    requests.clear()
    ready = connector.wait_for_address("box", timeout=5)
    assert ready.addresses == ("10.1.2.3",) and ready.tags["run"] == "r-1"
    assert requests == ["/1.0/instances/box/state?"] * 3 + ["/1.0/instances/box?"]


def test_create_uses_the_fingerprint_it_is_given_without_looking_it_up() -> None:
    requests: list[str] = []
    created: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(f"{request.method} {request.url.path}")
        if request.method == "POST" and request.url.path == "/1.0/instances":
            created.append(json.loads(request.content))
            return sync(None)
        if request.method == "PUT":
            return sync(None)
        if request.url.path == "/1.0/instances/box":
            return sync(box(state=RUNNING_STATE))
        return error("not found", 404)

    made = on(handler).create(InstanceSpec(name="box", image=FINGERPRINT))
    assert made.state == InstanceState.RUNNING
    assert created[0]["source"] == {"type": "image", "fingerprint": FINGERPRINT}
    assert requests == [
        "POST /1.0/instances",
        "PUT /1.0/instances/box/state",
        "GET /1.0/instances/box",
    ]


def test_create_with_an_unknown_fingerprint_says_not_found() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/1.0/instances":
            return error("Image not provided for instance creation", 500)
        if request.url.path == "/1.0/images":
            return sync([])
        return error("not found", 404)

    with pytest.raises(NotFound, match="no image called"):
        on(handler).create(InstanceSpec(name="box", image=FINGERPRINT))
