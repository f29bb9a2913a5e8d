"""/api/whoami: who the request's credentials make the caller, and how they proved it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from stratuslab.accounts.authn import Presented
from stratuslab.api.deps import PresentedDep, Services, ServicesDep, UserDep
from stratuslab.api.schemas.accounts import WhoAmI
from stratuslab.principal import Principal

router = APIRouter(prefix="/api/whoami", tags=["whoami"])


@router.get("", response_model=WhoAmI)
async def whoami(services: ServicesDep, user: UserDep, presented: PresentedDep) -> dict[str, Any]:
    """The principal the request acts as. An administrator acting as someone else
    (``X-Stratus-User``) is that user here, and ``authenticated_as`` names the administrator."""
    return await run_in_threadpool(_describe, services, user, presented)


def _describe(services: Services, user: Principal, presented: Presented) -> dict[str, Any]:
    method, session = services.authn.method(presented)
    own = services.authn.user(replace(presented, act_as="")) if presented.act_as else user
    owner = (own.user if own is not None else None) or user.user or ""
    return {
        "user": user.user or "",
        "admin": user.admin,
        "groups": sorted(user.groups),
        "authenticated_by": method,
        "authenticated_as": owner,
        "session": session,
        "acting_as": owner != user.user,
    }
