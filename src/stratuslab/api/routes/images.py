"""/api/images and /api/clouds: what instances can be started from, and where."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from stratuslab.api.deps import ServicesDep, UserDep
from stratuslab.cloud import clouds

router = APIRouter(prefix="/api", tags=["images"])


@router.get("/images")
def list_images(
    services: ServicesDep, user: UserDep, cloud: Annotated[str, Query()] = "local"
) -> list[dict[str, Any]]:
    return [
        {
            "name": i.name,
            "fingerprint": i.fingerprint,
            "size_bytes": i.size_bytes,
            "description": i.description,
            "created_at": i.created_at,
            "properties": dict(i.properties),
        }
        for i in services.instances(user).list_images(cloud)
    ]


@router.get("/clouds")
def list_clouds(services: ServicesDep, _user: UserDep) -> list[dict[str, Any]]:
    return [{"name": c.name, "connector": c.connector} for c in clouds.all_clouds(services.engine)]
