"""/api/volumes: persistent volumes, made on their own, attached to running instances, kept
when instances die, snapshotted, cloned, resized.

A volume is named in the path as users name it: ``NAME`` (the caller's own), ``OWNER/NAME``
(anybody's: another user's public volume is found, their private one is a 404 in the words of
one that does not exist) or its id (``vol-...``). The reference takes one or two segments, so
the routes with a suffix (``/attach``, ``/snapshots``...) come before the bare one:
``GET /api/volumes/alice/snapshots`` lists the snapshots of the caller's volume ``alice``
(name alice's volume ``snapshots`` by its id). Who may see and change what is the volume
service's to decide (:mod:`stratuslab.cloud.volumes`); a route reads the body and calls it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, status

from stratuslab.api.deps import ServicesDep, UserDep
from stratuslab.api.schemas.volumes import (
    MAX_REF,
    VolumeAttach,
    VolumeCreate,
    VolumeDetach,
    VolumePublic,
    VolumeResize,
    VolumeSnapshotCreate,
    VolumeSnapshotPublic,
)
from stratuslab.cloud.volume_values import parse_size

router = APIRouter(prefix="/api/volumes", tags=["volumes"])
Ref = Annotated[
    str, Path(min_length=1, max_length=MAX_REF, description="NAME, OWNER/NAME or a volume id")
]
SnapshotName = Annotated[str, Path(min_length=1, max_length=63)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=VolumePublic)
def create(body: VolumeCreate, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    """Make a volume: empty, or with ``source`` a copy of a volume or of one of its
    snapshots (copy-on-write where the backend can), at least as large as its source. Its size
    is checked against the caller's storage quota before anything is created."""
    made = services.volumes(user).create(
        body.name,
        size_bytes=parse_size(body.size) if body.size is not None else None,
        cloud=body.cloud,
        public=body.public,
        description=body.description,
        source=body.source,
    )
    return made.to_dict()


@router.get("", response_model=list[VolumePublic])
def list_volumes(
    services: ServicesDep,
    user: UserDep,
    public: Annotated[bool, Query(description="every user's public volumes too")] = False,
    all: Annotated[bool, Query(description="every user's volumes (administrators)")] = False,
) -> list[dict[str, Any]]:
    views = services.volumes(user).list(public=public, all_owners=all)
    return [v.to_dict() for v in views]


@router.post("/{ref:path}/attach", response_model=VolumePublic)
def attach(ref: Ref, body: VolumeAttach, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    """Attach the volume to a running instance (hot): mounted at ``path`` when this answers.
    Another user's public volume is attached read-only or not at all (403)."""
    view = services.volumes(user).attach(
        ref, body.instance, path=body.path, read_only=body.read_only
    )
    return view.to_dict()


@router.post("/{ref:path}/detach", response_model=VolumePublic)
def detach(ref: Ref, body: VolumeDetach, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    """Detach the volume from an instance; its files are kept."""
    return services.volumes(user).detach(ref, body.instance).to_dict()


@router.post("/{ref:path}/resize", response_model=VolumePublic)
def resize(ref: Ref, body: VolumeResize, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    """Grow (or shrink, down to what its files take) a volume, attached or not."""
    return services.volumes(user).resize(ref, size_bytes=parse_size(body.size)).to_dict()


@router.get("/{ref:path}/snapshots", response_model=list[VolumeSnapshotPublic])
def list_snapshots(ref: Ref, services: ServicesDep, user: UserDep) -> list[dict[str, Any]]:
    return [s.to_dict() for s in services.volumes(user).snapshots(ref)]


@router.post(
    "/{ref:path}/snapshots",
    status_code=status.HTTP_201_CREATED,
    response_model=VolumeSnapshotPublic,
)
def take_snapshot(
    ref: Ref, body: VolumeSnapshotCreate, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    return services.volumes(user).snapshot(ref, body.name).to_dict()


@router.post("/{ref:path}/snapshots/{snapshot}/restore", response_model=VolumePublic)
def restore_snapshot(
    ref: Ref, snapshot: SnapshotName, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    """Put the volume's files back as they were at ``snapshot`` (which is kept)."""
    return services.volumes(user).restore(ref, snapshot).to_dict()


@router.delete("/{ref:path}/snapshots/{snapshot}", status_code=status.HTTP_204_NO_CONTENT)
def delete_snapshot(ref: Ref, snapshot: SnapshotName, services: ServicesDep, user: UserDep) -> None:
    services.volumes(user).delete_snapshot(ref, snapshot)


@router.get("/{ref:path}", response_model=VolumePublic)
def show(ref: Ref, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return services.volumes(user).get(ref).to_dict()


@router.delete("/{ref:path}", response_model=VolumePublic)
def delete(ref: Ref, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    """Delete the volume and its snapshots; refused (409, naming where) while it is attached."""
    return services.volumes(user).delete(ref).to_dict()
