"""/api/usage: what users' instances ran, added up over a window, for billing."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from stratuslab.api.deps import ServicesDep, UserDep

router = APIRouter(prefix="/api/usage", tags=["usage"])


@router.get("")
def usage(
    services: ServicesDep,
    user: UserDep,
    since: Annotated[datetime | None, Query(description="ISO 8601; UTC when no zone")] = None,
    until: Annotated[datetime | None, Query(description="ISO 8601; default now")] = None,
    of: Annotated[str | None, Query(alias="user", max_length=64)] = None,
    by: Annotated[Literal["user", "cloud", "run"], Query()] = "user",
    all: Annotated[bool, Query(description="every user's (administrators)")] = False,
) -> dict[str, Any]:
    """Instance-hours, vCPU-hours and memory GiB-hours per user, cloud or run, each interval
    clipped to [since, until) (by default the month so far). A user sees their own; an
    administrator anyone's (``?user=``), or everybody's (``?all=true``)."""
    return services.accounting.report(
        caller=user, since=since, until=until, user=of, by=by, all_users=all
    )
