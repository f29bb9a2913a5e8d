"""/api/images/bake, /api/images/baked, /api/images/prune: images baked from components."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from stratuslab.api.deps import ServicesDep, UserDep
from stratuslab.api.schemas.runs import MAX_PATH
from stratuslab.api.schemas.text import Text
from stratuslab.deploy import bake_stale

router = APIRouter(prefix="/api/images", tags=["images"])
Cloud = Annotated[str, Query(max_length=64, description="the cloud")]


class BakeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    module: Text = Field(max_length=MAX_PATH + 12, description="a component: path or path/N")
    cloud: Text | None = Field(default=None, max_length=64, description="default: local")


class PruneRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cloud: Text = Field(default="local", max_length=64)
    dry_run: bool = False
    all: bool = Field(default=False, description="every user's (administrators)")


@router.post("/bake")
def bake(
    body: BakeRequest, services: ServicesDep, user: UserDep, response: Response
) -> dict[str, Any]:
    """Bake a component: 200 with the image when one of the same digest exists already,
    else 202 with the bake's run (follow it as any run; it ends Done with a ``baked`` event)."""
    answer = services.bakes.bake(body.module, cloud=body.cloud, caller=user)
    if not answer["cached"]:
        response.status_code = status.HTTP_202_ACCEPTED
    return answer


class BakeApplication(BaseModel):
    model_config = ConfigDict(extra="forbid")

    module: Text = Field(max_length=MAX_PATH + 12, description="an application: path or path/N")


@router.post("/bake-application")
def bake_application(
    body: BakeApplication, services: ServicesDep, user: UserDep
) -> list[dict[str, Any]]:
    """Bake every node's component that lacks a baked image (``stratus deploy --bake``)."""
    return services.bakes.bake_application(body.module, caller=user)


@router.get("/baked")
def baked(
    services: ServicesDep,
    user: UserDep,
    cloud: Cloud = "local",
    all: Annotated[bool, Query(description="every user's (administrators)")] = False,
) -> list[dict[str, Any]]:
    """The caller's baked images on ``cloud``, each with ``stale`` and ``used_by``."""
    return bake_stale.listing(services.bakes, caller=user, cloud=cloud, everyone=all)


@router.post("/prune")
def prune(body: PruneRequest, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    """Delete the caller's stale baked images (``all``: everyone's, for an administrator)."""
    return bake_stale.prune(
        services.bakes, caller=user, cloud=body.cloud, everyone=body.all, dry_run=body.dry_run
    )
