"""/api/images: what instances can be started from (the clouds are /api/clouds, clouds.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from stratuslab.api.deps import ServicesDep, UserDep
from stratuslab.cloud.marketplace.policy import refusal_message
from stratuslab.errors import Invalid

router = APIRouter(prefix="/api", tags=["images"])
MAX_NAME = 256  # characters of an image name looked up


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


@router.get("/images/{name:path}/verify")
def verify_image(
    name: str,
    services: ServicesDep,
    user: UserDep,
    cloud: Annotated[str, Query(max_length=200)] = "local",
) -> dict[str, Any]:
    """The site's trust policy on image ``name`` of ``cloud``: whether it may start, the rule
    that decided and every reason. Nothing is started; a refusal is an answer, not an error."""
    if len(name) > MAX_NAME:
        raise Invalid(f"an image name has at most {MAX_NAME} characters")
    image, decision = services.instances(user).decide_image(name, cloud=cloud)
    return {
        "image": image.name,
        "cloud": cloud,
        "fingerprint": image.fingerprint,
        "size_bytes": image.size_bytes,
        **decision.to_dict(),
        "message": None if decision.allowed else refusal_message(image.name, cloud, decision),
    }


@router.get("/images/{name:path}/checksums")
def image_checksums(
    name: Annotated[str, Path(max_length=MAX_NAME)],
    services: ServicesDep,
    user: UserDep,
    cloud: Annotated[str, Query(max_length=64)] = "local",
) -> dict[str, Any]:
    """The size and digests of an image's bytes (what its Marketplace entry states), and the
    identifier they give: read once from the cloud (the image is exported), then kept."""
    workdir = services.settings.data_dir / "exports"
    found = services.instances(user).image_checksums(cloud, name, workdir=workdir)
    sums = found.checksums
    return {
        "cloud": found.cloud,
        "name": name,
        "fingerprint": found.image.fingerprint,
        "description": found.image.description,
        "properties": dict(found.image.properties),
        "identifier": sums.identifier,
        "size": sums.size,
        "md5": sums.md5,
        "sha1": sums.sha1,
        "sha256": sums.sha256,
        "sha512": sums.sha512,
        "cached": found.cached,
    }
