"""The LXD REST client against a scripted transport: envelopes, errors, operations."""

from __future__ import annotations

import json

import httpx
import pytest

from stratuslab.cloud.connectors.lxd_api import LxdApi
from stratuslab.errors import (
    BackendError,
    BackendUnavailable,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
)


def api(handler: httpx.MockTransport) -> LxdApi:
    return LxdApi("unix:///nowhere", transport=handler)


def sync(metadata: object, code: int = 200) -> httpx.Response:
    return httpx.Response(code, json={"type": "sync", "status_code": code, "metadata": metadata})


def error(message: str, code: int) -> httpx.Response:
    return httpx.Response(code, json={"type": "error", "error": message, "error_code": code})


def test_sync_answers_return_their_metadata() -> None:
    client = api(httpx.MockTransport(lambda request: sync({"api_version": "1.0"})))
    assert client.get("/1.0") == {"api_version": "1.0"}


@pytest.mark.parametrize(
    ("code", "kind"),
    [(404, NotFound), (409, Conflict), (400, Invalid), (403, Forbidden), (500, BackendError)],
)
def test_error_envelopes_become_project_errors_with_lxds_reason(
    code: int, kind: type[Exception]
) -> None:
    client = api(httpx.MockTransport(lambda request: error("Instance not found", code)))
    with pytest.raises(kind, match="LXD: Instance not found"):
        client.get("/1.0/instances/x")


def test_background_operations_are_waited_for() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if request.url.path == "/1.0/instances":
            return httpx.Response(
                202, json={"type": "async", "status_code": 100, "operation": "/1.0/operations/42"}
            )
        return sync({"status_code": 200, "metadata": {"done": True}})

    assert api(httpx.MockTransport(handler)).post("/1.0/instances", {"name": "x"}) == {"done": True}
    assert seen == ["POST /1.0/instances", "GET /1.0/operations/42/wait"]


def test_a_failed_operation_raises_its_error_text() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            return httpx.Response(
                202, json={"type": "async", "status_code": 100, "operation": "/1.0/operations/7"}
            )
        return sync(
            {"status_code": 400, "status": "Failure", "err": "Failed to start: no space left"}
        )

    with pytest.raises(BackendError, match="no space left"):
        api(httpx.MockTransport(handler)).put("/1.0/instances/x/state", {"action": "start"})


def test_an_unreachable_daemon_says_how_to_start_it() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with pytest.raises(
        BackendUnavailable, match=r"LXD is not reachable at unix:///nowhere.*stratus cloud init"
    ):
        api(httpx.MockTransport(handler)).get("/1.0")


def test_a_non_json_answer_is_an_error_not_a_crash() -> None:
    with pytest.raises(BackendError, match="no JSON"):
        api(httpx.MockTransport(lambda request: httpx.Response(502, text="<html>bad gateway"))).get(
            "/1.0"
        )


def test_names_are_escaped_in_paths() -> None:
    assert LxdApi.path("images", "aliases", "a/b") == "/1.0/images/aliases/a%2Fb"


def test_endpoints_must_be_a_socket_or_https() -> None:
    with pytest.raises(Invalid, match="unix:///path/to/socket or https://"):
        LxdApi("ftp://host")


def test_bodies_are_sent_as_json() -> None:
    received: list[object] = []

    def handler(request: httpx.Request) -> httpx.Response:
        received.append(json.loads(request.content))
        return sync({})

    api(httpx.MockTransport(handler)).patch("/1.0/networks/br", {"config": {"ipv4.nat": "true"}})
    assert received == [{"config": {"ipv4.nat": "true"}}]
