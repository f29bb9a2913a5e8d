"""/api/runs: deployment runs in the project's JSON, and what node agents need beyond /run."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse

from stratuslab.api.deps import CallerDep, RunId, ServicesDep, UserDep
from stratuslab.api.schemas.runs import MAX_ID, InstancesAdd, LogBatch, RunCreate
from stratuslab.deploy.logs import MAX_READ
from stratuslab.deploy.model import RECIPE_STEPS
from stratuslab.deploy.runs import MAX_EVENTS, RunRequest
from stratuslab.deploy.states import parse_keep_running
from stratuslab.deploy.tx import logs_topic, run_topic
from stratuslab.errors import Forbidden, Invalid
from stratuslab.principal import Principal
from stratuslab.services import Services

router = APIRouter(prefix="/api/runs", tags=["runs"])
MAX_STREAM = 3600.0  # seconds one watch or follow request lasts at most; clients ask again
KEEPALIVE = 15.0  # seconds between the blank lines that keep an idle stream open
Page = Annotated[int, Query(ge=0, le=MAX_ID)]
_REPORT_UPLOAD = re.compile(r"^/api/runs/[^/]+/reports/[^/]+$")


def streams_its_body(method: str, path: str) -> bool:
    """Whether a request's body is bounded by its route rather than by the server's limit on
    bodies (api/limits.py): a report upload streams to disk under its own cap."""
    return method == "PUT" and _REPORT_UPLOAD.match(path) is not None


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
        pristine=body.pristine,
    )
    return services.runs.create(request, caller=user)


@router.get("")
def list_runs(
    services: ServicesDep,
    user: UserDep,
    active: bool = False,
    all: bool = False,
    offset: Page = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 20,
) -> list[dict[str, Any]]:
    return services.runs.list_runs(
        caller=user, all_owners=all, active_only=active, offset=offset, limit=limit
    )


@router.get("/{run_id}")
def show(run_id: RunId, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return services.runs.view(run_id, caller=user)


@router.delete("/{run_id}")
def terminate(
    run_id: RunId, services: ServicesDep, user: UserDep, force: bool = False
) -> dict[str, Any]:
    """Terminate the run; ``force=true`` ends a run whose teardown could not finish."""
    services.control.terminate(run_id, caller=user, force=force)
    return services.runs.summary(run_id, caller=user)


@router.get("/{run_id}/params")
def params(
    run_id: RunId, services: ServicesDep, user: UserDep, show_secrets: bool = False
) -> dict[str, str | None]:
    """Every parameter and its value; a secret one as ``********``, unless the run's owner
    (or an administrator) asks ``show_secrets=true``."""
    return services.params.all(run_id, caller=user, show_secrets=show_secrets)


@router.get("/{run_id}/events")
def events(
    run_id: RunId, services: ServicesDep, user: UserDep, after: Page = 0
) -> list[dict[str, Any]]:
    return services.runs.events(run_id, caller=user, after=after)


@router.get("/{run_id}/watch")
async def watch(
    run_id: RunId,
    services: ServicesDep,
    user: UserDep,
    after: Page = 0,
    timeout: Annotated[float, Query(gt=0)] = MAX_STREAM,
) -> StreamingResponse:
    """The run's events as they happen (one JSON object a line), from event ``after`` on, until
    the run has settled (ended, or waiting in Ready with its instances kept) or ``timeout``
    seconds (at most an hour) have passed; a client that wants more asks again."""
    return StreamingResponse(
        _events(services, user, run_id, after, min(timeout, MAX_STREAM)),
        media_type="application/x-ndjson",
    )


@router.get("/{run_id}/logs")
async def logs(
    run_id: RunId,
    services: ServicesDep,
    user: UserDep,
    node: Annotated[str | None, Query(max_length=128)] = None,
    after: Page = 0,
    follow: bool = False,
    timeout: Annotated[float, Query(gt=0)] = MAX_STREAM,
) -> Response:
    """What the recipes printed; with ``follow``, a stream until the run ends or ``timeout``
    seconds (at most an hour) have passed."""
    if not follow:
        lines = await run_in_threadpool(
            partial(services.logs.read, run_id, caller=user, node_instance=node, after=after)
        )
        return Response(json.dumps(lines), media_type="application/json")
    return StreamingResponse(
        _log_lines(services, user, run_id, node, after, min(timeout, MAX_STREAM)),
        media_type="application/x-ndjson",
    )


@router.post("/{run_id}/nodes/{node}/instances")
def add_instances(
    run_id: RunId, node: str, body: InstancesAdd, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    """Add instances to a node of a scalable run in Ready (the run goes round again)."""
    return {"added": services.scaling.add_instances(run_id, node, body.count, caller=user)}


@router.delete("/{run_id}/nodes/{node}/instances")
def remove_instances(
    run_id: RunId,
    node: str,
    services: ServicesDep,
    user: UserDep,
    ids: Annotated[str, Query(max_length=10_000)],  # 1000 instances; no server takes longer URLs
) -> dict[str, Any]:
    """Remove the instances ``ids=1,3`` of a node of a scalable run in Ready."""
    numbers = instance_numbers(ids)
    return {"removed": services.scaling.remove_instances(run_id, node, numbers, caller=user)}


@router.get("/{run_id}/reports")
def reports(run_id: RunId, services: ServicesDep, user: UserDep) -> list[dict[str, Any]]:
    return services.reports.of_run(run_id, caller=user)


@router.get("/{run_id}/reports/{node_instance}")
def report(run_id: RunId, node_instance: str, services: ServicesDep, user: UserDep) -> FileResponse:
    path = services.reports.file(run_id, node_instance, caller=user)
    return FileResponse(
        path, media_type="application/gzip", filename=f"{run_id[:8]}-{node_instance}.tar.gz"
    )


@router.get("/{run_id}/junit", response_class=Response)
def junit(run_id: RunId, services: ServicesDep, user: UserDep) -> Response:
    """The run as JUnit XML: a test suite per node, a test case per recipe phase of each node
    instance, and the nodes' own JUnit report files (deploy/junit.py)."""
    return Response(services.junit.of_run(run_id, caller=user), media_type="application/xml")


