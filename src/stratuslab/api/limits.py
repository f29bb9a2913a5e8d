"""What every request is held to before a route sees it.

FastAPI reads a JSON body whole before any check, so without a bound one POST could make the
server hold any amount of memory; and PostgreSQL refuses a NUL character in text, which no
path or query of ours can hold (ids, names and keys never do). :class:`RequestLimits` refuses
both at the door, in pure ASGI so that nothing is buffered on the way:

- a body over ``max_body`` bytes (413): at once when its Content-Length says so, else the
  moment the bytes received pass the bound, without reading the rest. A route that streams
  its body to disk under a cap of its own (a report upload) is exempt: ``streams(method,
  path)`` names it.
- a path or query string holding NUL, raw or as ``%00`` (422).

The answer is the project's JSON error, made by ``answer`` (the application's renderer).
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stratuslab.errors import Invalid, StratusError, TooLarge

MAX_BODY = 16 * 2**20  # bytes of a request body: modules, log batches, start requests
Streams = Callable[[str, str], bool]  # (method, path) -> the route bounds its own body
Answer = Callable[[StratusError], Response]


class _Refused(Exception):
    """Raised into the route when its body passes the bound: it stops reading there."""


class RequestLimits:
    def __init__(self, app: ASGIApp, *, max_body: int, streams: Streams, answer: Answer) -> None:
        self.app = app
        self.max_body = max_body
        self.streams = streams
        self.answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query: bytes = scope.get("query_string", b"")
        if "\x00" in scope["path"] or b"%00" in query or b"\x00" in query:
            refusal = Invalid("the request's path or query holds a NUL character (%00)")
            await self.answer(refusal)(scope, receive, send)
            return
        if self.streams(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        announced = _content_length(scope)
        if announced is not None and announced > self.max_body:
            await self.answer(self._too_large(announced))(scope, receive, send)
            return
        await self._bounded(scope, receive, send)

    async def _bounded(self, scope: Scope, receive: Receive, send: Send) -> None:
        received = 0
        refused = False
        started = False

        async def bounded_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    refused = True
                    raise _Refused
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # whatever the route makes of a body cut short, the answer is 413
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, bounded_receive, tracked_send)
        except Exception:
            # Frameworks wrap what a body read raises (FastAPI makes it a 400): once the bound
            # is passed, whatever comes out of the route is that refusal.
            if not refused:
                raise
        if refused and not started:
            await self.answer(self._too_large(None))(scope, receive, send)

    def _too_large(self, announced: int | None) -> TooLarge:
        has = f"this one has {announced} bytes" if announced is not None else "this one is larger"
        return TooLarge(f"a request body is at most {_size(self.max_body)}; {has}")


def _content_length(scope: Scope) -> int | None:
    value = Headers(scope=scope).get("content-length", "")
    return int(value) if value.isdigit() else None  # a malformed one: bytes are counted


def _size(count: int) -> str:
    return f"{count // 2**20} MiB" if count % 2**20 == 0 else f"{count} bytes"


async def read_body(request: Request, limit: int) -> bytes:
    """A request's body, refused past ``limit`` bytes without reading the rest (at once when
    its Content-Length says so)."""
    announced = request.headers.get("content-length", "")
    if announced.isdigit() and int(announced) > limit:
        raise TooLarge(f"the request body is over {limit} bytes ({announced})")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the request body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
