"""The API client the CLI (and scripts) use.

It is built on the standard library's ``http.client`` on purpose: the CLI pays for every import
before its first request, and httpx alone costs ~60 ms there. The transport is taken in the
constructor (``api/transport.py``), so tests hand it one that calls the application
in-process. The server's error bodies come back as the project's own errors, so the CLI
reports a failure the same way whether it happened in the client or in the server.

A client is made for one server URL and carries at most one credential:

- ``token``: the site token, or an API key in its bearer form ``<id>.<secret>``;
- ``cookie``: a session's cookie, from ``POST /api/session`` (``stratus login``) on this URL.

The site token is sent only to a server that has proved it holds it (``api/identity.py``):
before the first request that carries it, the client challenges ``/health``, once. An API key
or a session is the user's own, which the server cannot prove it knows beforehand; they go to
the URL they are given for. ``X-Stratus-User`` (``user``) goes only when the caller asked to
act as someone: the server refuses it from anyone but an administrator.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from stratuslab.accounts import COOKIE
from stratuslab.api import identity
from stratuslab.api.client_accounts import AccountResources
from stratuslab.api.client_clouds import CloudResources
from stratuslab.api.client_images import ImageResources
from stratuslab.api.client_marketplace import MarketplaceResources
from stratuslab.api.client_volumes import VolumeResources
from stratuslab.api.identity import ServerIdentity
from stratuslab.api.transport import HttpTransport as HttpTransport
from stratuslab.api.transport import Response as Response
from stratuslab.api.transport import Transport as Transport
from stratuslab.errors import (
    BackendError,
    BackendUnavailable,
    CommandFailed,
    Unauthorized,
    by_name,
)

_API_KEY = re.compile(r"^[0-9a-f]{32}\.")  # accounts/credentials.py's bearer form of a key


def is_api_key(token: str) -> bool:
    """Whether a bearer token is an API key (``<32 hex>.<secret>``) rather than a site token."""
    return _API_KEY.match(token) is not None


class ApiClient(
    AccountResources, CloudResources, ImageResources, MarketplaceResources, VolumeResources
):
    identify_timeout = 10.0  # a server that takes longer to say who it is is as good as hung

    def __init__(
        self,
        base_url: str,
        *,
        token: str = "",
        cookie: str = "",
        user: str | None = None,
        transport: Transport | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._transport = transport or HttpTransport(self.base_url)
        self._token = token
        self._cookie = cookie
        self._headers = {"Accept": "application/json"}
        if user:
            self._headers["X-Stratus-User"] = user  # act as them: for administrators only
        self.verified: ServerIdentity | None = None  # the server, once it proved it holds the token

    @property
    def credential(self) -> str:
        """What this client sends: 'site token', 'API key', 'session' or 'nothing'."""
        if self._token:
            return "API key" if is_api_key(self._token) else "site token"
        return "session" if self._cookie else "nothing"

    @property
    def _proof_token(self) -> str:
        """The token a server must prove it holds before it is sent anything (none but the site
        token is shared with the server beforehand)."""
        return self._token if self.credential == "site token" else ""

    # -- who answers ----------------------------------------------------------------------

    def identify(self) -> ServerIdentity | None:
        """Who answers at the server URL (None: nothing listens there), and whether it proved
        it holds this client's token. Nothing secret is sent."""
        challenge = identity.nonce()
        try:
            response = self._transport(
                "GET",
                f"/health?challenge={challenge}",
                headers={"Accept": "application/json"},
                body=None,
                timeout=self.identify_timeout,
            )
            data = response.read()
        except (ConnectionRefusedError, FileNotFoundError):
            return None
        except (OSError, http.client.HTTPException) as exc:
            raise self._failure(exc, "GET", "/health") from exc
        return identity.read_health(
            self.base_url, response.status, data, token=self._proof_token, nonce=challenge
        )

    def verify(self) -> ServerIdentity:
        """Make sure the server holds the site token before sending it; done once, before the
        first request that carries it."""
        found = self.identify()
        if found is None:
            raise self._unreachable()
        return self.accept(found)

    def accept(self, found: ServerIdentity) -> ServerIdentity:
        """Trust ``found`` with the token if it proved it holds it; refuse otherwise."""
        if not found.proven:
            raise Unauthorized(
                f"the server at {found.url} (pid {found.pid}) did not prove it holds the site "
                "token, so the token was not sent",
                hint=self.unproven_hint(),
            )
        self.verified = found
        return found

    def unproven_hint(self) -> str:
        if not self._proof_token:
            return "there is no site token to check it with"
        return "check the token (setting `token`, STRATUS_TOKEN) and the server URL"

    # -- the transport --------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        response = self._send(method, path, json_body=json_body, params=params, timeout=timeout)
        data = response.read()
        self._raise_for_error(response.status, data)
        if not data:
            return None
        if response.headers.get("content-type", "").startswith("application/json"):
            return json.loads(data)
        return data.decode()

    def raw(self, path: str, *, timeout: float | None = None) -> bytes:
        """The body of an answer as it came (a report archive)."""
        response = self._send("GET", path, timeout=timeout)
        data = response.read()
        self._raise_for_error(response.status, data)
        return data

    def lines(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        timeout: float,
        method: str = "GET",
        json_body: Any = None,
    ) -> Iterator[dict[str, Any]]:
        """The JSON objects of a streamed answer, one a line, as they arrive; ``timeout`` is
        what the server may take (a line at least every ``timeout`` seconds), 30 s granted
        beyond it."""
        response = self._send(
            method, path, params=params, json_body=json_body, timeout=timeout + 30
        )
        if response.status >= 400:
            self._raise_for_error(response.status, response.read())
        try:
            for line in response.body:
                if line.strip():
                    yield json.loads(line)
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            raise BackendError(f"the stream from {self.base_url}{path} broke: {exc}") from exc

    def close(self) -> None:
        """Connections are closed after each request; nothing is held."""

    def _send(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        accept: str | None = None,
        content: tuple[str, bytes] | None = None,
    ) -> Response:
        """``content``: a body that is not JSON, as (its media type, its bytes)."""
        query = {k: _param(v) for k, v in (params or {}).items() if v is not None}
        target = path + ("?" + urlencode(query) if query else "")
        headers = dict(self._headers)
        if accept:
            headers["Accept"] = accept
        if self._token:
            if self._proof_token and self.verified is None:
                self.verify()
            headers["Authorization"] = f"Bearer {self._token}"
        elif self._cookie:
            headers["Cookie"] = f"{COOKIE}={self._cookie}"
        body = None
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        elif content is not None:
            headers["Content-Type"], body = content
        try:
            return self._transport(
                method, target, headers=headers, body=body, timeout=timeout or self.timeout
            )
        except (OSError, http.client.HTTPException) as exc:
            raise self._failure(exc, method, path) from exc

    def _failure(self, exc: Exception, method: str, path: str) -> BackendError:
        """The project's error for a request that got no answer."""
        if isinstance(exc, ConnectionRefusedError | FileNotFoundError | socket.gaierror):
            return self._unreachable()
        if isinstance(exc, TimeoutError):
            return BackendError(f"the StratusLab server did not answer {method} {path} in time")
        return BackendUnavailable(f"the StratusLab server at {self.base_url}: {exc}")

    def _unreachable(self) -> BackendUnavailable:
        return BackendUnavailable(
            f"the StratusLab server is not reachable at {self.base_url}",
            hint="start it with `stratus server start`",
        )

    @staticmethod
    def _raise_for_error(status: int, data: bytes) -> None:
        if status < 400:
            return
        try:
            error = json.loads(data)["error"]
        except (ValueError, KeyError, TypeError):
            raise BackendError(
                f"the server answered {status}: {data[:200].decode(errors='replace')}"
            ) from None
        kind = by_name(error.get("type", ""))
        if issubclass(kind, CommandFailed):  # its constructor wants the command: not sent
            kind = BackendError
        raise kind(error.get("message", "error"), hint=error.get("hint"))

    # -- the resources --------------------------------------------------------------------

    def run_instances(self, body: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", "/api/instances", json_body=dict(body))
        return result

    def watch_instances(
        self, ids: Sequence[str], *, timeout: float = 600
    ) -> Iterator[dict[str, Any]]:
        return self.lines(
            "/api/instances/watch",
            params={"ids": ",".join(ids), "timeout": timeout},
            timeout=timeout,
        )

    def list_instances(
        self, *, all_owners: bool = False, gone: bool = False
    ) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request(
            "GET", "/api/instances", params={"all": all_owners, "gone": gone}
        )
        return result

    def instance(self, ref: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/api/instances/{_seg(ref)}")
        return result

    def instance_action(self, ref: str, action: str) -> dict[str, Any]:
        path = f"/api/instances/{_seg(ref)}"
        method, path = ("DELETE", path) if action == "kill" else ("POST", f"{path}/{action}")
        result: dict[str, Any] = self.request(method, path, timeout=300)
        return result

    def exec(
        self, ref: str, command: Sequence[str], *, timeout: float | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST",
            f"/api/instances/{_seg(ref)}/exec",
            json_body={"command": list(command), "timeout": timeout},
            timeout=(timeout or 3600) + 30,
        )
        return result

    def images(self, cloud: str = "local") -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", "/api/images", params={"cloud": cloud})
        return result

    def verify_image(self, name: str, cloud: str = "local") -> dict[str, Any]:
        target = f"/api/images/{quote(name, safe='')}/verify"
        result: dict[str, Any] = self.request("GET", target, params={"cloud": cloud})
        return result

    # -- modules and runs -----------------------------------------------------------------

    def push_modules(
        self, modules: Sequence[Mapping[str, str]], *, only_changed: bool = False
    ) -> list[dict[str, Any]]:
        body = {"modules": list(modules), "only_changed": only_changed}
        result: list[dict[str, Any]] = self.request("POST", "/api/modules", json_body=body)
        return result

    def modules(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", "/api/modules")
        return result

    def module(self, address: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/api/modules/{quote(address.strip('/'))}")
        return result

    def module_rights(self, path: str, changes: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Owner, group and rights of a module path; with ``changes``, changed first."""
        target = f"/api/module-rights/{quote(path.strip('/'))}"
        if changes is None:
            found: dict[str, Any] = self.request("GET", target)
        else:
            found = self.request("PUT", target, json_body=dict(changes))
        return found

    def create_run(self, body: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", "/api/runs", json_body=dict(body))
        return result

    def runs(
        self, *, active: bool = False, all_owners: bool = False, limit: int = 20
    ) -> list[dict[str, Any]]:
        params = {"active": active, "all": all_owners, "limit": limit}
        result: list[dict[str, Any]] = self.request("GET", "/api/runs", params=params)
        return result

    def run(self, ref: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/api/runs/{_seg(ref)}")
        return result

    def terminate_run(self, ref: str, *, force: bool = False) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "DELETE",
            f"/api/runs/{_seg(ref)}",
            params={"force": force} if force else None,
            timeout=120,
        )
        return result

    def add_instances(self, ref: str, node: str, count: int) -> list[str]:
        path = f"/api/runs/{_seg(ref)}/nodes/{_seg(node)}/instances"
        result: dict[str, list[str]] = self.request("POST", path, json_body={"count": count})
        return result["added"]

    def remove_instances(self, ref: str, node: str, ids: Sequence[int]) -> list[str]:
        path = f"/api/runs/{_seg(ref)}/nodes/{_seg(node)}/instances"
        params = {"ids": ",".join(str(i) for i in ids)}
        result: dict[str, list[str]] = self.request("DELETE", path, params=params)
        return result["removed"]

    def run_params(self, ref: str, *, show_secrets: bool = False) -> dict[str, str | None]:
        params = {"show_secrets": "true"} if show_secrets else None
        path = f"/api/runs/{_seg(ref)}/params"
        result: dict[str, str | None] = self.request("GET", path, params=params)
        return result

    def run_events(self, ref: str, *, after: int = 0) -> list[dict[str, Any]]:
        path = f"/api/runs/{_seg(ref)}/events"
        result: list[dict[str, Any]] = self.request("GET", path, params={"after": after})
        return result

    def watch_run(
        self, ref: str, *, after: int = 0, timeout: float = 86400
    ) -> Iterator[dict[str, Any]]:
        path = f"/api/runs/{_seg(ref)}/watch"
        return self.lines(path, params={"after": after, "timeout": timeout}, timeout=timeout)

    def run_logs(
        self, ref: str, *, node: str | None = None, after: int = 0
    ) -> list[dict[str, Any]]:
        path = f"/api/runs/{_seg(ref)}/logs"
        result: list[dict[str, Any]] = self.request(
            "GET", path, params={"node": node, "after": after}
        )
        return result

    def follow_run_logs(
        self, ref: str, *, node: str | None = None, after: int = 0
    ) -> Iterator[dict[str, Any]]:
        params = {"node": node, "after": after, "follow": True}
        return self.lines(f"/api/runs/{_seg(ref)}/logs", params=params, timeout=86400)

    def run_reports(self, ref: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", f"/api/runs/{_seg(ref)}/reports")
        return result

    def run_report(self, ref: str, node_instance: str) -> bytes:
        return self.raw(f"/api/runs/{_seg(ref)}/reports/{_seg(node_instance)}", timeout=300)

    def run_junit(self, ref: str) -> bytes:
        """The run as JUnit XML (``GET /api/runs/<id>/junit``), as the server wrote it."""
        return self.raw(f"/api/runs/{_seg(ref)}/junit", timeout=300)

    def exit_when_idle(self) -> bool:
        """Ask a server started on demand to exit once it has nothing left to do."""
        result: dict[str, Any] = self.request("POST", "/api/server/exit-when-idle")
        return bool(result.get("exiting"))


def _seg(value: str) -> str:
    return quote(value, safe="")


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
