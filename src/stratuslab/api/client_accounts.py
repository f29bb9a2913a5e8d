"""The accounts resources of the API client: who am I, users, groups, API keys, sessions.

A part of :class:`~stratuslab.api.client.ApiClient` (which inherits it), kept apart so that
each module stays small.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from stratuslab.accounts import COOKIE
from stratuslab.api.client_parts import ClientPart
from stratuslab.errors import BackendError


class AccountResources(ClientPart):
    def whoami(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/api/whoami")
        return result

    # -- sessions -------------------------------------------------------------------------

    def login(self, username: str, password: str) -> dict[str, Any]:
        """Open a session with a password (SlipStream's ``session-template/internal``): its
        resource id, its cookie and when it expires."""
        template = {"href": "session-template/internal", "username": username, "password": password}
        response = self._send("POST", "/api/session", json_body={"sessionTemplate": template})
        data = response.read()
        self._raise_for_error(response.status, data)
        cookie, expires = _session_cookie(response.headers.get("set-cookie", ""))
        try:
            session = json.loads(data)["resource-id"]
        except (ValueError, KeyError, TypeError):
            session = None
        if not cookie or not isinstance(session, str):
            raise BackendError("the server answered the login without a session cookie")
        return {"session": session, "cookie": cookie, "expires": expires}

    def logout(self, session: str) -> None:
        """End a session (``session/<uuid>``): its cookie stops working everywhere."""
        self.request("DELETE", f"/api/session/{_seg(session.removeprefix('session/'))}")

    # -- users and groups -----------------------------------------------------------------

    def users(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", "/api/users")
        return result

    def user(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/api/users/{_seg(name)}")
        return result

    def add_user(
        self, name: str, *, email: str | None, admin: bool, password: str | None
    ) -> dict[str, Any]:
        body = {"name": name, "email": email, "admin": admin, "password": password}
        result: dict[str, Any] = self.request("POST", "/api/users", json_body=body)
        return result

    def set_user_disabled(self, name: str, disabled: bool) -> dict[str, Any]:
        action = "disable" if disabled else "enable"
        result: dict[str, Any] = self.request("POST", f"/api/users/{_seg(name)}/{action}")
        return result

    def set_password(self, name: str, password: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "PUT", f"/api/users/{_seg(name)}/password", json_body={"password": password}
        )
        return result

    def groups(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", "/api/groups")
        return result

    def group(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/api/groups/{_seg(name)}")
        return result

    def add_group(self, name: str, *, description: str = "") -> dict[str, Any]:
        body = {"name": name, "description": description}
        result: dict[str, Any] = self.request("POST", "/api/groups", json_body=body)
        return result

    def add_member(self, group: str, user: str) -> dict[str, Any]:
        path = f"/api/groups/{_seg(group)}/members"
        result: dict[str, Any] = self.request("POST", path, json_body={"user": user})
        return result

    def remove_member(self, group: str, user: str) -> dict[str, Any]:
        path = f"/api/groups/{_seg(group)}/members/{_seg(user)}"
        result: dict[str, Any] = self.request("DELETE", path)
        return result

    # -- API keys -------------------------------------------------------------------------

    def apikeys(self, *, all_owners: bool = False) -> list[dict[str, Any]]:
        params = {"all": "true"} if all_owners else None
        result: list[dict[str, Any]] = self.request("GET", "/api/apikeys", params=params)
        return result

    def create_apikey(self, *, name: str = "", expires_days: int | None = None) -> dict[str, Any]:
        body = {"name": name, "expires_days": expires_days}
        result: dict[str, Any] = self.request("POST", "/api/apikeys", json_body=body)
        return result

    def revoke_apikey(self, key: str) -> dict[str, Any]:
        path = f"/api/apikeys/{_seg(key)}"  # as given: credential/<hex> or the hex alone
        result: dict[str, Any] = self.request("DELETE", path)
        return result


def _session_cookie(header: str) -> tuple[str, datetime | None]:
    """The session cookie's value and expiry in a ``Set-Cookie`` header."""
    from http.cookies import CookieError, SimpleCookie

    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return "", None
    morsel = jar.get(COOKIE)
    if morsel is None:
        return "", None
    expires: datetime | None = None
    if morsel["max-age"]:
        try:
            expires = datetime.now(UTC) + timedelta(seconds=int(morsel["max-age"]))
        except ValueError:
            expires = None
    return morsel.value, expires


def _seg(value: str) -> str:
    return quote(value, safe="")
