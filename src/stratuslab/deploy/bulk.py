"""The common case of a storm, in a few statements: completions and machines coming up that
leave a barrier still waiting.

When thousands of node instances complete a state together, almost every batch of them (see
``batches``) changes nothing but their own rows, the run's count of who is still waited for,
and the event log. Those batches are applied here with one statement each, without building
objects for what they touch. Anything else (the batch that ends a barrier, an abort, a value
that propagates) returns None before writing anything, and the run control applies it the
general way. The rules are the same: ``_waited_for`` in ``control`` and ``waited_for`` here
say the same thing, one on a record and one on a row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.engine import Connection

from stratuslab.db.models import (
    NodeInstanceRecord,
    RunEventRecord,
    RunRecord,
    RuntimeParameterRecord,
    utcnow,
)
from stratuslab.deploy import events
from stratuslab.deploy.events import RunEvent
from stratuslab.deploy.states import BARRIERS, RunState
from stratuslab.deploy.tx import Tx, param_topic, run_topic
from stratuslab.errors import Conflict, NotFound, StratusError
from stratuslab.principal import Principal

READY = "ready"  # node_instances.provisioning once its machine is recorded as running
CREATING = "creating"  # its machine is recorded and being made
# After an abort, who takes part in a barrier: those with a machine, or one on its way (its
# agent sends its report once it boots); not those that never got one (pending or failed).
HAS_MACHINE = (READY, CREATING)
Answers = list[StratusError | None]

_RUN = cast(Table, RunRecord.__table__)
_NODES = cast(Table, NodeInstanceRecord.__table__)
_PARAMS = cast(Table, RuntimeParameterRecord.__table__)
_EVENTS = cast(Table, RunEventRecord.__table__)


@dataclass(frozen=True)
class Completion:
    run_id: str
    node_instance: str
    state: str | None
    person: Principal | None = None  # a person completing for a node: the run must be theirs


@dataclass(frozen=True)
class Provisioned:
    run_id: str
    node_instance: str
    instance_id: str
    address: str


def waited_for(aborted: bool, state: str, node: Any) -> bool:
    """Whether a barrier in ``state`` waits for ``node`` (a row with removed, lost,
    provisioning, completed)."""
    if node.removed or node.lost:
        return False
    if aborted and node.provisioning not in HAS_MACHINE:
        return False
    return bool(node.completed != state or node.provisioning != READY)


def complete(tx: Tx, run_id: str, items: Sequence[Completion]) -> Answers | None:
    """Apply completions of one run, or None when the general way must (see the module)."""
    conn = tx.session.connection()
    run = _run(conn, run_id)
    if run is None or run.state not in BARRIERS:
        return None
    nodes = _nodes(conn, run_id, [item.node_instance for item in items])
    aborted = run.abort_reason is not None
    answers: Answers = []
    changed: list[str] = []
    counted = 0
    for item in items:
        node = nodes.get(item.node_instance)
        if item.state is not None and item.state != run.state:
            answers.append(
                Conflict(
                    f"{item.node_instance} completed {item.state}, but the run is in {run.state}"
                )
            )
        elif node is None:
            answers.append(NotFound(f"no node instance {item.node_instance!r} in run {run_id}"))
        elif node.removed:
            answers.append(Conflict(f"{item.node_instance} was removed from the run"))
        else:
            answers.append(None)
            if node.completed != run.state and item.node_instance not in changed:
                changed.append(item.node_instance)
                counted += waited_for(aborted, run.state, node) and node.provisioning == READY
    if run.waiting - counted <= 0:
        return None  # this batch ends the barrier: the run moves on, the general way
    if changed:
        conn.execute(_COMPLETE_NODES, {"b_run": run_id, "b_names": changed, "b_state": run.state})
        _count_down(conn, run_id, counted)
        _events(tx, conn, run_id, [events.completed(name, run.state) for name in changed])
    return answers


def provision(
    tx: Tx, run_id: str, items: Sequence[Provisioned], sources: Mapping[str, Any] | None
) -> Answers | None:
    """Record machines that came up, or None when the general way must: the run is aborted,
    a value they bring is a mapping's source (``sources``: the run's, None if not known yet),
    or the batch ends a barrier."""
    conn = tx.session.connection()
    run = _run(conn, run_id)
    if run is None or run.abort_reason is not None or sources is None:
        return None
    latest = {item.node_instance: item for item in items}  # the last word for each
    nodes = _nodes(conn, run_id, list(latest))
    if len(nodes) != len(latest):
        return None  # the general way says which does not exist
    values = {
        f"{name}:{param}": value
        for name, item in latest.items()
        for param, value in facts(item).items()
    }
    if any(key in sources for key in values):
        return None
    counted = sum(
        RunState(run.state) in BARRIERS
        and waited_for(False, run.state, node)
        and node.completed == run.state
        for node in nodes.values()
    )
    if RunState(run.state) in BARRIERS and run.waiting - counted <= 0:
        return None
    now = utcnow()
    conn.execute(
        _NODE_READY,
        [
            {"b_run": run_id, "b_name": name, "b_instance": item.instance_id}
            for name, item in latest.items()
        ],
    )
    conn.execute(
        _SET_VALUE,
        [
            {"b_run": run_id, "b_key": key, "b_value": value, "b_at": now}
            for key, value in values.items()
        ],
    )
    for key, value in values.items():
        tx.announce(param_topic(run_id, key), {"value": value})
    _count_down(conn, run_id, counted)
    _events(
        tx,
        conn,
        run_id,
        [events.provisioned(n, item.address, item.instance_id) for n, item in latest.items()],
    )
    return [None] * len(items)


@dataclass(frozen=True)
class Write:
    """A node's parameter write already judged by the rules, for the common case: an existing
    parameter of its own node instance (an output, its statecustom) or a run global."""

    key: str
    value: str
    ignore_abort: bool
    display_of: str | None  # the node instance whose statecustom this is (ss-display)
    person: Principal | None = None  # a person's write: the run must be theirs


def write(
    tx: Tx, run_id: str, items: Sequence[Write], sources: Mapping[str, Any] | None
) -> Answers | None:
    """Set values of one run, or None when the general way must: the run is over or aborted
    (for a write that does not ignore it), a key does not exist, is secret, is an input or is a
    mapping's
    source."""
    if sources is None or any(item.key in sources for item in items):
        return None
    conn = tx.session.connection()
    run = _run(conn, run_id)
    if run is None or RunState(run.state) not in BARRIERS | {RunState.INITIALIZING}:
        return None
    if run.abort_reason is not None and not all(item.ignore_abort for item in items):
        return None
    if any(item.person and not item.person.owns(run.owner) for item in items):
        return None  # someone else's run: the general way answers as if there were none
    keys = list(dict.fromkeys(item.key for item in items))
    kinds = [row.kind for row in conn.execute(_EXISTING, {"b_run": run_id, "b_keys": keys})]
    if len(kinds) != len(keys) or "input" in kinds:
        return None  # a key nobody declared, or an input (its mapping sets it): judged there
    now = utcnow()
    conn.execute(
        _SET_VALUE,
        [
            {
                "b_run": run_id,
                "b_key": item.key,
                "b_value": item.value or None,
                "b_at": now if item.value else None,
            }
            for item in items
        ],
    )
    for item in items:
        tx.announce(param_topic(run_id, item.key), {"value": item.value or None})
    shown = [events.displayed(item.display_of, item.value) for item in items if item.display_of]
    if shown:
        _events(tx, conn, run_id, shown)
    return [None] * len(items)


_CREATING = (
    update(_NODES)
    .where(_NODES.c.run_id == bindparam("b_run"), _NODES.c.name == bindparam("b_name"))
    .values(provisioning=CREATING, instance_id=bindparam("b_instance"))
)


def creating(tx: Tx, run_id: str, instances: Mapping[str, str]) -> None:
    """Node instances (-> instance id) whose instance is recorded and about to be created."""
    if instances:
        tx.session.connection().execute(
            _CREATING,
            [{"b_run": run_id, "b_name": n, "b_instance": i} for n, i in instances.items()],
        )


def facts(item: Provisioned) -> dict[str, str]:
    """The parameters the server states about a node instance whose machine is up."""
    return {
        "hostname": item.address,
        "instanceid": item.instance_id,
        "vmstate": "running",
        "url.ssh": f"ssh://root@{item.address}",
    }


# Built once: making a statement costs more than running it (SQLAlchemy caches the compiled
# form of a statement it has seen, but constructing it is paid on every call).
_SELECT_RUN = (
    select(_RUN.c.state, _RUN.c.abort_reason, _RUN.c.waiting, _RUN.c.owner)
    .where(_RUN.c.id == bindparam("b_run"))
    .with_for_update()
)
_SELECT_NODES = select(
    _NODES.c.name, _NODES.c.completed, _NODES.c.provisioning, _NODES.c.removed, _NODES.c.lost
).where(
    _NODES.c.run_id == bindparam("b_run"),
    _NODES.c.name.in_(bindparam("b_names", expanding=True)),
)
_COMPLETE_NODES = (
    update(_NODES)
    .where(
        _NODES.c.run_id == bindparam("b_run"),
        _NODES.c.name.in_(bindparam("b_names", expanding=True)),
    )
    .values(completed=bindparam("b_state"))
)
_COUNT_DOWN = (
    update(_RUN)
    .where(_RUN.c.id == bindparam("b_run"))
    .values(waiting=_RUN.c.waiting - bindparam("b_counted"))
)
_NODE_READY = (
    update(_NODES)
    .where(_NODES.c.run_id == bindparam("b_run"), _NODES.c.name == bindparam("b_name"))
    .values(provisioning=READY, instance_id=bindparam("b_instance"))
)
_SET_VALUE = (
    update(_PARAMS)
    .where(_PARAMS.c.run_id == bindparam("b_run"), _PARAMS.c.key == bindparam("b_key"))
    .values(value=bindparam("b_value"), set_at=bindparam("b_at"))
)
_SET_VALUES = (
    update(_PARAMS)
    .where(
        _PARAMS.c.run_id == bindparam("b_run"),
        _PARAMS.c.key.in_(bindparam("b_keys", expanding=True)),
    )
    .values(value=bindparam("b_value"), set_at=bindparam("b_at"))
)
# A secret key is not the common case: the general way remembers its value for redaction.
_EXISTING = select(_PARAMS.c.key, _PARAMS.c.kind).where(
    _PARAMS.c.run_id == bindparam("b_run"),
    _PARAMS.c.key.in_(bindparam("b_keys", expanding=True)),
    _PARAMS.c.secret.is_(False),
)
_INDEXES = select(_NODES.c.idx).where(
    _NODES.c.run_id == bindparam("b_run"), _NODES.c.node == bindparam("b_node")
)
_INSERT_EVENTS = insert(_EVENTS).returning(_EVENTS.c.id, sort_by_parameter_order=True)


_READ_RUN = select(_RUN.c.id, _RUN.c.owner, _RUN.c.state, _RUN.c.abort_reason).where(
    _RUN.c.id == bindparam("b_run")
)
_READ_VALUE = select(_PARAMS.c.value).where(
    _PARAMS.c.run_id == bindparam("b_run"), _PARAMS.c.key == bindparam("b_key")
)
_READ_COMPLETED = select(_NODES.c.completed).where(
    _NODES.c.run_id == bindparam("b_run"), _NODES.c.name == bindparam("b_name")
)
_MISSING = object()


def read_run(conn: Connection, run_id: str) -> Any:
    """The run's owner, state and abort reason, or None: what every read of a parameter needs."""
    return conn.execute(_READ_RUN, {"b_run": run_id}).one_or_none()


