"""Runtime parameters: their names, the set a run starts with, and where values propagate.

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

from sqlalchemy import select
from sqlalchemy.engine import Engine

from stratuslab.db.models import NodeInstanceRecord, RunRecord, RuntimeParameterRecord, utcnow
from stratuslab.db.session import session_scope
from stratuslab.deploy.control import RunControl
from stratuslab.deploy.model import STANDARD_PARAMETERS
from stratuslab.deploy.plan import Plan
from stratuslab.deploy.states import FINAL, RunState
from stratuslab.deploy.tx import Tx, param_topic, transaction
from stratuslab.errors import Conflict, Invalid, NotFound, NotYetSet, RunAborted
from stratuslab.hub import Hub

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


class ParameterStore:
    """Reads and writes a run's runtime parameters, with SlipStream's rules."""

    def __init__(self, engine: Engine, hub: Hub, control: RunControl) -> None:
        self.engine = engine
        self.hub = hub
        self.control = control

    def read(self, run_id: str, key: str, *, ignore_abort: bool = False) -> str:
        """The value of ``key``. Raises ``NotFound`` (no such parameter), ``NotYetSet`` (no value
        yet) or ``RunAborted`` (the abort flag is raised, unless ``ignore_abort``)."""
        parsed = parse_key(key)
        with session_scope(self.engine) as session:
            run = session.get(RunRecord, run_id)
            if run is None:
                raise NotFound(f"no run {run_id!r}")
            if run.abort_reason is not None and not ignore_abort:
                raise RunAborted(run.abort_reason)
            if str(parsed) == "ss:state":
                return run.state
            if parsed.scope == "instance" and parsed.name in COMPUTED:
                node = session.get(NodeInstanceRecord, (run_id, parsed.node_instance))
                if node is None:
                    raise NotFound(f"no parameter {str(parsed)!r} in this run")
                if parsed.name == "state":
                    return run.state
                return "true" if node.completed == run.state else "false"
            row = session.get(RuntimeParameterRecord, (run_id, str(parsed)))
            if row is None:
                raise NotFound(f"no parameter {str(parsed)!r} in this run")
            if row.value is None:
                raise NotYetSet(f"{parsed} is not set yet")
            return row.value

    def write(
        self,
        run_id: str,
        key: str,
        value: str,
        *,
        node_instance: str | None = None,
        ignore_abort: bool = False,
    ) -> None:
        """Set ``key``; an empty value unsets it. ``node_instance`` is the caller when a node
        sets it: a node setting a parameter nobody declared aborts the run, naming it."""
        parsed = parse_key(key)
        check_value(str(parsed), value)
        refused: str | None = None
        with transaction(self.engine, self.hub) as tx:
            run = tx.run(run_id)
            if RunState(run.state) in FINAL:
                raise Conflict(f"the run is {run.state}: its parameters can no longer change")
            if str(parsed) == "ss:state" or (
                parsed.scope == "instance" and parsed.name in COMPUTED
            ):
                raise Conflict(f"{parsed} belongs to the server")
            if str(parsed) == "ss:abort" or (parsed.scope == "instance" and parsed.name == "abort"):
                self._abort(tx, run, parsed, value, node_instance)
                return
            if run.abort_reason is not None and not ignore_abort:
                raise RunAborted(run.abort_reason)
            row = tx.session.get(RuntimeParameterRecord, (run_id, str(parsed)))
            if row is None and parsed.scope == "global":
                row = RuntimeParameterRecord(
                    run_id=run_id, key=str(parsed), kind="global", description=""
                )
                tx.session.add(row)
                tx.session.flush()
            if row is None:
                if node_instance is None:
                    raise NotFound(f"no parameter {str(parsed)!r} in this run")
                # A node setting what nobody declared is a broken recipe: the run aborts, and
                # the abort is committed before the node is told.
                refused = (
                    f"{node_instance}: ss-set of {str(parsed)!r}, a parameter no module declares"
                )
                self.control.abort_in(tx, run, refused, node_instance=node_instance)
            else:
                self.control.set_in(tx, run, str(parsed), value or None)
                if parsed.name == "statecustom" and parsed.node_instance:  # ss-display: shown live
                    tx.event(run_id, "display", value, node_instance=parsed.node_instance)
        if refused is not None:
            raise NotFound(refused, hint="declare it among the component's outputs")

    def all(self, run_id: str) -> dict[str, str | None]:
        with session_scope(self.engine) as session:
            rows = session.execute(
                select(RuntimeParameterRecord.key, RuntimeParameterRecord.value)
                .where(RuntimeParameterRecord.run_id == run_id)
                .order_by(RuntimeParameterRecord.key)
            ).all()
            return {key: value for key, value in rows}

    # -- helpers --------------------------------------------------------------------------

    def _abort(
        self, tx: Tx, run: RunRecord, key: Key, value: str, node_instance: str | None
    ) -> None:
        where = key.node_instance or node_instance
        if not value:  # ss-abort --cancel: the node's own flag only; a run once aborted stays so
            if key.scope == "instance":
                self._store_key(tx, run.id, str(key), None)
            return
        reason = value if where is None or value.startswith(f"{where}:") else f"{where}: {value}"
        self.control.abort_in(tx, run, reason, node_instance=where)

    def _store_key(self, tx: Tx, run_id: str, key: str, value: str | None) -> None:
        row = tx.session.get(RuntimeParameterRecord, (run_id, key))
        if row is not None:
            row.value, row.set_at = value, utcnow()
            tx.announce(param_topic(run_id, key), {"value": value})
