"""Recipe output as node agents stream it, kept per run within bounds.

A node sends what its recipes print; a recipe in a loop could print for ever, so each node
instance keeps at most ``MAX_LINES_PER_NODE`` lines (the last one kept says the rest was
dropped), a batch holds at most ``MAX_BATCH`` lines and a line at most ``MAX_LINE`` characters
(longer ones are cut, marked with an ellipsis). Every secret value of the run known when a
line arrives is replaced by ``********`` before it is stored (``deploy/secrets.py``).

An agent also sends where each recipe starts and ends, as lines of the stream ``phase``
(``agent/protocol.py``): they are kept beside the output, within an allowance of their own
(``MAX_MARKS_PER_NODE`` beyond the output's bound, so that a noisy recipe cannot push them
out), shown by no :meth:`RunLogs.read`, and read whole by the JUnit report (:meth:`RunLogs.each`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from stratuslab.db.models import NodeInstanceRecord, RunLogRecord, RunRecord
from stratuslab.db.session import session_scope
from stratuslab.deploy import access
from stratuslab.deploy.agent.protocol import MAX_VALUE, PHASE_STREAM
from stratuslab.deploy.secrets import RunSecrets
from stratuslab.deploy.tx import logs_topic
from stratuslab.errors import Forbidden, Invalid, NotFound, TooLarge
from stratuslab.hub import Hub
from stratuslab.principal import Principal

MAX_BATCH = 1000  # lines in one request (the agent sends every half second)
MAX_LINE = 8192  # characters in one line
MAX_LINES_PER_NODE = 100_000  # lines kept per node instance and run
MAX_MARKS_PER_NODE = 1000  # recipe boundaries kept beyond that (two per recipe run)
MAX_READ = 5000  # lines answered by one read
_EPOCH_RANGE = (0.0, 253402300799.0)  # 1970 to the end of year 9999: what a datetime holds
_STREAMS = ("stdout", "stderr")
_ACCEPTED = (*_STREAMS, PHASE_STREAM)


class RunLogs:
    def __init__(self, engine: Engine, hub: Hub, *, secrets: RunSecrets) -> None:
        self.engine = engine
        self.hub = hub
        self.secrets = secrets

    def add(
        self,
        run_id: str,
        node_instance: str,
        lines: Sequence[Mapping[str, Any]],
        *,
        caller: Principal,
    ) -> int:
        """Keep ``lines`` from ``node_instance``; returns how many were kept. Only that node
        instance's agent sends them: nobody, not even the run's owner, forges a recipe's
        output."""
        if caller.is_node and (caller.run_id, caller.node_instance) != (run_id, node_instance):
            raise Forbidden(f"{caller} may not send the output of {node_instance}")
        if len(lines) > MAX_BATCH:
            raise TooLarge(f"a log batch is at most {MAX_BATCH} lines, not {len(lines)}")
        rows = [_row(run_id, node_instance, number, line) for number, line in enumerate(lines)]
        # Redacted, then cut: a cut through a secret would leave its start unmatched. What is
        # past the cut by more than a value's length is never kept, so it is not looked at.
        texts = self.secrets.redact_all(run_id, [row.text[: MAX_LINE + MAX_VALUE] for row in rows])
        for row, text in zip(rows, texts, strict=True):
            row.text = text if len(text) <= MAX_LINE else text[: MAX_LINE - 1] + "…"
        with session_scope(self.engine) as session:
            if not caller.is_node:
                access.checked(session.get(RunRecord, run_id), run_id, caller)
                access.nodes_only(caller, "send recipe output")
            node = session.get(NodeInstanceRecord, (run_id, node_instance), with_for_update=True)
            if node is None:
                raise NotFound(f"no node instance {node_instance!r} in run {run_id}")
            rows = _within_bounds(rows, node.log_lines)
            node.log_lines += len(rows)
            session.add_all(rows)
        if rows:
            self.hub.publish(logs_topic(run_id), {"node_instance": node_instance})
        return len(rows)

    def read(
        self,
        run_id: str,
        *,
        caller: Principal,
        node_instance: str | None = None,
        after: int = 0,
        limit: int = MAX_READ,
    ) -> list[dict[str, Any]]:
        with session_scope(self.engine) as session:
            access.checked(session.get(RunRecord, run_id), run_id, caller)
            query = select(RunLogRecord).where(
                RunLogRecord.run_id == run_id,
                RunLogRecord.id > after,
                RunLogRecord.stream.in_(_STREAMS),
            )
            if node_instance:
                query = query.where(RunLogRecord.node_instance == node_instance)
            rows = session.scalars(
                query.order_by(RunLogRecord.id).limit(min(max(limit, 1), MAX_READ))
            )
            return [
                {
                    "id": r.id,
                    "at": r.at.isoformat(),
                    "node_instance": r.node_instance,
                    "state": r.state,
                    "recipe": r.recipe,
                    "stream": r.stream,
                    "text": r.text,
                }
                for r in rows
            ]

    def each(self, run_id: str, *, caller: Principal) -> Iterator[dict[str, Any]]:
        """Every line kept for the run, the recipes' boundaries among them, in the order they
        arrived, read in pages (a run can hold millions): ``node_instance``, ``t`` (seconds
        since 1970), ``state``, ``recipe``, ``stream`` and ``text``. The caller's right to
        the run is checked here, before the first line is read."""
        with session_scope(self.engine) as session:
            access.checked(session.get(RunRecord, run_id), run_id, caller)
        return self._pages(run_id)

    def _pages(self, run_id: str) -> Iterator[dict[str, Any]]:
        after = 0
        while True:
            with session_scope(self.engine) as session:
                page = session.execute(
                    select(
                        RunLogRecord.id,
                        RunLogRecord.node_instance,
                        RunLogRecord.at,
                        RunLogRecord.state,
                        RunLogRecord.recipe,
                        RunLogRecord.stream,
                        RunLogRecord.text,
                    )
                    .where(RunLogRecord.run_id == run_id, RunLogRecord.id > after)
                    .order_by(RunLogRecord.id)
                    .limit(MAX_READ)
                ).all()
            for row in page:
                yield {
                    "node_instance": row.node_instance,
                    "t": row.at.timestamp(),
                    "state": row.state,
                    "recipe": row.recipe,
                    "stream": row.stream,
                    "text": row.text,
                }
            if len(page) < MAX_READ:
                return
            after = page[-1].id


def _within_bounds(rows: list[RunLogRecord], kept: int) -> list[RunLogRecord]:
    """The rows of a batch that fit beside the ``kept`` ones: output up to
    ``MAX_LINES_PER_NODE`` lines (the last one kept then says the rest was dropped), recipe
    boundaries up to ``MAX_MARKS_PER_NODE`` lines beyond."""
    room = max(MAX_LINES_PER_NODE - kept, 0)
    marks_room = max(MAX_LINES_PER_NODE + MAX_MARKS_PER_NODE - kept, 0)
    taken: list[RunLogRecord] = []
    last_output: RunLogRecord | None = None
    dropped = False
    for row in rows:
        if row.stream == PHASE_STREAM:
            if len(taken) < marks_room:
                taken.append(row)
        elif len(taken) < room:
            taken.append(row)
            last_output = row
        else:
            dropped = True
    if dropped and last_output is not None:
        last_output.text = f"[log truncated: at most {MAX_LINES_PER_NODE} lines are kept]"
    return taken


def _row(run_id: str, node_instance: str, number: int, line: Mapping[str, Any]) -> RunLogRecord:
    where = f"log line {number + 1}"
    t = line.get("t", 0.0)
    if not isinstance(t, int | float) or isinstance(t, bool) or not math.isfinite(t):
        raise Invalid(f"{where}: t must be a number of seconds since 1970")
    if t and not _EPOCH_RANGE[0] <= t <= _EPOCH_RANGE[1]:
        raise Invalid(f"{where}: t={t:g} is not a time between 1970 and 9999")
    stream = str(line.get("stream", "stdout"))
    if stream not in _ACCEPTED:
        raise Invalid(f"{where}: stream is stdout or stderr, not {stream[:16]!r}")
    text = str(line.get("text", "")).replace("\x00", "")  # cut to MAX_LINE by the caller
    return RunLogRecord(
        run_id=run_id,
        node_instance=node_instance,
        at=datetime.fromtimestamp(t, UTC) if t else datetime.now(UTC),
        state=str(line.get("state", ""))[:16].replace("\x00", ""),
        recipe=str(line.get("recipe", ""))[:32].replace("\x00", ""),
        stream=stream,
        text=text,
    )
