"""/health: is the server up, and which one is it."""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from stratuslab import __version__, build
from stratuslab.api import identity
from stratuslab.api.deps import ServicesDep, UserDep
from stratuslab.errors import Forbidden

router = APIRouter(tags=["health"])


@router.get("/health")
def health(
    request: Request,
    services: ServicesDep,
    challenge: Annotated[str | None, Query(pattern=identity.NONCE_PATTERN)] = None,
) -> dict[str, Any]:
    """Which server this is: version, pid, build id and idle mode (seconds idle before it
    exits, 0: never). With a challenge (a client's nonce), the proof that it holds the site
    token (see ``api/identity.py``); no credentials are needed to ask."""
    pid = os.getpid()
    running = build.running()
    activity = getattr(request.app.state, "activity", None)
    answer: dict[str, Any] = {
        "status": "ok",
        "version": __version__,
        "pid": pid,
        "build": running,
        "idle_exit": activity.idle_exit if activity is not None else 0,
    }
    if challenge:
        answer["proof"] = identity.proof(services.token, nonce=challenge, pid=pid, build=running)
    return answer


@router.post("/api/server/exit-when-idle")
def exit_when_idle(request: Request, user: UserDep) -> dict[str, Any]:
    """A server started on demand exits as soon as it has nothing to do (``stratus deploy``
    asks this of the server it started). A server started by an administrator stays. Only an
    administrator (the host's site token) asks it."""
    if not user.admin:
        raise Forbidden("only an administrator asks the server to exit")
    activity = getattr(request.app.state, "activity", None)
    if activity is None or activity.idle <= 0:
        return {"exiting": False}
    activity.idle = min(activity.idle, 1.0)
    return {"exiting": True}