def read_value(conn: Connection, run_id: str, key: str) -> Any:
    """A parameter's value (None: not set), or ``MISSING`` when the run has no such key."""
    row = conn.execute(_READ_VALUE, {"b_run": run_id, "b_key": key}).one_or_none()
    return _MISSING if row is None else row.value


def read_completed(conn: Connection, run_id: str, node_instance: str) -> Any:
    row = conn.execute(_READ_COMPLETED, {"b_run": run_id, "b_name": node_instance})
    found = row.one_or_none()
    return _MISSING if found is None else found.completed


MISSING = _MISSING


def set_value(conn: Connection, run_id: str, key: str, value: str | None) -> bool:
    """Set one parameter; False when the run has no such parameter."""
    at = utcnow() if value is not None else None
    done = conn.execute(_SET_VALUE, {"b_run": run_id, "b_key": key, "b_value": value, "b_at": at})
    return bool(done.rowcount)


def set_values(conn: Connection, run_id: str, keys: list[str], value: str | None) -> None:
    """Set several parameters to one value (an output's mapped inputs)."""
    at = utcnow() if value is not None else None
    conn.execute(_SET_VALUES, {"b_run": run_id, "b_keys": keys, "b_value": value, "b_at": at})


def indexes_of(conn: Connection, run_id: str, node: str) -> list[int]:
    return list(conn.execute(_INDEXES, {"b_run": run_id, "b_node": node}).scalars())


def _run(conn: Connection, run_id: str) -> Any:
    return conn.execute(_SELECT_RUN, {"b_run": run_id}).one_or_none()


def _nodes(conn: Connection, run_id: str, names: list[str]) -> dict[str, Any]:
    rows = conn.execute(_SELECT_NODES, {"b_run": run_id, "b_names": names})
    return {row.name: row for row in rows}


def _count_down(conn: Connection, run_id: str, counted: int) -> None:
    if counted:
        conn.execute(_COUNT_DOWN, {"b_run": run_id, "b_counted": counted})


def _events(tx: Tx, conn: Connection, run_id: str, made: list[RunEvent]) -> None:
    """Write events in one statement and announce them, as ``Tx.event`` would."""
    now = utcnow()
    ids = conn.execute(
        _INSERT_EVENTS,
        [
            {
                "run_id": run_id,
                "at": now,
                "kind": event.kind.value,
                "node_instance": event.node_instance,
                "message": event.text,
                "fields": dict(event.fields),
            }
            for event in made
        ],
    ).scalars()
    at = now.isoformat()
    for event_id, event in zip(ids, made, strict=True):
        tx.announce(run_topic(run_id), events.to_dict(event_id, at, event))
