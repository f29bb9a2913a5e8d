"""/run: SlipStream's run resource, as its node tools and clients expect it.

Parameters are text/plain, runs are XML, a start is a form post. Errors answer in kind (text,
or an XML ``detail`` for a refused start) rather than in the JSON of the project's own API.
One extension: ``GET /run/<uuid>/<key>?wait=S[&differs=V]`` is a long-poll answered the moment
the value is set (or changes from V), where SlipStream's tools polled every 5 s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import parse_qs
from xml.etree import ElementTree as ET

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from stratuslab.api.deps import Caller, ServicesDep, UserDep, run_caller
from stratuslab.deploy.keys import parse_key
from stratuslab.deploy.runs import RunRequest
from stratuslab.deploy.states import parse_keep_running
from stratuslab.deploy.tx import abort_topic, param_topic
from stratuslab.errors import Invalid, NotSupported, NotYetSet, StratusError

router = APIRouter(prefix="/run", tags=["slipstream"])
MAX_WAIT = 60.0
RunCaller = Annotated[Caller, Depends(run_caller)]


async def _text(work: Callable[[], Awaitable[Response]]) -> Response:
    try:
        return await work()
    except StratusError as exc:
        return Response(exc.message, status_code=exc.http_status, media_type="text/plain")


@router.post("")
async def start_run(request: Request, services: ServicesDep, user: UserDep) -> Response:
    """Start a run from a form: refqname, parameter--node--<node>--<param>, keep-running, ..."""
    form = await _form(request)
    try:
        run_request = _run_request(form)
        view = await run_in_threadpool(services.runs.create, run_request, owner=user)
    except StratusError as exc:
        error = ET.Element("error", {"detail": str(exc)})
        return Response(ET.tostring(error), status_code=409, media_type="application/xml")
    services.orchestrator.schedule(view["id"], "provision")
    location = f"{str(request.base_url).rstrip('/')}/run/{view['id']}"
    return Response(status_code=201, headers={"Location": location})


@router.get("")
def list_runs(
    services: ServicesDep,
    user: UserDep,
    active_only: Annotated[bool, Query(alias="activeOnly")] = False,
    offset: int = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 20,
) -> Response:
    runs = services.runs.list_runs(owner=user, active_only=active_only, offset=offset, limit=limit)
    root = ET.Element("runs", {"offset": str(offset), "limit": str(limit), "count": str(len(runs))})
    for run in runs:
        ET.SubElement(
            root,
            "item",
            {
                "uuid": run["id"],
                "moduleResourceUri": f"module/{run['module']}",
                "status": run["state"],
                "startTime": run["created_at"],
                "username": run["owner"],
                "tags": ",".join(run["tags"]),
                "abort": run["abort_reason"] or "",
            },
        )
    return Response(ET.tostring(root), media_type="application/xml")


@router.get("/{run_id}")
async def get_run(run_id: str, services: ServicesDep, caller: RunCaller) -> Response:
    async def work() -> Response:
        view = await run_in_threadpool(services.runs.view, run_id)
        params = await run_in_threadpool(services.params.all, run_id)
        plan = await run_in_threadpool(services.runs.plan, run_id)
        clouds = sorted({node.cloud for node in plan.nodes.values()})
        root = ET.Element(
            "run",
            {
                "uuid": view["id"],
                "moduleResourceUri": f"module/{view['module']}",
                "state": view["state"],
                "startTime": view["created_at"],
                "lastStateChangeTime": view["last_state_change"],
                "cloudServiceNames": ",".join(clouds),
                "user": view["owner"],
                "mutable": str(view["mutable"]).lower(),
                "type": "Orchestration",
                "category": "Deployment",
                "nodeNames": ",".join(n["name"] for n in view["nodes"] if not n["removed"]),
            },
        )
        entries = ET.SubElement(root, "runtimeParameters")
        params["ss:state"] = view["state"]
        for key, value in sorted(params.items()):
            entry = ET.SubElement(entries, "entry")
            ET.SubElement(entry, "string").text = key
            group = key.split(":", 1)[0]
            parameter = ET.SubElement(entry, "runtimeParameter", {"key": key, "group": group})
            parameter.text = value or ""
        return Response(ET.tostring(root), media_type="application/xml")

    return await _text(work)


@router.get("/{run_id}/{key}")
async def get_parameter(
    run_id: str,
    key: str,
    services: ServicesDep,
    caller: RunCaller,
    ignoreabort: bool = False,
    wait: Annotated[float, Query(ge=0)] = 0,
    differs: str | None = None,
) -> Response:
    key = _qualified(key, caller)

    async def work() -> Response:
        value = await wait_for_value(
            services,
            run_id,
            key,
            wait=min(wait, MAX_WAIT),
            differs=differs,
            ignore_abort=ignoreabort,
        )
        return Response(value, media_type="text/plain")

    return await _text(work)


@router.put("/{run_id}/{key}")
async def set_parameter(
    run_id: str,
    key: str,
    request: Request,
    services: ServicesDep,
    caller: RunCaller,
    ignoreabort: bool = False,
) -> Response:
    key = _qualified(key, caller)

    async def work() -> Response:
        value = (await request.body()).decode()
        await run_in_threadpool(
            services.params.write,
            run_id,
            key,
            value,
            node_instance=caller.node_instance,
            ignore_abort=ignoreabort,
        )
        return Response(status_code=200)

    return await _text(work)


@router.post("/{run_id}/{key}")
async def post_to_run(
    run_id: str,
    key: str,
    request: Request,
    services: ServicesDep,
    caller: RunCaller,
    state: str | None = None,
) -> Response:
    """``<node>.<i>:complete``: the node instance finished the current state. ``<node>`` with
    the form field ``n=K``: add K instances to a scalable run; answers their names."""

    async def work() -> Response:
        if ":" not in key:
            if caller.user is None:
                raise Invalid("only the run's owner adds instances")
            form = await _form(request)
            names = await run_in_threadpool(
                services.scaling.add_instances, run_id, key, _int("n", form.get("n", "1"))
            )
            return Response(",".join(names), media_type="text/plain")
        if not key.endswith(":complete"):
            raise Invalid(f"POST {key!r}: post <node>.<i>:complete, or <node> with n=K")
        node_instance = key.removesuffix(":complete")
        if caller.node_instance is not None and caller.node_instance != node_instance:
            raise Invalid(f"{caller.node_instance} may not complete for {node_instance}")
        await run_in_threadpool(services.control.complete, run_id, node_instance, state=state)
        return Response(status_code=200)

    return await _text(work)


@router.delete("/{run_id}/{node}")
async def remove_instances(
    run_id: str, node: str, request: Request, services: ServicesDep, caller: RunCaller
) -> Response:
    """Remove the instances ``ids=1,3`` of ``node`` from a scalable run."""

    async def work() -> Response:
        if caller.user is None:
            raise Invalid("only the run's owner removes instances")
        form = await _form(request)
        ids = [
            _int("ids", part)
            for part in (form.get("ids") or request.query_params.get("ids", "")).split(",")
            if part
        ]
        await run_in_threadpool(services.scaling.remove_instances, run_id, node, ids)
        return Response(status_code=204)

    return await _text(work)


@router.delete("/{run_id}")
async def terminate(run_id: str, services: ServicesDep, caller: RunCaller) -> Response:
    async def work() -> Response:
        if caller.user is None:
            raise Invalid("a node may not terminate its run; ss-abort aborts it")
        await run_in_threadpool(services.control.terminate, run_id)
        return Response(status_code=204)

    return await _text(work)


async def wait_for_value(
    services: Any, run_id: str, key: str, *, wait: float, differs: str | None, ignore_abort: bool
) -> str:
    """The value of ``key``, waiting up to ``wait`` seconds for it to be set (or to differ from
    ``differs``). Raises NotYetSet when it is still not so."""
    topics = [param_topic(run_id, str(parse_key(key))), abort_topic(run_id)]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        seq = services.hub.seq  # taken before reading, so that no change slips between the two
        try:
            value: str = await run_in_threadpool(
                services.params.read, run_id, key, ignore_abort=ignore_abort
            )
            if differs is None or value != differs:
                return value
        except NotYetSet:
            pass
        remaining = deadline - loop.time()
        if remaining <= 0:
            if differs is not None:
                raise NotYetSet(f"{key} is still {differs!r}")
            raise NotYetSet(f"{key} is not set yet")
        await services.hub.wait(seq, topics=topics, timeout=remaining)


async def _form(request: Request) -> dict[str, str]:
    """A form-encoded body (SlipStream's clients post forms), parsed without python-multipart."""
    body = (await request.body()).decode()
    return {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}


def _qualified(key: str, caller: Caller) -> str:
    """A bare name from a node is its own instance's, as SlipStream's tools qualify it."""
    if ":" not in key and caller.node_instance is not None:
        return f"{caller.node_instance}:{key}"
    return key


def _run_request(form: dict[str, str]) -> RunRequest:
    refqname = form.get("refqname", "").removeprefix("module/")
    if not refqname:
        raise Invalid("refqname (module/<path>[/<version>]) is required")
    kind = form.get("type", "Orchestration")
    if kind != "Orchestration":
        raise NotSupported(f"run type {kind!r}: only Orchestration (an application) is supported")
    given: dict[str, str] = {}
    multiplicity: dict[str, int] = {}
    for field, value in form.items():
        if not field.startswith("parameter--"):
            continue
        parts = field.split("--")
        if len(parts) == 4 and parts[1] == "node":
            node, name = parts[2], parts[3]
            if name == "multiplicity":
                multiplicity[node] = _int(field, value)
            elif name in ("cloudservice", "max-provisioning-failures"):
                raise NotSupported(f"{field}: set it in the application module")
            else:
                given[f"{node}:{name}"] = value
        elif len(parts) == 2:
            given[f"ss:{parts[1]}"] = value
        else:
            raise Invalid(
                f"form field {field!r} is not parameter--<name> or parameter--node--<node>--<name>"
            )
    return RunRequest(
        module=refqname,
        given=given,
        multiplicity=multiplicity,
        keep_running=parse_keep_running(form.get("keep-running", "on-success")),
        tags=[t for t in form.get("tags", "").split(",") if t],
        mutable=form.get("mutable") == "on",
    )


def _int(field: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise Invalid(f"{field} must be a number, not {value!r}") from None
