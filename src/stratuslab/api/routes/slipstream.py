"""/run: SlipStream's run resource, as its node tools and clients expect it.

Parameters are text/plain, runs are XML, a start is a form post. Errors answer in kind (text,
or an XML ``detail`` for a refused start) rather than in the JSON of the project's own API.
One extension: ``GET /run/<uuid>/<key>?wait=S[&differs=V]`` is a long-poll answered the moment
the value is set (or changes from V), where SlipStream's tools polled every 5 s.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Annotated
from urllib.parse import parse_qs
from xml.etree import ElementTree as ET

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from stratuslab.api.deps import (
    CallerDep,
    Services,
    ServicesDep,
    UserDep,
    presented_by,
    run_caller,
)
from stratuslab.api.limits import read_body
from stratuslab.api.routes.runs import instance_numbers
from stratuslab.api.schemas.runs import MAX_ID, MAX_TEXT
from stratuslab.deploy.runs import RunRequest
from stratuslab.deploy.states import parse_keep_running
from stratuslab.errors import (
    BackendError,
    Forbidden,
    Invalid,
    NotSupported,
    RunAborted,
    StratusError,
)
from stratuslab.principal import Principal

router = APIRouter(prefix="/run", tags=["slipstream"])
MAX_FORM = 256 * 1024  # bytes of a form body: a start names a module and some parameters
Key = Annotated[str, "a runtime parameter name"]
TRUE = ("on", "true", "yes")  # a checkbox's "on", ss-execute --scalable's "true"


async def _text(work: Callable[[], Awaitable[Response]]) -> Response:
    try:
        return await work()
    except StratusError as exc:
        # SlipStream answers 409 for an aborted run; the header tells our agent that conflict
        # from the others (a key the server owns, a run that is over).
        headers = {"X-Stratus-Aborted": "1"} if isinstance(exc, RunAborted) else None
        return Response(
            exc.message, status_code=exc.http_status, media_type="text/plain", headers=headers
        )


@router.post("")
async def start_run(request: Request, services: ServicesDep, user: UserDep) -> Response:
    """Start a run from a form: refqname, parameter--node--<node>--<param>, keep-running, ..."""
    try:
        form = await _form(request)
        if form.get("type") == "Machine":  # SlipStream's "build image": a bake
            return await _bake(request, form, services, user)
        run_request = _run_request(form)
        view = await run_in_threadpool(partial(services.runs.create, run_request, caller=user))
    except StratusError as exc:
        error = ET.Element("error", {"detail": str(exc)})
        # A start refused for what it asks is a 409 (SlipStream's answer), even a run type we
        # do not support; only a backend that failed answers in the 5xx.
        status = exc.http_status if isinstance(exc, BackendError) else 409
        return Response(ET.tostring(error), status_code=status, media_type="application/xml")
    location = f"{str(request.base_url).rstrip('/')}/run/{view['id']}"
    return Response(status_code=201, headers={"Location": location})


@router.get("")
def list_runs(
    services: ServicesDep,
    user: UserDep,
    active_only: Annotated[bool, Query(alias="activeOnly")] = False,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 20,
) -> Response:
    runs = services.runs.list_runs(caller=user, active_only=active_only, offset=offset, limit=limit)
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
async def get_run(run_id: str, services: ServicesDep, caller: CallerDep) -> Response:
    async def work() -> Response:
        view = await run_in_threadpool(partial(services.runs.view, run_id, caller=caller))
        # Secret values are masked: the XML is a listing, whoever reads it (deploy/secrets.py).
        params = await run_in_threadpool(partial(services.params.all, run_id, caller=caller))
        plan = await run_in_threadpool(partial(services.runs.plan, run_id, caller=caller))
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
        for key, value in sorted(params.items()):
            entry = ET.SubElement(entries, "entry")
            ET.SubElement(entry, "string").text = key
            group = key.split(":", 1)[0]
            parameter = ET.SubElement(entry, "runtimeParameter", {"key": key, "group": group})
            parameter.text = value or ""
        return Response(ET.tostring(root), media_type="application/xml")

    return await _text(work)


# The three routes nodes call all the time (a barrier of thousands of node instances is
# thousands of them in a second) read their query by hand: FastAPI's dependency machinery
# cost as much as the work itself. The caller is found as CallerDep finds it.


@router.get("/{run_id}/{key}")
async def get_parameter(run_id: str, key: Key, request: Request) -> Response:
    """The value of ``key``; ``wait=S`` (at most 60) waits for it to be set, or to differ
    from ``differs``; ``ignoreabort=true`` answers on an aborted run too."""
    services: Services = request.app.state.services

    caller = await run_caller(run_id, services, presented_by(request))

    async def work() -> Response:
        query = request.query_params
        value = await services.params.wait(
            run_id,
            key,
            caller=caller,
            wait=_seconds(query.get("wait")),
            differs=_text_param(query, "differs"),
            ignore_abort=_flag(query, "ignoreabort"),
        )
        return Response(value, media_type="text/plain")

    return await _text(work)


@router.put("/{run_id}/{key}")
async def set_parameter(run_id: str, key: Key, request: Request) -> Response:
    """Set ``key`` to the body (text; empty unsets it); ``ignoreabort=true`` on an aborted
    run too; ``secret=true`` makes it secret for good (``ss-random --secret``)."""
    services: Services = request.app.state.services

    caller = await run_caller(run_id, services, presented_by(request))

    async def work() -> Response:
        value = _utf8(await read_body(request, MAX_TEXT * 4), f"the value of {key[:80]}")
        ignore_abort = _flag(request.query_params, "ignoreabort")
        secret = _flag(request.query_params, "secret")
        written = services.params.writing(
            run_id, key, value, caller=caller, ignore_abort=ignore_abort, secret=secret
        )
        await asyncio.wrap_future(written)  # no worker thread held meanwhile
        return Response(status_code=200)

    return await _text(work)


@router.post("/{run_id}/{key}")
async def post_to_run(run_id: str, key: Key, request: Request) -> Response:
    """``<node>.<i>:complete[?state=S]``: the node instance finished the current state (or
    S). ``<node>`` with the form field ``n=K``: add K instances to a scalable run; answers
    their names."""
    services: Services = request.app.state.services

    caller = await run_caller(run_id, services, presented_by(request))

    async def work() -> Response:
        if ":" not in key:
            if caller.is_node:
                raise Forbidden("only the run's owner adds instances")
            form = await _form(request)
            count = _int("n", form.get("n", "1"))
            names = await run_in_threadpool(
                partial(services.scaling.add_instances, run_id, key, count, caller=caller)
            )
            return Response(",".join(names), media_type="text/plain")
        if not key.endswith(":complete"):
            raise Invalid(f"POST {key[:80]!r}: post <node>.<i>:complete, or <node> with n=K")
        node_instance = key.removesuffix(":complete")
        state = _text_param(request.query_params, "state", limit=32)
        completion = services.control.completion(run_id, node_instance, caller=caller, state=state)
        await asyncio.wrap_future(completion)  # no worker thread held meanwhile
        return Response(status_code=200)

    return await _text(work)


def _flag(query: Mapping[str, str], name: str) -> bool:
    return query.get(name, "").lower() in ("true", "1", "yes", "on")


def _seconds(text: str | None) -> float:
    if not text:
        return 0.0
    try:
        seconds = float(text)
    except ValueError:
        raise Invalid(f"wait={text[:20]!r}: give a number of seconds") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise Invalid(f"wait={text[:20]!r}: give a number of seconds, 0 or more")
    return seconds


def _text_param(query: Mapping[str, str], name: str, limit: int = MAX_TEXT) -> str | None:
    value = query.get(name)
    if value is not None and len(value) > limit:
        raise Invalid(f"{name}: at most {limit} characters")
    return value


@router.delete("/{run_id}/{key}")
async def delete_in_run(
    run_id: str, key: Key, request: Request, services: ServicesDep, caller: CallerDep
) -> Response:
    """``<node>.<i>:<name>`` (any key holding a ``:``, ``ss:abort`` too): clear that runtime
    parameter, as a ``PUT`` of an empty value would (``ss-abort --cancel`` of SlipStream's
    client clears so); ``ignoreabort=true`` on an aborted run too. ``<node>`` with the form
    field ``ids=1,3``: remove those instances from a scalable run."""

    async def work() -> Response:
        if ":" in key:
            ignore_abort = _flag(request.query_params, "ignoreabort")
            cleared = services.params.writing(
                run_id, key, "", caller=caller, ignore_abort=ignore_abort
            )
            await asyncio.wrap_future(cleared)  # no worker thread held meanwhile
            return Response(status_code=204)
        if caller.is_node:
            raise Forbidden("only the run's owner removes instances")
        form = await _form(request)
        ids = instance_numbers(form.get("ids") or request.query_params.get("ids", ""))
        await run_in_threadpool(
            partial(services.scaling.remove_instances, run_id, key, ids, caller=caller)
        )
        return Response(status_code=204)

    return await _text(work)


@router.delete("/{run_id}")
async def terminate(run_id: str, services: ServicesDep, caller: CallerDep) -> Response:
    async def work() -> Response:
        if caller.is_node:
            raise Forbidden("a node may not terminate its run; ss-abort aborts it")
        await run_in_threadpool(partial(services.control.terminate, run_id, caller=caller))
        return Response(status_code=204)

    return await _text(work)


def _utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Invalid(f"{what} is not UTF-8 text (byte {exc.start})") from None


async def _form(request: Request) -> dict[str, str]:
    """A form-encoded body (SlipStream's clients post forms), parsed without python-multipart."""
    body = _utf8(await read_body(request, MAX_FORM), "the form")
    try:
        fields = parse_qs(body, keep_blank_values=True, errors="strict", max_num_fields=1000)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Invalid(f"the form cannot be read: {exc}") from None
    form = {k: v[-1] for k, v in fields.items()}
    # Module paths, tags and names are looked up or stored as sent; none holds a NUL (%00).
    if any("\x00" in k or "\x00" in v for k, v in form.items()):
        raise Invalid("the form holds a NUL character (%00); none of its fields takes one")
    return form


async def _bake(
    request: Request, form: dict[str, str], services: Services, user: Principal
) -> Response:
    """``type=Machine``: bake the component ``refqname`` (deploy/bake.py). 201 with the bake's
    run as ``Location``, or 200 with the image when one of the same digest exists already."""
    refqname = form.get("refqname", "").removeprefix("module/")
    if not refqname:
        raise Invalid("refqname (module/<path>[/<version>]) is required")
    cloud = form.get("parameter--cloudservice") or None
    answer = await run_in_threadpool(
        partial(services.bakes.bake, refqname, cloud=cloud, caller=user)
    )
    name = str(answer["image"]["name"])
    if answer["cached"]:
        image = ET.Element("image", {"name": name, "digest": answer["digest"], "cached": "true"})
        return Response(ET.tostring(image), media_type="application/xml")
    location = f"{str(request.base_url).rstrip('/')}/run/{answer['run']['id']}"
    return Response(status_code=201, headers={"Location": location, "X-Stratus-Image": name})


def _run_request(form: dict[str, str]) -> RunRequest:
    refqname = form.get("refqname", "").removeprefix("module/")
    if not refqname:
        raise Invalid("refqname (module/<path>[/<version>]) is required")
    kind = form.get("type", "Orchestration")
    if kind != "Orchestration":
        raise NotSupported(
            f"run type {kind!r}: Orchestration (an application) and Machine (a bake) are supported"
        )
    given: dict[str, str] = {}
    multiplicity: dict[str, int] = {}
    clouds: dict[str, str] = {}
    max_failures: dict[str, int] = {}
    for field, value in form.items():
        if not field.startswith("parameter--"):
            continue
        parts = field.split("--")
        if len(parts) == 4 and parts[1] == "node":
            node, name = parts[2], parts[3]
            if name == "multiplicity":
                multiplicity[node] = _int(field, value)
            elif name == "cloudservice":
                clouds[node] = value
            elif name == "max-provisioning-failures":
                max_failures[node] = _int(field, value)
            else:
                given[f"{node}:{name}"] = value
        elif len(parts) == 2:
            given[f"ss:{parts[1]}"] = value
        else:
            raise Invalid(
                f"form field {field[:80]!r} is not parameter--<name> or "
                "parameter--node--<node>--<name>"
            )
    return RunRequest(
        module=refqname,
        given=given,
        multiplicity=multiplicity,
        keep_running=parse_keep_running(form.get("keep-running", "on-success")),
        tags=[t for t in form.get("tags", "").split(",") if t],
        mutable=form.get("mutable", "").lower() in TRUE,
        clouds=clouds,
        max_provisioning_failures=max_failures,
    )


def _int(field: str, value: str) -> int:
    try:
        number = int(value) if len(value) <= 12 else None
    except ValueError:
        number = None
    if number is None or not 0 <= number <= MAX_ID:
        raise Invalid(f"{field} must be a number from 0 to {MAX_ID}, not {value[:20]!r}")
    return number
