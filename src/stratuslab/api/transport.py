"""How the API client reaches a server: HTTP/1.1 on the standard library's ``http.client``.

A transport is any callable of this shape, so that tests hand the client one that calls the
application in-process instead of a socket.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from stratuslab.errors import Invalid


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # names in lower case
    body: Iterator[bytes]  # the body, line by line, as it arrives

    def read(self) -> bytes:
        return b"".join(self.body)


class Transport(Protocol):
    def __call__(
        self,
        method: str,
        target: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float,
    ) -> Response: ...


class HttpTransport:
    """HTTP/1.1 over TCP (or TLS for https://), one connection per request."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Invalid(f"server URL {base_url!r}: use http://host:port or https://host:port")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")

    def __call__(
        self,
        method: str,
        target: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float,
    ) -> Response:
        connection: http.client.HTTPConnection
        if self.https:
            import ssl

            connection = http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout, context=ssl.create_default_context()
            )
        else:
            connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        connection.request(method, self.prefix + target, body=body, headers=dict(headers))
        answer = connection.getresponse()

        def lines() -> Iterator[bytes]:
            try:
                yield from answer
            finally:
                connection.close()

        return Response(answer.status, {k.lower(): v for k, v in answer.getheaders()}, lines())
