"""/api/instances: start machines from images and work with them."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
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
from stratuslab.api.schemas.volumes import VolumeMount
from stratuslab.cloud import events
from stratuslab.cloud.clouds import DEFAULT_CLOUD
from stratuslab.cloud.instances import InstanceService, InstanceView, Prepared, RunRequest
from stratuslab.cloud.volume_claims import VolumeClaim
from stratuslab.errors import Invalid, StratusError
from stratuslab.principal import Principal

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
    return _with_volumes(services, user, views)


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=InstancesAccepted)
def run_instances(body: InstanceCreate, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    """Check and record the instances, then create them in the background. Follow them with
    ``GET /api/instances/watch?ids=...``. Each is created with ``volumes`` attached (the
    caller's own, or another user's public ones read-only), claimed as it is recorded."""
    service = services.instances(user)
    given = body.model_dump(exclude={"volumes", "cloud", "ssh_keys"})
    # Volumes live on one cloud: instances with volumes go there (the local cloud, for now).
    cloud = body.cloud or DEFAULT_CLOUD
    claims = _claims(services, user, body.volumes, cloud=cloud)
    anywhere = body.cloud is None and not body.volumes
    prepared = service.prepare(
        RunRequest(
            **given, cloud=cloud, anywhere=anywhere, ssh_keys=tuple(body.ssh_keys), volumes=claims
        )
    )
    services.submit(_provision, service, prepared)
    ids = ",".join(v.id for v in prepared.views)
    return {
        "instances": _with_volumes(services, user, prepared.views),
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
        _changes(services, service, seq, views, timeout), media_type="application/x-ndjson"
    )


@router.get("/{ref}", response_model=InstancePublic)
def show(ref: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return _with_volumes(services, user, [services.instances(user).get(ref)])[0]


@router.post("/{ref}/stop", response_model=InstancePublic)
def stop(ref: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return _with_volumes(services, user, [services.instances(user).stop(ref)])[0]


@router.post("/{ref}/start", response_model=InstancePublic)
def start(ref: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return _with_volumes(services, user, [services.instances(user).start(ref)])[0]


@router.delete("/{ref}", response_model=InstancePublic)
def kill(ref: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return services.instances(user).kill(ref).to_dict()


@router.post("/{ref}/exec", response_model=ExecResponse)
def exec_command(
    ref: str, body: ExecRequest, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    result = services.instances(user).exec(ref, body.command, timeout=body.timeout)
    return {"exit_code": result.exit_code, "stdout": result.stdout, "stderr": result.stderr}


def _with_volumes(
    services: Services, user: Principal, views: Sequence[InstanceView]
) -> list[dict[str, Any]]:
    """The instances as users see them, each with the volumes attached to it (one read of
    the store for all of them)."""
    attached = services.volumes(user).of_instances([v.id for v in views])
    return [
        {
            **v.to_dict(),
            "volumes": [
                {"ref": a.volume, "path": a.path, "read_only": a.read_only, "state": a.state}
                for a in attached.get(v.id, ())
            ],
        }
        for v in views
    ]


def _claims(
    services: Services, user: Principal, mounts: Sequence[VolumeMount], *, cloud: str
) -> tuple[VolumeClaim, ...]:
    """The volume service's claims for ``mounts`` (its rights check: the caller's own volume,
    or another user's public one read-only), each volume and each path once."""
    if not mounts:
        return ()
    volumes = services.volumes(user)
    claims = []
    for mount in mounts:
        claims.append(
            volumes.claim_for(mount.volume, path=mount.path, read_only=mount.read_only, cloud=cloud)
        )
    for what, keys in (
        ("volume", [c.volume_id for c in claims]),
        ("mount path", [c.mount.path for c in claims]),
    ):
        twice = next((k for n, k in enumerate(keys) if k in keys[:n]), None)
        if twice is not None:
            label = claims[keys.index(twice)].label if what == "volume" else twice
            raise Invalid(f"{what} {label} is given twice: an instance has each once")
    return tuple(claims)


def _provision(service: InstanceService, prepared: Prepared) -> None:
    try:
        service.provision(prepared)
    except StratusError:
        pass  # every failure was recorded on its instance and published by the service
    except Exception:
        log.exception("provisioning %s failed", [v.id for v in prepared.views])


async def _changes(
    services: Services,
    service: InstanceService,
    seq: int,
    views: list[InstanceView],
    timeout: float,
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
        changed = []
        for event in published:
            seq = event.seq
            if "instance" in event.payload:
                changed.append(event.payload)
            else:  # another process's event, too big to carry its payload: read it
                ref = event.topic.rpartition(":")[2]
                changed += await _reread(service, current, [ref])
        if not published:
            # A keepalive; and, when events from other processes may have been missed (the
            # hub woke us with nothing), what the store says now.
            changed = await _reread(service, current, list(current))
            if not changed:
                yield b"\n"  # keeps idle connections (and proxies) from timing out
        for payload in changed:
            instance = payload["instance"]
            current[instance["id"]] = instance["state"]
            yield _line(payload)


async def _reread(
    service: InstanceService, current: dict[str, str], refs: list[str]
) -> list[dict[str, Any]]:
    """Changes of ``refs`` the store has that ``current`` does not, as the watch sends them."""
    found = []
    for ref in refs:
        try:
            view = await run_in_threadpool(partial(service.get, ref, refresh=False))
        except StratusError:
            continue
        if current.get(view.id) != view.state:
            found.append({"what": view.state, "instance": view.to_dict()})
    return found


def _line(data: dict[str, Any]) -> bytes:
    return json.dumps(data, default=str).encode() + b"\n"
