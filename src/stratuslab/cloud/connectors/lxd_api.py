"""A small client for the LXD (and Incus) REST API.

It speaks to the local unix socket or to a remote server over HTTPS with a client certificate,
turns LXD's error envelopes into the project's errors, and waits for background operations.
The transport is taken in the constructor so that tests can hand it a fake one.

Every request is bounded in time: a plain request by ``REQUEST_TIMEOUT``, the wait for a
background operation by ``OPERATION_TIMEOUT``, unless the caller gives a bound of its own. An
LXD that answers too slowly raises ``BackendError`` naming the request and the bound.
"""

from __future__ import annotations

import math
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import httpx

from stratuslab.errors import (
    BackendError,
    BackendUnavailable,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    StratusError,
)


class Stale(BackendError):
    """LXD refused a change made with ``If-Match``: the object changed since it was read (412).
    Whoever read it reads it again and decides again; it never reaches users as such."""


# 403: a remote LXD that does not trust the client (or refuses a trust password).
_STATUS_ERRORS: dict[int, type[StratusError]] = {
    400: Invalid,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    412: Stale,
}

# LXD answers a plain request in milliseconds, but it has taken over 60 s to answer
# GET /1.0/resources right after containers were deleted: whoever waits (a provisioning thread)
# must get an answer or an error in seconds, not minutes. httpx bounds each read, and LXD
# writes an answer in one go once it has it, so this bounds the whole request.
REQUEST_TIMEOUT = 20.0
# The longest background operation of ours on a healthy host is the first instance from a new
# image (LXD unpacks it: seconds here); one still running after a minute is stuck, and the
# provisioning thread waiting on it has better to do (fail that instance, clean it up).
OPERATION_TIMEOUT = 60.0
_CONNECT_TIMEOUT = 5.0


