"""Runtime parameter names, and the parameters a run (or a new node instance) starts with.

Names follow SlipStream and are qualified by the one table both the server and the node agent
use (:func:`stratuslab.deploy.agent.protocol.qualify`): ``web.2:hostname`` (a parameter of
node instance 2 of node ``web``), ``web:hostname`` (the same of instance 1), ``web:ids`` and
``web:multiplicity`` (of the node), ``ss:state`` (of the run). An input mapped to
``db:password`` receives, on every instance of its node, the value ``db.1:password`` is set
to; that is all propagation is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Literal

from stratuslab.deploy.agent.protocol import (
    COMPUTED,
    GLOBAL_SCOPE,
    MAX_VALUE,
    NODE_LEVEL,
    RECIPE_GLOBALS,
    SERVER_GLOBALS,
    SERVER_OWNED,
    STANDARD_PARAMETERS,
    qualify,
)
from stratuslab.deploy.plan import NodePlan, Plan
from stratuslab.deploy.secrets import of_plan
from stratuslab.errors import Invalid

MAX_KEY = 255  # characters in a full name, as the store keeps it
_KEY = re.compile(
    r"^(?P<scope>[A-Za-z][A-Za-z0-9_-]*)(?:\.(?P<index>[0-9]{1,9}))?:(?P<name>[A-Za-z0-9_.-]+)$"
)

Scope = Literal["global", "node", "instance"]
Known = Callable[[str], str | None]  # the value a run's parameter holds now, or None


@dataclass(frozen=True)
class Key:
    scope: Scope
    name: str
    node: str | None = None
    index: int | None = None

    @property
    def node_instance(self) -> str | None:
        return f"{self.node}.{self.index}" if self.scope == "instance" else None

    @property
    def computed(self) -> bool:
        """Answered from the run itself (its state, a node's completion), never stored."""
        return (self.scope == "global" and self.name == "state") or (
            self.scope == "instance" and self.name in COMPUTED
        )

    @property
    def server_owned(self) -> bool:
        """Stated by the server: no node or user writes it (ss:abort moves only by aborts)."""
        if self.scope == "global":
            return self.name in SERVER_GLOBALS
        if self.scope == "node":
            return True  # ids and multiplicity follow the node instances the run has
        return self.name in SERVER_OWNED

    @property
    def is_abort(self) -> bool:
        return self.name == "abort" and self.scope in ("global", "instance")

    def __str__(self) -> str:
        if self.scope == "global":
            return f"{GLOBAL_SCOPE}:{self.name}"
        if self.scope == "node":
            return f"{self.node}:{self.name}"
        return f"{self.node}.{self.index}:{self.name}"


def parse_key(text: str, *, asked_by: str | None = None) -> Key:
    """The name ``text`` stands for when ``asked_by`` (a node instance, or None for a user)
    says it: ``ss:x``, ``node:x``, ``node.i:x``, or from a node a bare ``x``."""
    full = qualify(text, asked_by)
    match = _KEY.match(full) if len(full) <= MAX_KEY else None
    if not match:
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise Invalid(
            f"{shown!r} is not a runtime parameter name",
            hint="write ss:name, node:name or node.N:name",
        )
    scope, index, name = match["scope"], match["index"], match["name"]
    if scope == GLOBAL_SCOPE:
        if index is not None:
            raise Invalid(f"{text!r}: run globals have no instance number")
        return Key("global", name)
    if name in NODE_LEVEL:
        return Key("node", name, node=scope)
    number = int(index or 1)
    if number < 1:
        raise Invalid(f"{text!r}: instance numbers start at 1")
    return Key("instance", name, node=scope, index=number)


def check_value(key: str, value: str) -> str:
    """``value`` if a runtime parameter may hold it: text of at most MAX_VALUE characters."""
    if len(value) > MAX_VALUE:
        raise Invalid(
            f"{key}: values are at most {MAX_VALUE} characters, this one has {len(value)}"
        )
    if "\x00" in value:
        raise Invalid(f"{key}: a value is text, and this one holds a NUL character")
    return value


@dataclass(frozen=True)
class Row:
    """One runtime parameter as the run (or a new node instance) starts with it."""

    key: str
    value: str | None
    kind: str  # standard, input, output, node, global
    description: str = ""
    secret: bool = False  # never shown unasked (deploy/secrets.py)


def instance_rows(
    plan: Plan,
    node: str,
    index: int,
    *,
    given: Mapping[str, str],
    known: Known,
    secrets: Collection[str] | None = None,
) -> list[Row]:
    """The parameters of one node instance: the standard ones, its inputs, its outputs.

    An input takes, first found: its deploy-time value (``given``), its mapping's literal, the
    value its mapped source holds now (``known``: nothing yet for a new run; what is set for an
    instance added to a running one), its default. ``secrets`` names what is secret, as
    ``secrets.of_plan`` does (its answer when None), and may add keys secret now (a source
    ``ss-random --secret`` set): an input mapped from one of those is secret too."""
    spec = plan.nodes[node]
    secret = of_plan(plan) if secrets is None else secrets

    def is_secret(name: str) -> bool:
        source = spec.mappings.get(name)
        return (
            f"{node}:{name}" in secret
            or f"{node}.{index}:{name}" in secret
            or (source is not None and source.key() in secret)
        )

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
        value = _input_value(spec, node, name, definition.default, given, known)
        rows.append(
            Row(prefix + name, value, "input", definition.description, secret=is_secret(name))
        )
    for name, definition in spec.outputs.items():
        rows.append(
            Row(prefix + name, None, "output", definition.description, secret=is_secret(name))
        )
    return rows


def initial_rows(plan: Plan, *, given: Mapping[str, str], tags: str) -> list[Row]:
    """Every parameter a new run has, with the values known at its start."""
    globals_ = {key: value for key, value in given.items() if key.startswith("ss:")}
    rows = [
        Row("ss:state", None, "global", "the run's state"),
        Row("ss:abort", None, "global", "why the run was aborted (the first reason)"),
        Row("ss:category", "Deployment", "global"),
        Row("ss:url.service", None, "global", "where the deployed service answers"),
        Row("ss:tags", tags, "global"),
    ]
    standard = {"state", "abort", "category", *RECIPE_GLOBALS}
    secrets = of_plan(plan)
    for name in sorted(_mapped_globals(plan) | {k.removeprefix("ss:") for k in globals_}):
        if name not in standard:
            secret = f"ss:{name}" in secrets
            rows.append(Row(f"ss:{name}", globals_.get(f"ss:{name}"), "global", secret=secret))
    for node, spec in plan.nodes.items():
        rows.append(Row(f"{node}:multiplicity", str(spec.multiplicity), "node"))
        rows.append(
            Row(f"{node}:ids", ",".join(str(i) for i in range(1, spec.multiplicity + 1)), "node")
        )
        for index in range(1, spec.multiplicity + 1):
            rows.extend(
                instance_rows(plan, node, index, given=given, known=globals_.get, secrets=secrets)
            )
    return rows


def _input_value(
    spec: NodePlan,
    node: str,
    name: str,
    default: str | None,
    given: Mapping[str, str],
    known: Known,
) -> str | None:
    if f"{node}:{name}" in given:
        return given[f"{node}:{name}"]
    source = spec.mappings.get(name)
    if source is None:
        return default
    if source.kind == "literal":
        return source.value
    key = source.key()
    return known(key) if key is not None else None  # else filled in when its source is set


def _mapped_globals(plan: Plan) -> set[str]:
    return {
        source.name
        for spec in plan.nodes.values()
        for source in spec.mappings.values()
        if source.kind == "global" and source.name
    }
