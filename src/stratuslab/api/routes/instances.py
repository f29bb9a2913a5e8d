"""/api/instances: start machines from images and work with them."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from stratuslab.api.deps import Services, ServicesDep, UserDep
from stratuslab.api.schemas.instances import (
    ExecRequest,
    ExecResponse,
    InstanceCreate,
    InstancePublic,
    InstancesAccepted,
)
from stratuslab.cloud import events
from stratuslab.cloud.instances import InstanceService, InstanceView, Prepared, RunRequest
from stratuslab.errors import Invalid, StratusError

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/instances", tags=["instances"])
SETTLED = {"running", "stopped", "gone", "error"}
MAX_IDS = 10_000  # characters of ids= one watch follows (about 300 instances)


@router.get("", response_model=list[InstancePublic])
def list_instances(
    services: ServicesDep,
    user: UserDep,
    all: Annotated[bool, Query(description="every user's instances")] = False,
    gone: Annotated[bool, Query(description="include instances that are gone")] = False,
) -> list[dict[str, Any]]:
    views = services.instances(user).list_instances(all_owners=all, include_gone=gone)
    return [v.to_dict() for v in views]


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=InstancesAccepted)
def run_instances(body: InstanceCreate, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    """Check and record the instances, then create them in the background. Follow them with
    ``GET /api/instances/watch?ids=...``."""
    service = services.instances(user)
    prepared = service.prepare(
        RunRequest(**{**body.model_dump(), "ssh_keys": tuple(body.ssh_keys)})
    )
    services.submit(_provision, service, prepared)
    ids = ",".join(v.id for v in prepared.views)
    return {
        "instances": [v.to_dict() for v in prepared.views],
        "watch": f"/api/instances/watch?ids={ids}",
    }


@router.get("/watch")
async def watch(
    services: ServicesDep,
    user: UserDep,
    ids: Annotated[str, Query(description="comma-separated instance ids", max_length=MAX_IDS)],
    timeout: Annotated[float, Query(gt=0, le=3600)] = 600,
) -> StreamingResponse:
    """A stream of state changes (one JSON object a line) until every instance has settled
    (running, stopped, gone or error) or ``timeout`` seconds have passed."""
    wanted = list(dict.fromkeys(i for i in ids.split(",") if i))
    if not wanted:
        raise Invalid("give at least one instance id in ids=")
    service = services.instances(user)
    seq = services.hub.seq  # taken before reading, so that no change slips between the two
    # Found before the stream starts: once it has, an unknown id could no longer be a 404.
    views = [await run_in_threadpool(partial(service.get, ref, refresh=False)) for ref in wanted]
    return StreamingResponse(
        _changes(services, seq, views, timeout), media_type="application/x-ndjson"
    )


@router.get("/{ref}", response_model=InstancePublic)
def show(ref: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return services.instances(user).get(ref).to_dict()


@router.post("/{ref}/stop", response_model=InstancePublic)
def stop(ref: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return services.instances(user).stop(ref).to_dict()


@router.post("/{ref}/start", response_model=InstancePublic)
def start(ref: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return services.instances(user).start(ref).to_dict()


@router.delete("/{ref}", response_model=InstancePublic)
def kill(ref: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return services.instances(user).kill(ref).to_dict()


@router.post("/{ref}/exec", response_model=ExecResponse)
def exec_command(
    ref: str, body: ExecRequest, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    result = services.instances(user).exec(ref, body.command, timeout=body.timeout)
    return {"exit_code": result.exit_code, "stdout": result.stdout, "stderr": result.stderr}


def _provision(service: InstanceService, prepared: Prepared) -> None:
    try:
        service.provision(prepared)
    except StratusError:
        pass  # every failure was recorded on its instance and published by the service
    except Exception:
        log.exception("provisioning %s failed", [v.id for v in prepared.views])


async def _changes(
    services: Services, seq: int, views: list[InstanceView], timeout: float
) -> AsyncIterator[bytes]:
    current = {}
    for view in views:
        current[view.id] = view.state
        yield _line({"what": view.state, "instance": view.to_dict()})
    deadline = time.monotonic() + timeout
    topics = [events.topic(i) for i in current]  # where the service's sink publishes
    while any(state not in SETTLED for state in current.values()):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            yield _line({"what": "timeout", "instance": None})
            return
        published = await services.hub.wait(seq, topics=topics, timeout=min(remaining, 15))
        if not published:
            yield b"\n"  # keeps idle connections (and proxies) from timing out
        for event in published:
            seq = event.seq
            instance = event.payload["instance"]
            current[instance["id"]] = instance["state"]
            yield _line(event.payload)


def _line(data: dict[str, Any]) -> bytes:
    return json.dumps(data, default=str).encode() + b"\n"