class LxdApi:
    """Requests against one LXD server. Thread-safe (httpx clients are)."""

    def __init__(
        self,
        endpoint: str,
        *,
        cert: tuple[str, str] | None = None,
        verify: str | bool | ssl.SSLContext = True,
        transport: httpx.BaseTransport | None = None,
        timeout: float = REQUEST_TIMEOUT,
        operation_timeout: float = OPERATION_TIMEOUT,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.operation_timeout = operation_timeout
        if transport is None and endpoint.startswith("unix://"):
            transport = httpx.HTTPTransport(uds=endpoint.removeprefix("unix://"))
            base_url = "http://lxd"
        elif endpoint.startswith("https://"):
            base_url = endpoint.rstrip("/")
        elif transport is not None:
            base_url = "http://lxd"
        else:
            raise Invalid(
                f"LXD endpoint {endpoint!r}: use unix:///path/to/socket or https://host:8443"
            )
        self._http = httpx.Client(
            base_url=base_url,
            transport=transport,
            cert=cert,
            verify=verify,
            timeout=httpx.Timeout(timeout, connect=_CONNECT_TIMEOUT),
            trust_env=False,  # no proxy from the environment between us and the daemon
        )

    # -- plain requests -------------------------------------------------------------------

    # ``timeout`` bounds the request and, when LXD answers with a background operation, the
    # wait for it; None means the client's bounds (REQUEST_TIMEOUT, OPERATION_TIMEOUT).

    def get(self, path: str, *, timeout: float | None = None, **params: Any) -> Any:
        return self.request("GET", path, params=params, timeout=timeout)

    def post(
        self, path: str, body: Any = None, *, timeout: float | None = None, **params: Any
    ) -> Any:
        return self.request("POST", path, json=body, params=params, timeout=timeout)

    def put(self, path: str, body: Any, *, timeout: float | None = None) -> Any:
        return self.request("PUT", path, json=body, timeout=timeout)

    def patch(self, path: str, body: Any, *, timeout: float | None = None) -> Any:
        return self.request("PATCH", path, json=body, timeout=timeout)

    def delete(self, path: str, *, timeout: float | None = None) -> Any:
        return self.request("DELETE", path, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        content: bytes | IO[bytes] | Iterable[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        wait: bool = True,
        timeout: float | None = None,
    ) -> Any:
        """Send a request and return its metadata; background operations are waited for
        (their own metadata is returned) unless ``wait`` is false.

        Raises ``BackendError`` when LXD does not answer within ``timeout`` seconds (default
        ``REQUEST_TIMEOUT``), or its operation has not ended within ``timeout`` (default
        ``OPERATION_TIMEOUT``); ``BackendUnavailable`` when it cannot be reached."""
        response = self._send(method, path, json, params, content, headers, timeout)
        body = self._decode(response, method, path)
        if body.get("type") == "async" and wait:
            return self.wait(body["operation"], timeout=timeout)
        return body.get("metadata")

    def get_with_etag(
        self, path: str, *, timeout: float | None = None, **params: Any
    ) -> tuple[Any, str]:
        """GET ``path``: its metadata and the ETag LXD computed of it, to send back as
        ``If-Match`` with a change, which LXD then refuses (``Stale``) if anything changed."""
        response = self._send("GET", path, None, params, None, None, timeout)
        body = self._decode(response, "GET", path)
        return body.get("metadata"), response.headers.get("etag", "")

    def _send(
        self,
        method: str,
        path: str,
        json: Any,
        params: Mapping[str, Any] | None,
        content: bytes | IO[bytes] | Iterable[bytes] | None,
        headers: Mapping[str, str] | None,
        timeout: float | None,
    ) -> httpx.Response:
        try:
            return self._http.request(
                method,
                path,
                json=json,
                params={k: v for k, v in (params or {}).items() if v is not None},
                content=content,
                headers=headers,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except (httpx.ConnectError, FileNotFoundError, ConnectionRefusedError) as exc:
            if self.endpoint.startswith("https://"):
                raise BackendUnavailable(
                    f"LXD is not reachable at {self.endpoint}: {_cause(exc)}",
                    hint="is the host up, and LXD listening there (core.https_address)?",
                ) from exc
            raise BackendUnavailable(
                f"LXD is not reachable at {self.endpoint}",
                hint="start it with `stratus cloud init`",
            ) from exc
        except httpx.TimeoutException as exc:
            bound = timeout if timeout is not None else self.timeout
            raise BackendError(f"LXD did not answer {method} {path} within {bound:g} s") from exc
        except httpx.TransportError as exc:
            raise BackendUnavailable(f"LXD at {self.endpoint}: {exc}") from exc

    def raw(self, url: str) -> bytes:
        """The body of a non-JSON answer (an exec log)."""
        try:
            response = self._http.get(url)
        except httpx.TransportError as exc:
            raise BackendUnavailable(f"LXD at {self.endpoint}: {exc}") from exc
        if response.status_code >= 400:
            self._decode(response, "GET", url)
        return response.content

    def download(
        self,
        path: str,
        dest: Path,
        *,
        limit: int,
        timeout: float,
        check: Callable[[Mapping[str, str]], None] | None = None,
    ) -> int:
        """Stream the body of a non-JSON answer (an image's tarball) into ``dest`` and return
        its size. ``check`` sees the answer's headers before anything is written, and may
        refuse. Raises ``BackendError`` past ``limit`` bytes or ``timeout`` seconds in all; on
        any failure ``dest`` is removed."""
        deadline = time.monotonic() + timeout
        written = 0
        try:
            with self._http.stream("GET", path) as response:
                if response.status_code >= 400:
                    response.read()
                    self._decode(response, "GET", path)
                if check is not None:
                    check(response.headers)
                announced = response.headers.get("content-length", "")
                if announced.isdigit() and int(announced) > limit:
                    raise BackendError(f"LXD announced {announced} bytes for {path}, over {limit}")
                with dest.open("wb") as out:
                    for chunk in response.iter_bytes(1 << 20):
                        written += len(chunk)
                        if written > limit:
                            raise BackendError(f"LXD sent more than {limit} bytes for {path}")
                        if time.monotonic() > deadline:
                            raise BackendError(f"LXD did not send {path} within {timeout:g} s")
                        out.write(chunk)
        except BaseException as exc:
            dest.unlink(missing_ok=True)
            if isinstance(exc, httpx.TimeoutException):
                raise BackendError(f"LXD stopped sending {path} (no data for a while)") from exc
            if isinstance(exc, httpx.TransportError):
                raise BackendUnavailable(f"LXD at {self.endpoint}: {exc}") from exc
            raise
        return written

    def wait(self, operation: str, *, timeout: float | None = None) -> Any:
        """Wait for a background operation, at most ``timeout`` seconds (default
        ``OPERATION_TIMEOUT``); its failure raises with LXD's own reason."""
        wait_for = max(1, math.ceil(timeout if timeout else self.operation_timeout))
        meta = self.request(
            "GET",
            f"{operation}/wait",
            params={"timeout": wait_for},
            timeout=wait_for + _CONNECT_TIMEOUT,  # LXD itself answers once wait_for has passed
        )
        if meta.get("status_code") == 200:
            return meta.get("metadata")
        if meta.get("status_code") in (100, 103, 105):
            raise BackendError(f"LXD operation {operation} still running after {wait_for} s")
        raise BackendError(f"LXD: {meta.get('err') or meta.get('status')}")

    def close(self) -> None:
        self._http.close()

    @staticmethod
    def path(*parts: str) -> str:
        return "/1.0/" + "/".join(quote(part, safe="") for part in parts)

    @staticmethod
    def _decode(response: httpx.Response, method: str, path: str) -> dict[str, Any]:
        try:
            body: dict[str, Any] = response.json()
        except ValueError as exc:
            raise BackendError(
                f"LXD answered {method} {path} with {response.status_code} and no JSON"
            ) from exc
        if body.get("type") == "error" or response.status_code >= 400:
            code = int(body.get("error_code") or response.status_code)
            kind = _STATUS_ERRORS.get(code, BackendError)
            raise kind(f"LXD: {body.get('error') or response.reason_phrase}")
        return body


def _cause(exc: BaseException) -> str:
    """The innermost reason of a transport error, in words (connection refused, timed out)."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def answered(error: BackendError) -> bool:
    """Whether LXD itself answered with ``error`` (it is up, and may answer otherwise when asked
    again), rather than being unreachable or silent until the request timed out."""
    return not isinstance(error, BackendUnavailable) and not isinstance(
        error.__cause__, httpx.TimeoutException
    )
