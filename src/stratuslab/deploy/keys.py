"""Runtime parameter names, and the parameters a run (or a new node instance) starts with.

Names follow SlipStream: ``web.2:hostname`` (a parameter of node instance 2 of node ``web``),
``web:hostname`` (the same of instance 1), ``web:ids`` and ``web:multiplicity`` (of the node),
``ss:state`` (of the run). An input mapped to ``db:password`` receives, on every instance of
its node, the value ``db.1:password`` is set to; that is all propagation is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from stratuslab.deploy.model import STANDARD_PARAMETERS
from stratuslab.deploy.plan import Plan
from stratuslab.errors import Invalid

MAX_VALUE = 4096
NODE_LEVEL = frozenset({"ids", "multiplicity"})
COMPUTED = frozenset({"state", "complete"})  # answered from the run itself, never stored
GLOBAL_STANDARD = ("state", "abort", "url.service", "tags", "category")
_KEY = re.compile(
    r"^(?P<scope>[A-Za-z][A-Za-z0-9_-]*)(?:\.(?P<index>[0-9]+))?:(?P<name>[A-Za-z0-9_.-]+)$"
)

Scope = Literal["global", "node", "instance"]


@dataclass(frozen=True)
class Key:
    scope: Scope
    name: str
    node: str | None = None
    index: int | None = None

    @property
    def node_instance(self) -> str | None:
        return f"{self.node}.{self.index}" if self.scope == "instance" else None

    def __str__(self) -> str:
        if self.scope == "global":
            return f"ss:{self.name}"
        if self.scope == "node":
            return f"{self.node}:{self.name}"
        return f"{self.node}.{self.index}:{self.name}"


def parse_key(text: str) -> Key:
    """``ss:x``; ``node:x`` (instance 1, or the node's ``ids``, ``multiplicity``); ``node.i:x``."""
    match = _KEY.match(text)
    if not match:
        raise Invalid(
            f"{text!r} is not a runtime parameter name",
            hint="write ss:name, node:name or node.N:name",
        )
    scope, index, name = match["scope"], match["index"], match["name"]
    if scope == "ss":
        if index is not None:
            raise Invalid(f"{text!r}: run globals have no instance number")
        return Key("global", name)
    if index is None and name in NODE_LEVEL:
        return Key("node", name, node=scope)
    number = int(index) if index is not None else 1
    if number < 1:
        raise Invalid(f"{text!r}: instance numbers start at 1")
    return Key("instance", name, node=scope, index=number)


def check_value(key: str, value: str) -> str:
    if len(value) > MAX_VALUE:
        raise Invalid(
            f"{key}: values are at most {MAX_VALUE} characters, this one has {len(value)}"
        )
    return value


@dataclass(frozen=True)
class Row:
    """One runtime parameter as the run starts with it."""

    key: str
    value: str | None
    kind: str  # standard, input, output, node, global
    description: str = ""


def instance_rows(
    plan: Plan, node: str, index: int, given: Mapping[str, str], globals_: Mapping[str, str]
) -> list[Row]:
    """The parameters of one node instance: the standard ones, its inputs, its outputs."""
    spec = plan.nodes[node]
    prefix = f"{node}.{index}:"
    fixed = {
        "nodename": node,
        "id": str(index),
        "cloudservice": spec.cloud,
        "image.id": spec.image,
        "vmstate": "pending",
    }
    rows = [
        Row(prefix + name, fixed.get(name), "standard")
        for name in STANDARD_PARAMETERS
        if name not in COMPUTED
    ]
    for name, definition in spec.inputs.items():
        rows.append(
            Row(
                prefix + name,
                _input_value(node, name, definition.default, plan, given, globals_),
                "input",
                definition.description,
            )
        )
    for name, definition in spec.outputs.items():
        rows.append(Row(prefix + name, None, "output", definition.description))
    return rows


def initial_rows(plan: Plan, *, given: Mapping[str, str], tags: str) -> list[Row]:
    """Every parameter a new run has, with the values known at its start."""
    globals_ = {
        key.removeprefix("ss:"): value for key, value in given.items() if key.startswith("ss:")
    }
    rows = [
        Row("ss:state", None, "global", "the run's state"),
        Row("ss:abort", None, "global", "why the run was aborted (the first reason)"),
        Row("ss:url.service", None, "global", "where the deployed service answers"),
        Row("ss:tags", tags, "global"),
        Row("ss:category", "Deployment", "global"),
    ]
    for name in _mapped_globals(plan) | set(globals_):
        if name not in GLOBAL_STANDARD:
            rows.append(Row(f"ss:{name}", globals_.get(name), "global"))
    for node, spec in plan.nodes.items():
        rows.append(Row(f"{node}:multiplicity", str(spec.multiplicity), "node"))
        rows.append(
            Row(f"{node}:ids", ",".join(str(i) for i in range(1, spec.multiplicity + 1)), "node")
        )
        for index in range(1, spec.multiplicity + 1):
            rows.extend(instance_rows(plan, node, index, given, globals_))
    return rows


def _input_value(
    node: str,
    name: str,
    default: str | None,
    plan: Plan,
    given: Mapping[str, str],
    globals_: Mapping[str, str],
) -> str | None:
    if f"{node}:{name}" in given:
        return given[f"{node}:{name}"]
    source = plan.nodes[node].mappings.get(name)
    if source is not None:
        if source.kind == "literal":
            return source.value
        if source.kind == "global" and source.name in globals_:
            return globals_[source.name or ""]
        return None  # filled in when its source is set
    return default


def _mapped_globals(plan: Plan) -> set[str]:
    return {
        source.name
        for spec in plan.nodes.values()
        for source in spec.mappings.values()
        if source.kind == "global" and source.name
    }
