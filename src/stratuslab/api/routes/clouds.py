"""/api/clouds: the clouds of the site. Every user lists and shows the enabled ones; site
administrators register, change, disable and remove them, and see their options with every
credential redacted. The registry (:mod:`stratuslab.cloud.registry`) decides who may do what;
a route reads the body and calls it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, status

from stratuslab.api.deps import ServicesDep, UserDep
from stratuslab.api.schemas.clouds import CloudCreate, CloudDetail, CloudPublic, CloudUpdate
from stratuslab.cloud.registry import UNSET
from stratuslab.cloud.registry_values import MAX_NAME

router = APIRouter(prefix="/api/clouds", tags=["clouds"])
Name = Annotated[str, Path(min_length=1, max_length=MAX_NAME, description="the cloud's name")]


@router.get("", response_model=list[CloudPublic])
def list_clouds(services: ServicesDep, user: UserDep) -> list[dict[str, Any]]:
    """The clouds in the order placement tries them (priority, then name); administrators
    see the disabled ones too."""
    return [c.to_dict() for c in services.clouds.list(user)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=CloudDetail)
def add(body: CloudCreate, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    """Register a cloud (administrators). Its backend is asked its capacity first: one that
    cannot be reached (503) or refuses the credentials (403) is not recorded."""
    if body.lxd is not None:
        lxd = body.lxd
        view = services.clouds.add_lxd(
            user,
            body.name,
            endpoint=lxd.endpoint,
            password=lxd.password,
            cert_pem=lxd.cert_pem,
            key_pem=lxd.key_pem,
            fingerprint=lxd.fingerprint,
            profile=lxd.profile,
            priority=body.priority,
            max_instances=body.max_instances,
        )
    else:
        assert body.connector is not None  # the schema says one of the two
        view = services.clouds.add(
            user,
            body.name,
            body.connector,
            dict(body.options or {}),
            priority=body.priority,
            max_instances=body.max_instances,
        )
    return view.to_dict()


@router.get("/{name}", response_model=CloudDetail)
def show(name: Name, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    """One cloud, with what the store records there and the backend's capacity if it answers
    within seconds (else ``capacity`` is null and ``capacity_error`` says why)."""
    return services.clouds.show(user, name).to_dict()


@router.patch("/{name}", response_model=CloudDetail)
def change(name: Name, body: CloudUpdate, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    """Change a cloud (administrators): what is left out is kept. Disabling takes it out of
    placement (what runs there goes on) with ``note`` saying why; enabling clears the note."""
    given = body.model_fields_set
    view = services.clouds.update(
        user,
        name,
        priority=body.priority if body.priority is not None else UNSET,
        max_instances=body.max_instances if "max_instances" in given else UNSET,
        enabled=body.enabled,
        note=body.note if "note" in given else UNSET,
        options=dict(body.options) if body.options is not None else None,
    )
    return view.to_dict()


@router.delete("/{name}", response_model=CloudPublic)
def remove(name: Name, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    """Remove a cloud (administrators): refused (409, saying how many) while the store records
    instances or volumes alive there."""
    return services.clouds.remove(user, name).to_dict()
