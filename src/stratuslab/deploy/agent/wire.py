"""HTTP/1.1 by hand: the server's URL, one connection, one request and its answer.

Written out rather than done with http.client, whose import (it pulls in the email package)
would double the start-up time of every ss-* tool. For the same reason it speaks to ``_socket``,
not ``socket``: ``socket.py`` imports selectors, enum and collections, ~10 ms of every call,
for nothing a plain connection needs (and TLS is done with ``_ssl``, see :func:`trusting`).
urllib.parse is imported only for text that needs it. The server is our own: it answers with
a Content-Length, or chunked, and a connection is never reused.
"""

from __future__ import annotations

import _socket

from .exits import USAGE, ToolError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing; mypy knows the name
if TYPE_CHECKING:
    import _ssl
    from collections.abc import Mapping
    from typing import Any

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


class Answer:
    """One HTTP answer."""

    __slots__ = ("aborted", "body", "content_type", "status")

    def __init__(
        self, status: int, body: bytes, content_type: str, *, aborted: bool = False
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.aborted = aborted  # a 409 because the run is aborted (X-Stratus-Aborted)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class BadAnswer(OSError):
    """What came back was not HTTP; retried like a broken connection."""


def quote(text: str, safe: str) -> str:
    """urllib.parse.quote, imported only for text that needs it (names and ids rarely do)."""
    if all(char in _UNRESERVED or char in safe for char in text):
        return text
    import urllib.parse

    return urllib.parse.quote(text, safe=safe)


def split_url(url: str) -> tuple[str, str, int | None, str]:
    """(scheme, host, port, path) of the server's URL; urllib.parse only for unusual ones."""
    scheme, found, rest = url.partition("://")
    location, slash, path = rest.partition("/")
    host, colon, port_text = location.rpartition(":") if ":" in location else (location, "", "")
    if (
        found
        and scheme in ("http", "https")
        and host
        and "[" not in location
        and "@" not in location
    ):
        if not colon or port_text.isdigit():
            return scheme, host, int(port_text) if colon else None, (slash + path).rstrip("/")
        raise ToolError(USAGE, f"bad server URL {url!r}: bad port {port_text!r}")
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError as exc:
        raise ToolError(USAGE, f"bad server URL {url!r}: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ToolError(USAGE, f"bad server URL {url!r}")
    return parts.scheme, parts.hostname, port, parts.path.rstrip("/")


def connect_to(address: tuple[str, int], timeout: float) -> _socket.socket:
    """socket.create_connection, minus the IDNA codec (~1.5 ms to import) that a host name
    given as text goes through even when it is an address: ASCII names are passed as bytes."""
    host, port = address
    name: str | bytes = host.encode("ascii") if host.isascii() else host
    error: OSError | None = None
    for family, kind, protocol, _, target in _socket.getaddrinfo(
        name, port, 0, _socket.SOCK_STREAM
    ):
        connection = _socket.socket(family, kind, protocol)
        try:
            connection.settimeout(timeout)
            connection.connect(target)
            return connection
        except OSError as exc:
            connection.close()
            error = exc
    raise error or OSError(f"cannot resolve {host}")


def trusting(ca: str) -> _ssl._SSLContext:
    """A TLS client context that trusts the certificates ``ca`` (PEM) and nothing else: not the
    system's authorities, not a certificate that does not name the host asked for.

    Made with ``_ssl``, not ``ssl``: importing ``ssl.py`` (socket, enum, base64, ...) costs
    ~20 ms of every tool call, four times what the TLS itself costs; the C context it wraps is
    the same, with the settings ``ssl.create_default_context`` gives it (the C defaults for a
    client are those options, hostname checking and a required certificate)."""
    import _ssl

    try:
        context = _ssl._SSLContext(_ssl.PROTOCOL_TLS_CLIENT)
        context.verify_mode = _CERT_REQUIRED
        context.check_hostname = True
        context.verify_flags |= _TRUSTED_FIRST
        context.minimum_version = _TLS_1_2
        context.load_verify_locations(cadata=ca)
    except (_ssl.SSLError, ValueError, TypeError) as exc:
        raise ToolError(USAGE, f"the site CA is not a PEM certificate: {exc}") from exc
    return context


_CERT_REQUIRED = 2  # ssl.CERT_REQUIRED
_TRUSTED_FIRST = 0x8000  # ssl.VERIFY_X509_TRUSTED_FIRST, as create_default_context sets it
_TLS_1_2 = 0x0303  # ssl.TLSVersion.TLSv1_2


class Secured:
    """A connection after its TLS handshake: what ``exchange`` needs of a socket."""

    __slots__ = ("_raw", "_tls")

    def __init__(self, raw: _socket.socket, tls: Any) -> None:  # an _ssl._SSLSocket
        self._raw = raw
        self._tls = tls

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self._tls.write(view) :]

    def recv(self, size: int) -> bytes:
        import _ssl

        try:
            data: bytes = self._tls.read(size)
            return data
        except (_ssl.SSLZeroReturnError, _ssl.SSLEOFError):
            return b""  # the server closed the connection (after its answer)

    def gettimeout(self) -> float | None:
        return self._raw.gettimeout()

    def settimeout(self, timeout: float | None) -> None:
        self._raw.settimeout(timeout)

    def close(self) -> None:
        self._raw.close()


def secure(connection: _socket.socket, host: str, context: _ssl._SSLContext) -> Secured:
    """``connection`` wrapped in TLS, the server's certificate checked by ``context`` and
    against ``host``; ``_ssl.SSLCertVerificationError`` for a server it does not trust."""
    timeout = connection.gettimeout()
    raw = _Referable(fileno=connection.detach())  # _ssl holds its socket by a weak reference
    raw.settimeout(timeout)
    try:
        wrap: Any = context._wrap_socket  # type: ignore[attr-defined]  # C, not in typeshed
        tls = wrap(raw, False, host)
        tls.do_handshake()
    except BaseException:
        raw.close()
        raise
    return Secured(raw, tls)


class _Referable(_socket.socket):
    """``_socket.socket``, which a weak reference may point to (what ``socket.socket`` is, for
    ``_ssl``'s sake, without importing ``socket.py``)."""


class _Reader:
    """What ``socket.makefile("rb")`` gives, over ``recv``: lines, and reads of a length."""

    __slots__ = ("_buffer", "_connection")

    def __init__(self, connection: _socket.socket | Secured) -> None:
        self._connection = connection
        self._buffer = bytearray()

    def readline(self, limit: int) -> bytes:
        """The next line with its end, at most ``limit`` bytes ('' at the end of the stream)."""
        while True:
            end = self._buffer.find(b"\n", 0, limit)
            if end >= 0:
                return self._take(end + 1)
            if len(self._buffer) >= limit or not self._fill():
                return self._take(limit)

    def read(self, size: int = -1) -> bytes:
        """``size`` bytes (fewer if the stream ends first); all that is left with -1."""
        while (size < 0 or len(self._buffer) < size) and self._fill():
            pass
        return self._take(len(self._buffer) if size < 0 else size)

    def _fill(self) -> bool:
        chunk = self._connection.recv(65536)
        self._buffer += chunk
        return bool(chunk)

    def _take(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data


def exchange(
    connection: _socket.socket | Secured,
    host: str,
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes | None,
) -> Answer:
    """One HTTP/1.1 request and its answer on ``connection`` (``Connection: close``)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close", "Accept: */*"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
    reader = _Reader(connection)
    status_line = reader.readline(65537).decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise BadAnswer(f"not an HTTP answer: {status_line[:80]!r}")
    answer_headers: dict[str, str] = {}
    while True:
        line = reader.readline(65537).decode("latin-1")
        if line in ("\r\n", "\n", ""):
            break
        name, _, value = line.partition(":")
        answer_headers[name.strip().lower()] = value.strip()
    if "chunked" in answer_headers.get("transfer-encoding", "").lower():
        data = _chunked(reader)
    elif "content-length" in answer_headers:
        length = int(answer_headers["content-length"])
        data = reader.read(length)
        if len(data) != length:
            raise BadAnswer(f"the answer was cut short ({len(data)} of {length} bytes)")
    else:
        data = reader.read()
    return Answer(
        int(parts[1]),
        data,
        answer_headers.get("content-type", ""),
        aborted="x-stratus-aborted" in answer_headers,
    )


def _chunked(reader: _Reader) -> bytes:
    data = bytearray()
    while True:
        size_line = reader.readline(65537).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError as exc:
            raise BadAnswer(f"bad chunk size {size_line[:20]!r}") from exc
        if size == 0:
            while reader.readline(65537) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return bytes(data)
        data += reader.read(size)
        reader.readline(65537)  # the CRLF after the chunk
