"""Transactions that speak after they commit.

Whatever a run transaction wants to announce (a parameter set, a state change, an event) is
published to the hub only once the transaction has committed, so that a waiter woken by it
reads committed data; work to start afterwards (a teardown) is started then too. A transaction
that fails announces nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from stratuslab.db.models import RunEventRecord, RunRecord, utcnow
from stratuslab.db.session import session_scope
from stratuslab.deploy import access
from stratuslab.deploy.events import RunEvent, to_dict
from stratuslab.hub import Hub
from stratuslab.principal import SERVER, Principal


def run_topic(run_id: str) -> str:
    """Everything that happens to a run: events, state changes."""
    return f"run:{run_id}"


def param_topic(run_id: str, key: str) -> str:
    return f"param:{run_id}:{key}"


def abort_topic(run_id: str) -> str:
    return f"abort:{run_id}"


def logs_topic(run_id: str) -> str:
    return f"logs:{run_id}"


@dataclass
class Tx:
    session: Session
    announcements: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    afterwards: list[Callable[[], None]] = field(default_factory=list)
    events: list[tuple[RunEventRecord, RunEvent]] = field(default_factory=list)

    def announce(self, topic: str, payload: dict[str, Any]) -> None:
        self.announcements.append((topic, payload))

    def later(self, work: Callable[[], None]) -> None:
        self.afterwards.append(work)

    def event(self, run_id: str, event: RunEvent) -> None:
        """Record an event in the run's log; it is announced to whoever watches the run once
        the transaction commits. Events are written together at the end of the transaction
        (one statement for many, as a barrier's completions make them)."""
        row = RunEventRecord(
            run_id=run_id,
            at=utcnow(),
            kind=event.kind.value,
            node_instance=event.node_instance,
            message=event.text,
            fields=dict(event.fields),
        )
        self.session.add(row)
        self.events.append((row, event))

    def write_events(self) -> None:
        """Write the events recorded so far, and queue their announcements (with their ids)."""
        if not self.events:
            return
        self.session.flush()
        for row, event in self.events:
            self.announce(run_topic(row.run_id), to_dict(row.id, row.at.isoformat(), event))
        self.events.clear()

    def run(self, run_id: str, *, lock: bool = True, caller: Principal = SERVER) -> RunRecord:
        """The run, locked for this transaction (a row lock on PostgreSQL; SQLite transactions
        are serialized already), if ``caller`` may reach it (``deploy/access.py``)."""
        return access.checked(
            self.session.get(RunRecord, run_id, with_for_update=lock), run_id, caller
        )


@contextmanager
def transaction(engine: Engine, hub: Hub) -> Iterator[Tx]:
    with session_scope(engine) as session:
        tx = Tx(session)
        yield tx
        tx.write_events()
        # Other processes hear it exactly when it commits (PostgreSQL's NOTIFY in the
        # transaction); this one's waiters once it has.
        sent = hub.send_within(session, tx.announcements)
    hub.publish_many(tx.announcements, sent=sent)
    for work in tx.afterwards:
        work()
