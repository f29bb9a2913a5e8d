"""/api/runs: deployment runs in the project's JSON, and what node agents need beyond /run."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse

from stratuslab.api.deps import CallerDep, RunId, Services, ServicesDep, UserDep
from stratuslab.api.schemas.runs import InstancesAdd, LogBatch, RunCreate
from stratuslab.deploy.model import RECIPE_STEPS
from stratuslab.deploy.runs import RunRequest
from stratuslab.deploy.states import parse_keep_running
from stratuslab.deploy.tx import run_topic
from stratuslab.errors import Invalid

router = APIRouter(prefix="/api/runs", tags=["runs"])
MAX_REPORT = 64 * 2**20


@router.post("", status_code=status.HTTP_201_CREATED)
def create(body: RunCreate, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    """Check and record a run, then provision it in the background; follow it with
    ``GET /api/runs/<id>/watch``."""
    request = RunRequest(
        module=body.module,
        given=body.params,
        multiplicity=body.multiplicity,
        keep_running=parse_keep_running(body.keep_running),
        tags=body.tags,
        timeout_s=body.timeout_s,
        mutable=body.mutable,
    )
    view = services.runs.create(request, owner=user)
    services.orchestrator.schedule(view["id"], "provision")
    return view


@router.get("")
def list_runs(
    services: ServicesDep,
    user: UserDep,
    active: bool = False,
    all: bool = False,
    offset: int = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 20,
) -> list[dict[str, Any]]:
    return services.runs.list_runs(
        owner=None if all else user, active_only=active, offset=offset, limit=limit
    )


@router.get("/{run_id}")
def show(run_id: RunId, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return services.runs.view(run_id)


@router.delete("/{run_id}")
def terminate(run_id: RunId, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    services.control.terminate(run_id)
    return services.runs.summary(run_id)


@router.get("/{run_id}/params")
def params(run_id: RunId, services: ServicesDep, user: UserDep) -> dict[str, str | None]:
    services.runs.summary(run_id)
    return services.params.all(run_id)


@router.get("/{run_id}/events")
def events(
    run_id: RunId, services: ServicesDep, user: UserDep, after: int = 0
) -> list[dict[str, Any]]:
    services.runs.summary(run_id)
    return services.runs.events(run_id, after=after)


@router.get("/{run_id}/watch")
async def watch(
    run_id: RunId,
    services: ServicesDep,
    user: UserDep,
    after: int = 0,
    timeout: Annotated[float, Query(gt=0)] = 86400,
) -> StreamingResponse:
    """The run's events as they happen (one JSON object a line), from event ``after`` on, until
    the run has settled: ended, or waiting in Ready with its instances kept."""
    await run_in_threadpool(services.runs.summary, run_id)
    return StreamingResponse(
        _events(services, run_id, after, timeout), media_type="application/x-ndjson"
    )


@router.get("/{run_id}/logs")
async def logs(
    run_id: RunId,
    services: ServicesDep,
    user: UserDep,
    node: str | None = None,
    after: int = 0,
    follow: bool = False,
) -> Response:
    await run_in_threadpool(services.runs.summary, run_id)
    if not follow:
        lines = await run_in_threadpool(
            partial(services.runs.logs, run_id, node_instance=node, after=after)
        )
        return Response(json.dumps(lines), media_type="application/json")
    return StreamingResponse(
        _log_lines(services, run_id, node, after), media_type="application/x-ndjson"
    )


@router.post("/{run_id}/nodes/{node}/instances")
def add_instances(
    run_id: RunId, node: str, body: InstancesAdd, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    """Add instances to a node of a scalable run in Ready (the run goes round again)."""
    return {"added": services.scaling.add_instances(run_id, node, body.count)}


@router.delete("/{run_id}/nodes/{node}/instances")
def remove_instances(
    run_id: RunId, node: str, services: ServicesDep, user: UserDep, ids: Annotated[str, Query()]
) -> dict[str, Any]:
    """Remove the instances ``ids=1,3`` of a node of a scalable run in Ready."""
    try:
        numbers = [int(part) for part in ids.split(",") if part]
    except ValueError:
        raise Invalid(f"ids={ids!r}: give instance numbers, like ids=1,3") from None
    return {"removed": services.scaling.remove_instances(run_id, node, numbers)}


@router.get("/{run_id}/reports")
def reports(run_id: RunId, services: ServicesDep, user: UserDep) -> list[dict[str, Any]]:
    services.runs.summary(run_id)
    return services.runs.reports(run_id)


@router.get("/{run_id}/reports/{node_instance}")
def report(run_id: RunId, node_instance: str, services: ServicesDep, user: UserDep) -> FileResponse:
    path = services.runs.report_file(run_id, node_instance)
    return FileResponse(
        path, media_type="application/gzip", filename=f"{run_id[:8]}-{node_instance}.tar.gz"
    )


# -- what node agents use ---------------------------------------------------------------


@router.get("/{run_id}/nodes/{node_instance}/plan")
def node_plan(
    run_id: str, node_instance: str, services: ServicesDep, caller: CallerDep
) -> dict[str, Any]:
    _only_itself(caller.node_instance, node_instance)
    node, _, index = node_instance.rpartition(".")
    plan = services.runs.plan(run_id)
    if node not in plan.nodes or not index.isdigit():
        raise Invalid(f"{node_instance} is not a node instance of run {run_id}")
    spec = plan.nodes[node]
    return {
        "run": run_id,
        "node": node,
        "index": int(index),
        "node_instance": node_instance,
        "packages": list(spec.packages),
        "recipes": {
            step: [
                {"module": module, "script": script}
                for module, script in spec.recipes.get(step, ())
            ]
            for step in RECIPE_STEPS
            if step != "packages"
        },
        "scaling": services.runs.summary(run_id)["scaling"],
    }


@router.post("/{run_id}/logs", status_code=status.HTTP_204_NO_CONTENT)
def add_logs(run_id: str, body: LogBatch, services: ServicesDep, caller: CallerDep) -> None:
    _only_itself(caller.node_instance, body.node_instance)
    services.runs.add_logs(run_id, body.node_instance, [line.model_dump() for line in body.lines])


@router.put("/{run_id}/reports/{node_instance}", status_code=status.HTTP_201_CREATED)
async def upload_report(
    run_id: str, node_instance: str, request: Request, services: ServicesDep, caller: CallerDep
) -> dict[str, Any]:
    _only_itself(caller.node_instance, node_instance)
    data = await request.body()
    if len(data) > MAX_REPORT:
        raise Invalid(
            f"a report is at most {MAX_REPORT // 2**20} MiB; this one has {len(data) // 2**20} MiB"
        )
    result: dict[str, Any] = await run_in_threadpool(
        services.runs.store_report, run_id, node_instance, data
    )
    return result


def _only_itself(caller: str | None, node_instance: str) -> None:
    if caller is not None and caller != node_instance:
        raise Invalid(f"{caller} may not act for {node_instance}")


async def _events(
    services: Services, run_id: str, after: int, timeout: float
) -> AsyncIterator[bytes]:
    deadline = time.monotonic() + timeout
    last = after
    while True:
        seq = services.hub.seq
        settled = await run_in_threadpool(services.runs.settled, run_id)
        # Read after checking: the events that settled the run are then among those sent.
        for event in await run_in_threadpool(services.runs.events, run_id, after=last):
            last = event["id"]
            yield json.dumps(event).encode() + b"\n"
        if settled:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        if not await services.hub.wait(seq, topics=[run_topic(run_id)], timeout=min(remaining, 15)):
            yield b"\n"  # keeps an idle connection alive


async def _log_lines(
    services: Services, run_id: str, node: str | None, after: int
) -> AsyncIterator[bytes]:
    last = after
    while True:
        seq = services.hub.seq
        ended = await run_in_threadpool(services.runs.ended, run_id)
        batch = await run_in_threadpool(
            partial(services.runs.logs, run_id, node_instance=node, after=last)
        )
        for line in batch:
            last = line["id"]
            yield json.dumps(line).encode() + b"\n"
        if ended:  # read after checking, so that the last lines are among those sent
            return
        if not await services.hub.wait(
            seq, topics=[f"logs:{run_id}", run_topic(run_id)], timeout=15
        ):
            yield b"\n"
