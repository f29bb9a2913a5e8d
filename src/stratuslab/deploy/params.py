"""Runtime parameters: every read, write, output-to-input propagation and blocking wait, and
the rules of who may write what.

There is one way to set a value, :meth:`ParameterValues.put` inside a run transaction: it
stores the value, announces it to whoever waits for it, and pushes it into every input mapped
to it. The server's own facts (hostnames, ids, abort flags) go through it; nodes and users go
through :meth:`Parameters.write`, which applies the rules first:

- a node writes only what is its own: its node instance's declared outputs, its
  ``statecustom`` (ss-display), ``url.service`` and abort flag, and the run's globals; any key
  of another node instance or node, and its own inputs (their mapping sets them), are refused
  (403, naming the key);
- what the server states (``state``, ``complete``, ``hostname``, ``instanceid``, ``url.ssh``,
  ``vmstate``, ``nodename``, ``id``, ``cloudservice``, ``image.id``, ``<node>:ids``,
  ``<node>:multiplicity``, ``ss:state``, ``ss:category``) is written by the server only
  (409, as SlipStream answered); ``ss:abort`` and ``<node>.<i>:abort`` change only by
  aborting the run, and an abort a node raises names that node; clearing a flag nobody raised
  does nothing, and ``ss:abort`` once raised stays so (409: an abort is final);
- a node setting a parameter nobody declared (an instance key, or an ``ss:`` global beyond
  those every run has) is a broken recipe: the run aborts, naming it;
- once the run is final nothing changes; once it is aborted, writes fail fast (409) unless
  the caller ignores the abort.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Protocol

import anyio.to_thread
from sqlalchemy import select
from sqlalchemy.engine import Engine

from stratuslab.db.models import RunRecord, RuntimeParameterRecord
from stratuslab.db.session import reading, session_scope
from stratuslab.deploy import access, bulk, events
from stratuslab.deploy.agent.protocol import MAX_WAIT, STANDARD_PARAMETERS
from stratuslab.deploy.batches import GroupCommit
from stratuslab.deploy.keys import Key, check_value, parse_key
from stratuslab.deploy.plan import Plan
from stratuslab.deploy.secrets import RunSecrets, secret_topic, shown
from stratuslab.deploy.states import FINAL, RunState
from stratuslab.deploy.tx import Tx, abort_topic, param_topic, transaction
from stratuslab.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    NotYetSet,
    RunAborted,
    StratusError,
)
from stratuslab.hub import Hub
from stratuslab.principal import Principal

_PLANS_KEPT = 256  # runs whose propagation table stays in memory (rebuilt from the plan)


class Aborts(Protocol):
    """What aborts a run (the run control): a write of an abort flag goes there."""

    def abort_in(
        self, tx: Tx, run: RunRecord, reason: str, *, node_instance: str | None = None
    ) -> bool: ...


class ParameterValues:
    """The one way to set a runtime parameter, inside a run transaction."""

    def __init__(self, secrets: RunSecrets) -> None:
        self._targets: OrderedDict[str, dict[str, list[tuple[str, str]]]] = OrderedDict()
        self._lock = threading.Lock()
        self.secrets = secrets

    def put(
        self, tx: Tx, run: RunRecord, key: str, value: str | None, *, secret: bool = False
    ) -> bool:
        """Set ``key`` (None unsets it) and every input mapped to it; ``secret`` makes it
        secret first. False when the run has no such parameter (nothing is set then). The
        inputs a secret value is copied into are secret too."""
        if tx.session.new or tx.session.dirty:
            tx.session.flush()  # the statements below go past the session's own objects
        conn = tx.session.connection()
        if not bulk.set_value(conn, run.id, key, value):
            return False
        hidden = self.secrets.stored(conn, run.id, key, value, mark=secret)
        # A secret's value is not announced: notifications cross to other processes.
        tx.announce(param_topic(run.id, key), {} if hidden else {"value": value})
        if hidden and value:
            tx.announce(secret_topic(run.id), {})  # other processes learn it (secrets.py)
        for node, name in self.targets(run).get(key, ()):
            keys = [f"{node}.{index}:{name}" for index in bulk.indexes_of(conn, run.id, node)]
            bulk.set_values(conn, run.id, keys, value)
            if hidden:
                self.secrets.mark(conn, run.id, keys)
            for target in keys:
                tx.announce(param_topic(run.id, target), {"value": value})
        return True

    def sources(self, run_id: str) -> Mapping[str, list[tuple[str, str]]] | None:
        """The run's propagation table if it is known here already (see :meth:`targets`)."""
        with self._lock:
            return self._targets.get(run_id)

    def targets(self, run: RunRecord) -> dict[str, list[tuple[str, str]]]:
        """Source key -> [(node, input)]: the application's mappings, turned around."""
        with self._lock:
            table = self._targets.get(run.id)
            if table is not None:
                self._targets.move_to_end(run.id)
                return table
        table = {}
        for node, spec in Plan.from_dict(run.plan).nodes.items():
            for name, source in spec.mappings.items():
                key = source.key()
                if key is not None:
                    table.setdefault(key, []).append((node, name))
        with self._lock:
            self._targets[run.id] = table
            while len(self._targets) > _PLANS_KEPT:
                self._targets.popitem(last=False)
        return table


