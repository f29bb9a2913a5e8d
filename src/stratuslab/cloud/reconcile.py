"""Reconciliation: bring the store in line with what a backend has.

A record whose instance vanished becomes gone ("deleted outside StratusLab"); a pending record
older than ``PENDING_GRACE`` becomes gone ("never created"); a tagged instance the store lacks
is adopted (``recovered``); a record wrongly marked gone whose instance still exists is shown
again; states and addresses are refreshed. Nothing tagged is ever hidden. A record changed
after the listing was taken is left alone: the listing cannot speak for it (an instance made,
stopped or killed meanwhile would otherwise be judged by what it was before), and the next
listing will.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.engine import Engine

from stratuslab.cloud import events, records, usage
from stratuslab.cloud.base import Instance
from stratuslab.cloud.records import InstanceView
from stratuslab.cloud.types import InstanceState
from stratuslab.db.models import InstanceRecord, utcnow
from stratuslab.db.session import session_scope

PENDING_GRACE = timedelta(minutes=10)  # a record this young may still be being created


@dataclass(frozen=True)
class ReconcileReport:
    vanished: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    changes: list[tuple[InstanceView, str]] = field(default_factory=list)  # for the event sink


def apply_listing(
    engine: Engine, cloud: str, listing: Sequence[Instance], *, listed_at: datetime | None = None
) -> ReconcileReport:
    """Apply ``listing`` (every instance of ``cloud`` carrying an ``id`` tag, with addresses,
    asked of the backend at ``listed_at``) to the store, in one transaction. Post-condition:
    every live record of the cloud not changed since ``listed_at`` matches an instance of the
    listing or is gone; every instance of the listing has a record."""
    report = ReconcileReport()
    backend = {i.tags["id"]: i for i in listing if "id" in i.tags}
    with session_scope(engine) as session:
        rows = {
            row.id: row
            for row in session.scalars(
                select(InstanceRecord).where(
                    InstanceRecord.cloud == cloud,
                    or_(
                        InstanceRecord.state != InstanceState.GONE.value,
                        InstanceRecord.id.in_(backend),
                    ),
                )
            )
        }
        now = utcnow()  # once the transaction holds the store: what it writes happens now
        changed: list[tuple[InstanceRecord, str]] = []
        for row in list(rows.values()):
            if listed_at is not None and row.updated_at > listed_at:
                del rows[row.id]  # changed since the listing: it cannot speak for this one
                backend.pop(row.id, None)
        for row in rows.values():
            if row.id in backend or row.state == InstanceState.GONE.value:
                continue
            pending = row.state == InstanceState.PENDING.value
            if pending and now - row.created_at < PENDING_GRACE:
                continue  # another process may be creating it right now
            row.error = row.error or ("never created" if pending else "deleted outside StratusLab")
            row.state, row.ended_at, row.addresses = InstanceState.GONE.value, now, []
            report.vanished.append(row.id)
            changed.append((row, events.VANISHED))
        for instance_id, instance in backend.items():
            found = rows.get(instance_id)
            if found is None:
                row = records.adopted(cloud, instance)
                session.add(row)
                report.recovered.append(instance_id)
                changed.append((row, events.RECOVERED))
                continue
            what = events.CHANGED
            if found.state == InstanceState.GONE.value:
                found.ended_at = None
                found.error = f"recorded as gone but still exists ({found.error})"
                what = events.REAPPEARED
            if records.apply(found, instance):
                report.updated.append(instance_id)
                changed.append((found, what))
        session.flush()
        usage.follow(session, [row.id for row, _ in changed], at=now)
        report.changes.extend((records.view_of(row), what) for row, what in changed)
    return report
