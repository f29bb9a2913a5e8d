"""/api/event: a run's events as SlipStream's event resource, what ``Api.get_deployment_events``
reads.

Their client asks ``PUT /api/event`` with the CIMI filter
``content/resource/href='run/<uuid>'``, maybe ``and (type='state' or type='alarm')``, and
reads a collection of events, each with a ``timestamp``, a ``content`` (``resource.href``, and
``state``: what happened, in words), a ``type`` (state, alarm, action, system) and a
``severity`` (``ssclj/resources/spec/event.cljc``). This server keeps events per run, so a
query names its run; the filter grammar is that subset of CIMI's, and anything else is refused
with a clear 422 rather than half understood.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from stratuslab.api.deps import ServicesDep, UserDep
from stratuslab.api.routes.cimi import (
    ADMIN_ONLY,
    SLIPSTREAM_SCHEMA,
    CimiRoute,
    collection,
    query_of,
)
from stratuslab.deploy.events import EventKind
from stratuslab.errors import Invalid, NotFound

router = APIRouter(prefix="/api/event", tags=["session"], route_class=CimiRoute)
TYPES = ("state", "alarm", "action", "system")
_TYPE_OF = {
    EventKind.CREATED: "state",
    EventKind.STATE: "state",
    EventKind.ABORT: "alarm",
    EventKind.LOST: "alarm",
    EventKind.PROVISIONING_FAILED: "alarm",
    EventKind.TEARDOWN_FAILED: "alarm",
    EventKind.TERMINATE: "action",
    EventKind.SCALE: "action",
}
_TOKEN = re.compile(r"\s*(?:(\()|(\))|(and|or)\b|([A-Za-z/]+)\s*=\s*'([^']*)')", re.IGNORECASE)
_RUN_HREF = "content/resource/href"
MAX_FILTER = 1024
HINT = "filter content/resource/href='run/<uuid>' [and (type='state' or type='alarm' ...)]"


@router.get("")
async def events(request: Request, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    query = query_of(request)
    run_id, types = parse_filter(query.get("$filter", ""))
    first, last = _bound(query, "$first", 1), _bound(query, "$last", None)
    try:
        found = await run_in_threadpool(lambda: services.runs.events(run_id, caller=user))
    except NotFound:  # another user's run, or none: a filter that matches nothing
        found = []
    members = [_event(run_id, e) for e in found]
    members = [e for e in members if not types or e["type"] in types]
    members = members[first - 1 : last]
    return collection(id="event", name="Event", key="events", members=members)


@router.put("")
async def query_events(request: Request, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    """CIMI's query (``Api.cimi_search``): the filter in the form body."""
    return await events(request, services, user)


def parse_filter(text: str) -> tuple[str, frozenset[str]]:
    """(run id, the types asked for, empty for all) from a CIMI filter of the subset this
    server reads: clauses joined by ``and``, one of them the run's href, the others ``type``
    or a parenthesised ``or`` of ``type`` clauses."""
    if len(text) > MAX_FILTER:
        raise Invalid(f"$filter: at most {MAX_FILTER} characters")
    tokens = _tokens(text)
    if not tokens:
        raise Invalid("$filter: name one run, content/resource/href='run/<uuid>'", hint=HINT)
    group, position = _group(tokens, 0, text)
    groups = [group]
    while position < len(tokens):
        if tokens[position] != ("and",):
            raise Invalid(f"$filter: clauses are joined by 'and' here: {text[:120]!r}", hint=HINT)
        group, position = _group(tokens, position + 1, text)
        groups.append(group)
    run_ids: list[str] = []
    types: set[str] | None = None
    for group in groups:
        attrs = {attr for attr, _ in group}
        if attrs == {_RUN_HREF} and len(group) == 1:
            run_ids.append(group[0][1])
        elif attrs == {"type"}:
            asked = {value for _, value in group}
            types = asked if types is None else types & asked
        else:
            raise Invalid(
                f"$filter: this server does not filter events so: {text[:120]!r}", hint=HINT
            )
    if len(run_ids) != 1 or not run_ids[0].startswith("run/") or len(run_ids[0]) > 44:
        raise Invalid("$filter: name one run, content/resource/href='run/<uuid>'", hint=HINT)
    unknown = sorted((types or set()) - set(TYPES))
    if unknown:
        raise Invalid(f"$filter: no event type {unknown[0][:20]!r}; there are {', '.join(TYPES)}")
    return run_ids[0].removeprefix("run/"), frozenset(types or ())


def _tokens(text: str) -> list[tuple[str, ...]]:
    tokens: list[tuple[str, ...]] = []
    position = 0
    while text[position:].strip():
        match = _TOKEN.match(text, position)
        if match is None:
            raise Invalid(f"$filter: cannot read {text[position : position + 40]!r}", hint=HINT)
        opened, closed, word, attr, value = match.groups()
        tokens.append(
            ("(",) if opened else (")",) if closed else (word.lower(),) if word else (attr, value)
        )
        position = match.end()
    return tokens


def _group(
    tokens: list[tuple[str, ...]], position: int, text: str
) -> tuple[list[tuple[str, str]], int]:
    """One clause, or a parenthesised ``or`` of clauses, from ``position``."""
    if position < len(tokens) and len(tokens[position]) == 2:
        attr, value = tokens[position]
        return [(attr, value)], position + 1
    if position >= len(tokens) or tokens[position] != ("(",):
        raise Invalid(f"$filter: a clause attribute='value' is missing: {text[:120]!r}", hint=HINT)
    terms: list[tuple[str, str]] = []
    position += 1
    while True:
        if position >= len(tokens) or len(tokens[position]) != 2:
            raise Invalid(f"$filter: a clause attribute='value' is missing: {text[:120]!r}")
        terms.append((tokens[position][0], tokens[position][1]))
        position += 1
        if position < len(tokens) and tokens[position] == ("or",):
            position += 1
            continue
        if position < len(tokens) and tokens[position] == (")",):
            return terms, position + 1
        raise Invalid(f"$filter: an unclosed or ill-formed group: {text[:120]!r}", hint=HINT)


def _bound(query: dict[str, str], name: str, default: int | None) -> Any:
    text = query.get(name)
    if text is None:
        return default
    if not text.isdigit() or len(text) > 9:
        raise Invalid(f"{name}: a number from 1, not {text[:20]!r}")
    return max(int(text), 1)


def _event(run_id: str, event: dict[str, Any]) -> dict[str, Any]:
    kind = EventKind(event["kind"])
    kind_type = _TYPE_OF.get(kind, "system")
    if kind is EventKind.STATE:
        said = str(event["fields"]["state"])
    else:
        where, message = event["node_instance"], str(event["message"])
        said = f"{where}: {message}" if where and not message.startswith(f"{where}:") else message
    return {
        "id": f"event/{event['id']}",
        "resourceURI": f"{SLIPSTREAM_SCHEMA}Event",
        "timestamp": event["at"],
        "created": event["at"],
        "updated": event["at"],
        "content": {"resource": {"href": f"run/{run_id}"}, "state": said},
        "type": kind_type,
        "severity": "high" if kind_type == "alarm" else "medium",
        "acl": ADMIN_ONLY,
    }
