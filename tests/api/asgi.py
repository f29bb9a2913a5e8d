"""Driving the application as a server does, for what the test client cannot show.

Starlette's test client reads a request body whole before the application sees any of it, so
it cannot tell whether the server stopped reading a body it refused. Here the body arrives in
pieces, and a piece is produced only when the application asks for the next one: the count of
pieces read is what the server consumed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi.testclient import TestClient


@dataclass
class Answer:
    status: int
    body: bytes
    pieces_read: int

    def json(self) -> Any:
        return json.loads(self.body)


def send_in_pieces(
    client: TestClient,
    method: str,
    path: str,
    pieces: Iterator[bytes],
    headers: Mapping[str, str] | None = None,
) -> Answer:
    """``method path`` with a body sent in ``pieces``, on the application of ``client`` (which
    must be open: its event loop and lifespan are the ones used)."""
    every = {
        "authorization": "Bearer test-token",
        **{k.lower(): v for k, v in (headers or {}).items()},
    }
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in every.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    read = 0
    status = 0
    body: list[bytes] = []
    finished = False

    async def receive() -> dict[str, Any]:
        nonlocal read
        if finished:
            return {"type": "http.disconnect"}
        piece = next(pieces, None)
        if piece is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        read += 1
        return {"type": "http.request", "body": piece, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, finished
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.append(message.get("body", b""))
            if not message.get("more_body", False):
                finished = True

    assert client.portal is not None, "open the client first (with TestClient(...) as client)"
    client.portal.call(client.app, scope, receive, send)
    return Answer(status, b"".join(body), read)
