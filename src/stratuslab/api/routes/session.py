"""/api/session: SlipStream's session resource, how its own clients log in and out.

As SlipStream's server answered (``ssclj/resources/session.clj``, ``session_internal.clj``,
``session_api_key.clj`` and ``auth/cookies.clj`` of slipstream/SlipStreamServer):

- ``POST /api/session`` with a ``sessionTemplate`` (``session-template/internal`` with a user
  name and password, or ``session-template/api-key`` with a key and secret): ``201``,
  ``Location: session/<uuid>``, the body ``{status, message, resource-id}``, and the cookie
  ``com.sixsq.slipstream.cookie=token=<token>`` that every later request sends back;
- ``GET`` (or CIMI's query, ``PUT``) ``/api/session``: the collection of the caller's current
  session, the one its cookie names: one member, or none, never a 401: that is how
  ``Api.current_session`` and ``Api.is_authenticated`` learn whether they are logged in;
- ``GET /api/session/<uuid>``: the session (``Api.username`` reads its ``username``);
- ``DELETE /api/session/<uuid>``: log out, ``200`` and the cookie revoked (``INVALID``).

The store keeps a session's token only as its SHA-256 (``accounts/credentials.py``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from stratuslab.accounts import COOKIE
from stratuslab.accounts.authn import Presented
from stratuslab.accounts.credentials import SESSION_PREFIX, SESSION_TTL
from stratuslab.api.deps import COOKIE_TOKEN, Services, ServicesDep, UserDep, session_cookie
from stratuslab.api.routes.cimi import SLIPSTREAM_SCHEMA, CimiRoute, collection
from stratuslab.errors import Invalid, NotFound, Unauthorized

router = APIRouter(prefix="/api/session", tags=["session"], route_class=CimiRoute)
INTERNAL = "session-template/internal"
API_KEY = "session-template/api-key"
# Anybody may log in (add) and see their own session: the collection's rights in SlipStream.
COLLECTION_ACL = {
    "owner": {"principal": "ADMIN", "type": "ROLE"},
    "rules": [
        {"principal": role, "type": "ROLE", "right": "MODIFY"} for role in ("ADMIN", "USER", "ANON")
    ],
}


class SessionTemplate(BaseModel):
    model_config = ConfigDict(extra="allow")

    href: Annotated[str, Field(max_length=128)]
    username: Annotated[str | None, Field(max_length=64)] = None
    password: Annotated[str | None, Field(max_length=1024)] = None
    key: Annotated[str | None, Field(max_length=64)] = None
    secret: Annotated[str | None, Field(max_length=256)] = None


class SessionCreate(BaseModel):
    sessionTemplate: SessionTemplate  # SlipStream's name for it


@router.post("", status_code=201)
async def login(body: SessionCreate, request: Request, services: ServicesDep) -> JSONResponse:
    template = body.sessionTemplate
    if template.href == INTERNAL:
        if template.username is None or template.password is None:
            raise Invalid(f"{INTERNAL} takes a username and a password")
        principal = await run_in_threadpool(
            services.authn.login_password, template.username, template.password
        )
        method = "internal"
    elif template.href == API_KEY:
        if template.key is None or template.secret is None:
            raise Invalid(f"{API_KEY} takes a key and a secret")
        principal = await run_in_threadpool(services.authn.login_key, template.key, template.secret)
        method = "api-key"
    else:
        raise NotFound(
            f"no session template {template.href[:128]!r}", hint=f"use {INTERNAL} or {API_KEY}"
        )
    session_id, token, expires = await run_in_threadpool(
        lambda: services.credentials.open_session(principal.user or "", method=method)
    )
    answer = JSONResponse(
        {"status": 201, "message": f"created {session_id}", "resource-id": session_id},
        status_code=201,
        headers={"Location": session_id},  # SlipStream's: the id, relative to /api/
    )
    answer.headers.append(
        "set-cookie",
        _cookie(
            COOKIE_TOKEN + token,
            max_age=int(SESSION_TTL.total_seconds()),
            expires=expires,
            secure=request.url.scheme == "https",
        ),
    )
    return answer


@router.get("")
async def current(request: Request, services: ServicesDep) -> dict[str, Any]:
    """The caller's current session (the one its cookie names), as a collection of one, or of
    none when the cookie is missing, ended, expired or of a disabled user."""
    found = await run_in_threadpool(_current, services, session_cookie(request))
    return collection(
        id="session",
        name="Session",
        key="sessions",
        members=[_resource(found)] if found else [],
        operations=[{"rel": "add", "href": "session"}],
        acl=COLLECTION_ACL,
    )


@router.put("")
async def query(request: Request, services: ServicesDep) -> dict[str, Any]:
    """CIMI's query of the collection (what ``Api.cimi_search`` sends): as ``GET``; the only
    member there is to filter is the current session."""
    return await current(request, services)


@router.get("/{session_id}")
def show(session_id: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    found = services.credentials.show_session(SESSION_PREFIX + session_id, caller=user)
    if found is None:
        raise NotFound(f"no session {session_id[:60]!r}")
    return _resource(found)


@router.delete("/{session_id}")
def logout(session_id: str, services: ServicesDep, user: UserDep) -> JSONResponse:
    """Log out: the session's cookie stops working, here and in every client holding it."""
    full = SESSION_PREFIX + session_id
    services.credentials.close_session(full, caller=user)
    answer = JSONResponse({"status": 200, "message": f"{full} deleted", "resource-id": full})
    # SlipStream's revoked cookie: a value that is no token, expiring now.
    answer.headers.append(
        "set-cookie", _cookie("INVALID", max_age=0, expires=datetime.now(UTC), secure=False)
    )
    return answer


def _current(services: Services, token: str) -> dict[str, Any] | None:
    if not token:
        return None
    try:
        principal = services.authn.user(Presented(cookie=token))
    except Unauthorized:  # a session ended or expired, a user disabled: not logged in
        return None
    opened = services.credentials.session_of(token)
    if principal is None or opened is None:
        return None
    return services.credentials.show_session(opened[0], caller=principal)


def _resource(found: dict[str, Any]) -> dict[str, Any]:
    """A session as SlipStream showed it: with its template, rights and what may be done."""
    session_id = found["id"]
    return {
        **found,
        "resourceURI": f"{SLIPSTREAM_SCHEMA}Session",
        "updated": found["created"],
        "sessionTemplate": {"href": f"session-template/{found['method']}"},
        "acl": {
            "owner": {"principal": session_id, "type": "ROLE"},
            "rules": [{"principal": "ADMIN", "type": "ROLE", "right": "VIEW"}],
        },
        "operations": [{"rel": "delete", "href": session_id}],
    }


def _cookie(value: str, *, max_age: int, expires: datetime, secure: bool) -> str:
    """A ``Set-Cookie`` value written by hand: SlipStream's ``token=<token>`` holds an ``=``,
    which is a valid cookie octet (RFC 6265) but which ``http.cookies`` would quote."""
    parts = [
        f"{COOKIE}={value}",
        "Path=/",
        f"Max-Age={max_age}",
        f"Expires={format_datetime(expires.astimezone(UTC), usegmt=True)}",
        "HttpOnly",
        "SameSite=Strict",
    ]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)