@dataclass(frozen=True)
class _Write:
    run_id: str
    key: Key
    value: str
    caller: Principal
    ignore_abort: bool
    secret: bool = False


class Parameters:
    """A run's runtime parameters as nodes and users read, write and wait for them."""

    def __init__(self, engine: Engine, hub: Hub, *, values: ParameterValues, aborts: Aborts):
        self.engine = engine
        self.hub = hub
        self.values = values
        self.aborts = aborts
        self._writes: GroupCommit[_Write, None] = GroupCommit(self._write_many)

    def key(self, text: str, caller: Principal) -> Key:
        """``text`` qualified as ``caller`` means it (a node's bare name is its own)."""
        return parse_key(text, asked_by=caller.node_instance)

    def read(self, run_id: str, key: str, *, caller: Principal, ignore_abort: bool = False) -> str:
        """The value of ``key``. Raises ``NotFound`` (no such parameter), ``NotYetSet`` (no value
        yet) or ``RunAborted`` (the abort flag is raised, unless ``ignore_abort``)."""
        parsed = self.key(key, caller)
        with reading(self.engine) as conn:
            run = access.checked(bulk.read_run(conn, run_id), run_id, caller)
            if run.abort_reason is not None and not ignore_abort:
                raise RunAborted(run.abort_reason)
            if parsed.scope == "global" and parsed.name == "state":
                return str(run.state)
            if parsed.computed:  # a node instance's state or complete
                completed = bulk.read_completed(conn, run_id, parsed.node_instance or "")
                if completed is bulk.MISSING:
                    raise NotFound(f"no parameter {str(parsed)!r} in this run")
                if parsed.name == "state":
                    return str(run.state)
                return "true" if completed == run.state else "false"
            value = bulk.read_value(conn, run_id, str(parsed))
        if value is bulk.MISSING:
            raise NotFound(f"no parameter {str(parsed)!r} in this run")
        if value is None:
            raise NotYetSet(f"{parsed} is not set yet")
        return str(value)

    async def wait(
        self,
        run_id: str,
        key: str,
        *,
        caller: Principal,
        wait: float,
        differs: str | None = None,
        ignore_abort: bool = False,
    ) -> str:
        """The value of ``key``, waiting up to ``wait`` seconds (at most MAX_WAIT) for it to be
        set, or to differ from ``differs``: answered the moment it is. Raises ``NotYetSet``
        when it is still not so, and whatever :meth:`read` raises."""
        parsed = self.key(key, caller)
        topics = [param_topic(run_id, str(parsed)), abort_topic(run_id)]
        if parsed.computed:
            topics.append(param_topic(run_id, "ss:state"))  # both follow the run's state
        deadline = anyio.current_time() + min(max(wait, 0.0), MAX_WAIT)
        while True:
            seq = self.hub.seq  # taken before reading, so that no change slips between the two
            try:
                value = await anyio.to_thread.run_sync(
                    lambda: self.read(run_id, key, caller=caller, ignore_abort=ignore_abort)
                )
                if differs is None or value != differs:
                    return value
            except NotYetSet:
                pass
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                if differs is not None:
                    raise NotYetSet(f"{parsed} is still {differs!r}")
                raise NotYetSet(f"{parsed} is not set yet")
            await self.hub.wait(seq, topics=topics, timeout=remaining)

    def write(
        self,
        run_id: str,
        key: str,
        value: str,
        *,
        caller: Principal,
        ignore_abort: bool = False,
        secret: bool = False,
    ) -> None:
        """Set ``key`` as ``caller`` (an empty value unsets it), by the rules of the module
        docstring; ``secret`` makes it secret for good (``deploy/secrets.py``). Writes
        arriving together are applied together (see ``batches``)."""
        answer = self.writing(
            run_id, key, value, caller=caller, ignore_abort=ignore_abort, secret=secret
        ).result()
        if answer is not None:
            raise answer

    def writing(
        self,
        run_id: str,
        key: str,
        value: str,
        *,
        caller: Principal,
        ignore_abort: bool = False,
        secret: bool = False,
    ) -> Future[None]:
        """:meth:`write`, for a coroutine: the future is done once it is (or holds why it was
        refused)."""
        parsed = self.key(key, caller)
        check_value(str(parsed), value)
        if caller.is_node:
            if caller.run_id != run_id:
                raise access.no_run(run_id)
            _own(parsed, caller)
        if secret and parsed.scope == "instance" and parsed.name in STANDARD_PARAMETERS:
            raise Invalid(
                f"{parsed}: only a declared parameter (an output, an input, ss:name) is secret",
                hint=f"{parsed.name} is shown to whoever looks at the run",
            )
        return self._writes.submit(_Write(run_id, parsed, value, caller, ignore_abort, secret))

    def _write_many(self, items: Sequence[_Write]) -> list[StratusError | None]:
        items = [self._redacted(item) for item in items]
        answers: list[StratusError | None] = [None] * len(items)
        by_run: dict[str, list[int]] = {}
        for index, item in enumerate(items):
            by_run.setdefault(item.run_id, []).append(index)
        with transaction(self.engine, self.hub) as tx:
            for run_id, indexes in by_run.items():
                common = [_common(items[i]) for i in indexes]
                if all(common):
                    fast = bulk.write(
                        tx, run_id, [c for c in common if c], self.values.sources(run_id)
                    )
                    if fast is not None:
                        continue
                try:
                    run = _run(tx.run(run_id), run_id, items[indexes[0]].caller)
                except NotFound as exc:
                    for index in indexes:
                        answers[index] = exc
                    continue
                for index in indexes:
                    try:
                        answers[index] = self._write_in(tx, run, items[index])
                    except StratusError as exc:  # refused before anything was changed
                        answers[index] = exc
        return answers

    def _write_in(self, tx: Tx, run: RunRecord, item: _Write) -> StratusError | None:
        """Apply one write; an error it returns (rather than raises) was committed with what
        it set in motion (the abort of a run whose node wrote what nobody declared)."""
        key, value, caller = item.key, item.value, item.caller
        if RunState(run.state) in FINAL:
            raise Conflict(f"the run is {run.state}: its parameters can no longer change")
        if key.is_abort:
            self._abort(tx, run, key, value, caller)
            return None
        if key.server_owned:
            raise Conflict(f"{key} belongs to the server: it is not set by {caller}")
        if run.abort_reason is not None and not item.ignore_abort:
            raise RunAborted(run.abort_reason)
        if caller.is_node and key.scope == "instance" and _kind(tx, run.id, key) == "input":
            raise Forbidden(
                f"{caller} may not set {key}: an input takes its value from its mapping",
                hint="set an output of the node instead, or the input at deploy time",
            )
        if self.values.put(tx, run, str(key), value or None, secret=item.secret):
            if key.name == "statecustom" and key.node_instance:  # ss-display: shown live
                tx.event(run.id, events.displayed(key.node_instance, value))
            return None
        if not caller.is_node:
            raise NotFound(f"no parameter {str(key)!r} in this run")
        # A node setting what nobody declared is a broken recipe: the run aborts (committed
        # before the node is told), naming it.
        refused = f"{caller}: ss-set of {str(key)!r}, a parameter no module declares"
        self.aborts.abort_in(tx, run, refused, node_instance=caller.node_instance)
        hint = (
            "declare it as an input of a node's mapping (ss:name) or set it at deploy time"
            if key.scope == "global"
            else "declare it among the component's outputs"
        )
        return NotFound(refused, hint=hint)

    def all(
        self, run_id: str, *, caller: Principal, show_secrets: bool = False
    ) -> dict[str, str | None]:
        """Every parameter of the run with its value (None: not set), by name; a secret one
        as ``********`` unless ``show_secrets``, which only the run's owner or an
        administrator may ask (a node reads the one value it needs by its name)."""
        if show_secrets and caller.is_node:
            raise Forbidden(f"{caller} may not list secrets: ss-get the one value it needs")
        with session_scope(self.engine) as session:
            run = access.checked(session.get(RunRecord, run_id), run_id, caller)
            rows = session.execute(
                select(
                    RuntimeParameterRecord.key,
                    RuntimeParameterRecord.value,
                    RuntimeParameterRecord.secret,
                )
                .where(RuntimeParameterRecord.run_id == run_id)
                .order_by(RuntimeParameterRecord.key)
            ).all()
            values: dict[str, str | None] = {
                key: shown(value, secret, show_secrets=show_secrets) for key, value, secret in rows
            }
            if not show_secrets:
                values = self.values.secrets.redact_values(run_id, values)
            values["ss:state"] = run.state
            return values

    def known(self, tx: Tx, run_id: str) -> Mapping[str, str]:
        """What the run's parameters hold now (those set), for new node instances' inputs."""
        rows = tx.session.execute(
            select(RuntimeParameterRecord.key, RuntimeParameterRecord.value).where(
                RuntimeParameterRecord.run_id == run_id,
                RuntimeParameterRecord.value.is_not(None),
            )
        ).all()
        return {key: value for key, value in rows if value is not None}

    # -- helpers --------------------------------------------------------------------------

    def _redacted(self, item: _Write) -> _Write:
        """ss-display text is shown to people: the run's secret values are masked in it."""
        if item.key.name != "statecustom" or not item.value:
            return item
        return replace(item, value=self.values.secrets.redact(item.run_id, item.value))

    def _abort(self, tx: Tx, run: RunRecord, key: Key, value: str, caller: Principal) -> None:
        """A write of ``ss:abort`` or ``<node>.<i>:abort``: raising (or clearing) a flag. A
        node reaches only its own flag (``_own``), so the abort it raises names it."""
        own = caller.node_instance
        if not value:  # ss-abort --cancel: the node's own flag only; a run once aborted stays so
            if key.scope == "instance" and caller.is_node:
                self.values.put(tx, run, str(key), None)
                return
            if run.abort_reason is None:
                return  # nothing raised, nothing to clear (SlipStream's cancel clears ss:abort)
            raise Conflict(
                f"{key} stays raised: an abort is final ({run.abort_reason[:200]})",
                hint="a node clears only its own flag (ss-abort --cancel)",
            )
        value = self.values.secrets.redact(run.id, value)  # a reason is shown to everyone
        where = key.node_instance or own
        reason = value if where is None or value.startswith(f"{where}:") else f"{where}: {value}"
        self.aborts.abort_in(tx, run, reason, node_instance=where)


