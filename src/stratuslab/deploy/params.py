"""The runtime parameter store: reads and writes with SlipStream's rules (see ``keys`` for the
names, ``propagation`` for where values go)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine import Engine

from stratuslab.db.models import NodeInstanceRecord, RunRecord, RuntimeParameterRecord, utcnow
from stratuslab.db.session import session_scope
from stratuslab.deploy.control import RunControl
from stratuslab.deploy.keys import COMPUTED, Key, check_value, parse_key
from stratuslab.deploy.states import FINAL, RunState
from stratuslab.deploy.tx import Tx, param_topic, transaction
from stratuslab.errors import Conflict, NotFound, NotYetSet, RunAborted
from stratuslab.hub import Hub


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
