"""/api/session: SlipStream's session resource, how its own clients log in and out.

``POST /api/session`` with a ``sessionTemplate`` (``session-template/internal`` with a user
name and password, or ``session-template/api-key`` with a key and secret) opens a session and
sets its cookie; every later request sends the cookie back. ``DELETE /api/session/<id>`` logs
out. The cookie is kept by the store only as its SHA-256 (``accounts/credentials.py``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from stratuslab.accounts.authn import COOKIE
from stratuslab.accounts.credentials import SESSION_PREFIX, SESSION_TTL
from stratuslab.api.deps import ServicesDep, UserDep
from stratuslab.errors import Invalid, NotFound

router = APIRouter(prefix="/api/session", tags=["session"])
_INTERNAL = "session-template/internal"
_API_KEY = "session-template/api-key"


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
    if template.href == _INTERNAL:
        if template.username is None or template.password is None:
            raise Invalid(f"{_INTERNAL} takes a username and a password")
        principal = await run_in_threadpool(
            services.authn.login_password, template.username, template.password
        )
        method = "internal"
    elif template.href == _API_KEY:
        if template.key is None or template.secret is None:
            raise Invalid(f"{_API_KEY} takes a key and a secret")
        principal = await run_in_threadpool(services.authn.login_key, template.key, template.secret)
        method = "api-key"
    else:
        raise NotFound(
            f"no session template {template.href[:128]!r}", hint=f"use {_INTERNAL} or {_API_KEY}"
        )
    session_id, token, expires = await run_in_threadpool(
        lambda: services.credentials.open_session(principal.user or "", method=method)
    )
    answer = JSONResponse(
        {"status": 201, "message": f"created {session_id}", "resource-id": session_id},
        status_code=201,
        headers={"Location": f"{str(request.base_url).rstrip('/')}/api/{session_id}"},
    )
    answer.set_cookie(
        COOKIE,
        token,
        max_age=int(SESSION_TTL.total_seconds()),
        expires=expires,
        path="/",
        httponly=True,
        secure=request.url.scheme == "https",
        samesite="strict",
    )
    return answer


@router.delete("/{session_id}")
def logout(session_id: str, services: ServicesDep, user: UserDep, response: Response) -> Any:
    """Log out: the session's cookie stops working, here and in every client holding it."""
    services.credentials.close_session(SESSION_PREFIX + session_id, caller=user)
    response.delete_cookie(COOKIE, path="/")
    return {"status": 200, "message": f"{SESSION_PREFIX}{session_id} deleted"}


@router.get("/{session_id}")
def show(session_id: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    found = services.credentials.show_session(SESSION_PREFIX + session_id, caller=user)
    if found is None:
        raise NotFound(f"no session {session_id[:60]!r}")
    return found
