"""What users make of images: save an instance, snapshot it, import an image, delete one.

``POST /api/images/import`` answers with a stream (one JSON object a line) once everything
that can be refused before the download has passed: ``progress`` lines (stage ``download``
with bytes done and in all, then ``verify``, ``inspect``, ``import``), then one ``done`` line
with the image or one ``error`` line with the error, as the error handler would have sent it.
"""

from __future__ import annotations

import json
import logging
import queue
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from stratuslab.api.deps import ServicesDep, UserDep
from stratuslab.api.schemas.images import ImportBody, SaveRequest, SnapshotCreate
from stratuslab.api.schemas.instances import InstancePublic
from stratuslab.cloud.importer import Checked, Importer, ImportRequest
from stratuslab.errors import BackendError, StratusError

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api", tags=["images"])
KEEPALIVE_S = 15.0


@router.post("/instances/{ref}/save", status_code=status.HTTP_201_CREATED)
def save(ref: str, body: SaveRequest, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    made = services.images(user).save(
        ref, name=body.name, public=body.public, description=body.description
    )
    return made.to_dict()


@router.get("/instances/{ref}/snapshots")
def list_snapshots(ref: str, services: ServicesDep, user: UserDep) -> list[dict[str, Any]]:
    return [s.to_dict() for s in services.snapshots(user).of(ref)]


@router.post("/instances/{ref}/snapshots", status_code=status.HTTP_201_CREATED)
def take_snapshot(
    ref: str, body: SnapshotCreate, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    return services.snapshots(user).take(ref, body.name).to_dict()


@router.post("/instances/{ref}/snapshots/{name}/restore", response_model=InstancePublic)
def restore_snapshot(ref: str, name: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return services.snapshots(user).restore(ref, name).to_dict()


@router.delete("/instances/{ref}/snapshots/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_snapshot(ref: str, name: str, services: ServicesDep, user: UserDep) -> None:
    services.snapshots(user).delete(ref, name)


@router.delete("/images/{name:path}")
def delete_image(
    name: str,
    services: ServicesDep,
    user: UserDep,
    cloud: Annotated[str, Query(max_length=64)] = "local",
    site: Annotated[bool, Query(description="the site's image of that name")] = False,
) -> dict[str, Any]:
    return services.images(user).delete(name[:200], cloud=cloud, site=site)


@router.post("/images/import")
async def import_image(body: ImportBody, services: ServicesDep, user: UserDep) -> StreamingResponse:
    importer = services.importer(user)
    request = ImportRequest(
        source=body.source,
        name=body.name,
        cloud=body.cloud,
        entry=body.entry.encode() if body.entry is not None else None,
        identifier=body.identifier,
        public=body.public,
        description=body.description,
    )
    checked = await run_in_threadpool(importer.check, request)
    events: queue.Queue[dict[str, Any]] = queue.Queue()
    services.submit(_import, importer, checked, events)
    return StreamingResponse(_lines(events), media_type="application/x-ndjson")


def _import(importer: Importer, checked: Checked, events: queue.Queue[dict[str, Any]]) -> None:
    def progress(stage: str, done: int, total: int | None) -> None:
        events.put({"what": "progress", "stage": stage, "done": done, "total": total})

    try:
        made = importer.run(checked, progress=progress)
    except StratusError as exc:
        events.put({"what": "error", "error": _error(exc)})
    except Exception:
        log.exception("importing %s failed", checked.request.source[:200])
        events.put({"what": "error", "error": _error(BackendError("the import failed: a bug"))})
    else:
        events.put({"what": "done", "image": made.to_dict()})


async def _lines(events: queue.Queue[dict[str, Any]]) -> AsyncIterator[bytes]:
    while True:
        event = await run_in_threadpool(_next, events)
        if event is None:
            yield b"\n"  # keeps the connection (and proxies) from timing out
            continue
        yield json.dumps(event, default=str).encode() + b"\n"
        if event["what"] in ("done", "error"):
            return


def _next(events: queue.Queue[dict[str, Any]]) -> dict[str, Any] | None:
    try:
        return events.get(timeout=KEEPALIVE_S)
    except queue.Empty:
        return None


def _error(exc: StratusError) -> dict[str, Any]:
    return {"type": type(exc).__name__, "message": exc.message, "hint": exc.hint}