def _own(key: Key, caller: Principal) -> None:
    """Refuse a node's write of a key of another node instance (or of another node's
    ``<node>:ids``): a node sets only its own parameters and the run's globals."""
    own = caller.node_instance or ""
    if key.scope == "global":
        return
    if key.scope == "instance" and key.node_instance == own:
        return
    if key.scope == "node" and key.node == own.rpartition(".")[0]:
        return  # its node's ids and multiplicity: the server's (409, as SlipStream answers)
    raise Forbidden(
        f"{caller} may not set {key}: a node sets only its own parameters and the run's",
        hint=f"{own} may set its outputs, statecustom, url.service and abort, and ss: globals",
    )


def _kind(tx: Tx, run_id: str, key: Key) -> str | None:
    """What the parameter is (input, output, standard, ...), None if the run has no such key."""
    return tx.session.scalar(
        select(RuntimeParameterRecord.kind).where(
            RuntimeParameterRecord.run_id == run_id, RuntimeParameterRecord.key == str(key)
        )
    )


def _common(item: _Write) -> bulk.Write | None:
    """The write as the common case (an existing key, no abort, nothing the server owns),
    or None when only the general way can judge it."""
    key = item.key
    if key.is_abort or key.server_owned or key.computed or item.secret:
        return None
    display = key.node_instance if key.name == "statecustom" else None
    person = None if item.caller.is_node else item.caller  # checked against the run's owner
    return bulk.Write(str(key), item.value, item.ignore_abort, display, person)


def _run(run: RunRecord | None, run_id: str, caller: Principal) -> RunRecord:
    """The run, if ``caller`` may reach it (``deploy/access.py``)."""
    return access.checked(run, run_id, caller)
