"""/health: is the server up, and which one is it."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, Request

from stratuslab import __version__
from stratuslab.api.deps import UserDep

router = APIRouter(tags=["health"])


@router.get("/health")
def health() -> dict[str, Any]:
    return {"status": "ok", "version": __version__, "pid": os.getpid()}


@router.post("/api/server/exit-when-idle")
def exit_when_idle(request: Request, _user: UserDep) -> dict[str, Any]:
    """A server started on demand exits as soon as it has nothing to do (``stratus deploy``
    asks this of the server it started). A server started by an administrator stays."""
    activity = getattr(request.app.state, "activity", None)
    if activity is None or activity.idle <= 0:
        return {"exiting": False}
    activity.idle = min(activity.idle, 1.0)
    return {"exiting": True}