# -- what node agents use ---------------------------------------------------------------


@router.get("/{run_id}/nodes/{node_instance}/plan")
def node_plan(
    run_id: str, node_instance: str, services: ServicesDep, caller: CallerDep
) -> dict[str, Any]:
    if caller.is_node and caller.node_instance != node_instance:
        raise Forbidden(f"{caller} may not read the plan of {node_instance}")
    node, _, index = node_instance.rpartition(".")
    plan = services.runs.plan(run_id, caller=caller)
    if node not in plan.nodes or not index.isdigit():
        raise Invalid(f"{node_instance[:140]} is not a node instance of run {run_id}")
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
        "scaling": services.runs.summary(run_id, caller=caller)["scaling"],
    }


@router.post("/{run_id}/logs", status_code=status.HTTP_204_NO_CONTENT)
def add_logs(run_id: str, body: LogBatch, services: ServicesDep, caller: CallerDep) -> None:
    services.logs.add(
        run_id, body.node_instance, [line.model_dump() for line in body.lines], caller=caller
    )


@router.put("/{run_id}/reports/{node_instance}", status_code=status.HTTP_201_CREATED)
async def upload_report(
    run_id: str, node_instance: str, request: Request, services: ServicesDep, caller: CallerDep
) -> dict[str, Any]:
    """A node instance's report, received as it streams in and refused past the bound."""
    announced = request.headers.get("content-length", "")
    upload = await run_in_threadpool(
        partial(
            services.reports.begin,
            run_id,
            node_instance,
            caller=caller,
            size=int(announced) if announced.isdigit() else None,
        )
    )
    try:
        async for chunk in request.stream():
            upload.write(chunk)
    except BaseException:
        upload.discard()
        raise
    result: dict[str, Any] = await run_in_threadpool(upload.commit)
    return result


def instance_numbers(ids: str) -> list[int]:
    """``1,3`` -> [1, 3], refusing what is not a list of instance numbers."""
    try:
        numbers = [int(part) for part in ids.split(",") if part.strip()]
    except ValueError:
        raise Invalid(f"ids={ids[:40]!r}: give instance numbers, like ids=1,3") from None
    if any(not 1 <= number <= MAX_ID for number in numbers):
        raise Invalid("ids: instance numbers start at 1")
    return numbers


async def _events(
    services: Services, caller: Principal, run_id: str, after: int, timeout: float
) -> AsyncIterator[bytes]:
    deadline = time.monotonic() + timeout
    last = after
    while True:
        seq = services.hub.seq
        settled = await run_in_threadpool(services.runs.settled, run_id)
        # Read after checking: the events that settled the run are then among those sent.
        while True:
            batch = await run_in_threadpool(
                partial(services.runs.events, run_id, caller=caller, after=last)
            )
            for event in batch:
                last = event["id"]
                yield json.dumps(event).encode() + b"\n"
            if len(batch) < MAX_EVENTS:
                break
        if settled:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        woke = await services.hub.wait(
            seq, topics=[run_topic(run_id)], timeout=min(remaining, KEEPALIVE)
        )
        if not woke:
            yield b"\n"  # keeps an idle connection alive


async def _log_lines(
    services: Services,
    caller: Principal,
    run_id: str,
    node: str | None,
    after: int,
    timeout: float,
) -> AsyncIterator[bytes]:
    deadline = time.monotonic() + timeout
    last = after
    while True:
        seq = services.hub.seq
        ended = await run_in_threadpool(services.runs.ended, run_id)
        while True:
            batch = await run_in_threadpool(
                partial(services.logs.read, run_id, caller=caller, node_instance=node, after=last)
            )
            for line in batch:
                last = line["id"]
                yield json.dumps(line).encode() + b"\n"
            if len(batch) < MAX_READ:
                break
        if ended:  # read after checking, so that the last lines are among those sent
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        woke = await services.hub.wait(
            seq, topics=[logs_topic(run_id), run_topic(run_id)], timeout=min(remaining, KEEPALIVE)
        )
        if not woke:
            yield b"\n"
