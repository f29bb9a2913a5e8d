"""The server says which one it is, proves it holds the site token, and the client sends the
token only to a server that did."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import pytest
from fastapi.testclient import TestClient

from stratuslab import __version__, build
from stratuslab.api import identity
from stratuslab.api.client import ApiClient, Response, Transport
from stratuslab.errors import BackendUnavailable, Unauthorized
from tests.api.impostor import Impostor, health
from tests.support import InProcessTransport

NONCE = "ab" * 16


class Recording:
    """A transport that remembers what it was asked to send before passing it on."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.sent: list[tuple[str, str, dict[str, str]]] = []

    def __call__(
        self,
        method: str,
        target: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float,
    ) -> Response:
        self.sent.append((method, target, dict(headers)))
        return self.inner(method, target, headers=headers, body=body, timeout=timeout)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- the server -----------------------------------------------------------------------------


def test_health_says_which_server_this_is_without_credentials(api: TestClient) -> None:
    answer = api.get("/health", headers={"Authorization": ""}).json()
    assert answer == {
        "status": "ok",
        "version": __version__,
        "pid": os.getpid(),
        "build": build.running(),
        "idle_exit": 0,  # not started by `serve`, so not on demand
    }


def test_health_answers_a_challenge_with_a_proof_only_the_token_gives(api: TestClient) -> None:
    answer = api.get(f"/health?challenge={NONCE}", headers={"Authorization": ""}).json()
    expected = identity.proof("test-token", nonce=NONCE, pid=os.getpid(), build=build.running())
    assert answer["proof"] == expected
    assert identity.proof("another-token", nonce=NONCE, pid=os.getpid(), build=build.running()) != (
        expected
    )


@pytest.mark.parametrize("challenge", ["short", "AB" * 16, "zz" * 16, "ab" * 65])
def test_a_malformed_challenge_is_refused(api: TestClient, challenge: str) -> None:
    assert api.get(f"/health?challenge={challenge}").status_code == 422


# -- the client -----------------------------------------------------------------------------


def test_the_client_proves_the_server_once_then_sends_the_token(api: TestClient) -> None:
    transport = Recording(InProcessTransport(api))
    client = ApiClient("http://testserver", token="test-token", user="alice", transport=transport)
    assert client.modules() == []
    assert client.modules() == []
    (first, *rest) = transport.sent
    assert first[0] == "GET" and first[1].startswith("/health?challenge=")
    assert "Authorization" not in first[2]
    assert [(m, t, h["Authorization"]) for m, t, h in rest] == [
        ("GET", "/api/modules", "Bearer test-token"),
        ("GET", "/api/modules", "Bearer test-token"),
    ]
    assert client.verified is not None and client.verified.build == build.running()


def test_a_client_without_a_token_has_nothing_to_protect_and_asks_no_proof(
    api: TestClient,
) -> None:
    transport = Recording(InProcessTransport(api))
    client = ApiClient("http://testserver", token="", transport=transport)
    client.modules()  # the test client adds its own token on the way in: the route answers
    assert [(m, t) for m, t, _h in transport.sent] == [("GET", "/api/modules")]
    assert "Authorization" not in transport.sent[0][2]


def test_a_server_that_cannot_prove_it_never_gets_the_token() -> None:
    posing = health(pid=4242, build=build.running(), idle_exit=0, proof="0" * 64)
    with Impostor(posing) as impostor:
        client = ApiClient(impostor.url, token="s3cret-site-token")
        with pytest.raises(Unauthorized, match="did not prove it holds the site token") as failed:
            client.modules()
    assert failed.value.exit_code == 77
    assert not impostor.saw("s3cret-site-token")
    assert [(r.method, r.path.partition("?")[0]) for r in impostor.received] == [("GET", "/health")]


def test_a_proof_made_for_another_challenge_is_refused(api: TestClient) -> None:
    """An impostor replaying what the real server once answered gets nothing."""
    real = api.get(f"/health?challenge={NONCE}").json()
    with Impostor(health(**{k: v for k, v in real.items() if k != "status"})) as impostor:
        client = ApiClient(impostor.url, token="test-token")
        found = client.identify()
        assert found is not None and found.pid == real["pid"] and not found.proven
        with pytest.raises(Unauthorized):
            client.modules()
    assert not impostor.saw("test-token")


def test_a_server_older_than_build_ids_is_identified_but_not_proven() -> None:
    with Impostor(health(pid=4242)) as impostor:
        found = ApiClient(impostor.url, token="s3cret").identify()
    assert found is not None
    assert (found.pid, found.build, found.idle_exit, found.proven) == (4242, None, None, False)


@pytest.mark.parametrize(
    ("status", "body"),
    [(404, b"<html>Not Found</html>"), (200, b'{"status": "ok"}'), (200, b'{"pid": true}')],
)
def test_something_else_on_the_port_is_named_not_taken_for_a_server(
    status: int, body: bytes
) -> None:
    with Impostor(lambda _path: (status, "text/html", body)) as impostor:
        client = ApiClient(impostor.url, token="s3cret")
        with pytest.raises(BackendUnavailable, match="not as a StratusLab server") as failed:
            client.identify()
    assert f"{impostor.url} answers" in failed.value.message
    assert f"HTTP {status}" in failed.value.message
    assert not impostor.saw("s3cret")


def test_nothing_listening_is_no_identity_and_a_request_fails_as_unreachable() -> None:
    client = ApiClient(f"http://127.0.0.1:{_free_port()}", token="s3cret")
    assert client.identify() is None
    with pytest.raises(BackendUnavailable, match="not reachable") as failed:
        client.modules()
    assert failed.value.exit_code == 69
