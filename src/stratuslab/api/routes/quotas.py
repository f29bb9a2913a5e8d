"""/api/quotas: what users and groups may hold at once, with what they hold now."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from stratuslab.api.deps import ServicesDep, UserDep
from stratuslab.api.schemas.quotas import QuotaUpdate
from stratuslab.cloud.quotas import Limits

router = APIRouter(prefix="/api/quotas", tags=["quotas"])


@router.get("")
def show(
    services: ServicesDep,
    user: UserDep,
    of: Annotated[
        str | None,
        Query(alias="user", max_length=64, description="an administrator's view of a user"),
    ] = None,
    all: Annotated[bool, Query(description="every quota recorded (administrators)")] = False,
) -> dict[str, Any]:
    """The quotas that bind the caller (an administrator: ``?user=``, or ``?all=true`` for
    every quota), each with what it adds up now, and what the user holds per cloud and on
    all clouds (``*``)."""
    return services.quotas.show(caller=user, user=of, all_quotas=all)


@router.put("/{subject}")
def set_quota(
    subject: Annotated[
        str, Path(max_length=80, description="user:NAME, group:NAME, or user:* for every user")
    ],
    body: QuotaUpdate,
    services: ServicesDep,
    user: UserDep,
) -> dict[str, Any]:
    """Set the quota of a user or a group on one cloud (administrators only); what is held
    already stays, even over the new limits."""
    limits = Limits(body.instances, body.cpu, body.ram_mb, body.storage_gib)
    return services.quotas.set(subject, cloud=body.cloud, limits=limits, caller=user)
