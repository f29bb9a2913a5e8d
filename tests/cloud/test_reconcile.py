"""Reconciliation with a listing older than the records: a user's `instance list` runs while
the engine creates and kills instances, so the listing it applies may predate a change. What
changed after the listing was taken is left for the next listing, rather than judged by what
it was before (a machine just made reported deleted, one just killed brought back and billed)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine import Engine

from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.cloud.instances import InstanceService, RunRequest
from stratuslab.cloud.reconcile import apply_listing
from stratuslab.db.models import UsageRecord, utcnow
from stratuslab.db.session import session_scope


def intervals(engine: Engine) -> list[tuple[str, bool]]:
    with session_scope(engine) as session:
        rows = session.scalars(select(UsageRecord).order_by(UsageRecord.id))
        return [(row.instance_id, row.ended_at is None) for row in rows]


def test_a_listing_taken_before_a_kill_does_not_bring_the_instance_back(
    engine: Engine, instances: InstanceService, fake: FakeConnector
) -> None:
    (view,) = instances.run(RunRequest(image="debian-12"))
    listed_at, stale = utcnow(), fake.list_instances()  # still has it
    instances.kill(view.id)
    report = apply_listing(engine, "local", stale, listed_at=listed_at)
    assert report.changes == [] and instances.get(view.id, refresh=False).state == "gone"
    assert intervals(engine) == [(view.id, False)]  # closed once, not opened again

    # Without the moment of the listing, the old behaviour: brought back from the dead.
    apply_listing(engine, "local", stale)
    assert instances.get(view.id, refresh=False).state == "running"


def test_a_listing_taken_before_a_machine_came_up_does_not_call_it_deleted(
    engine: Engine, instances: InstanceService
) -> None:
    listed_at = utcnow()  # an empty cloud
    (view,) = instances.run(RunRequest(image="debian-12"))
    report = apply_listing(engine, "local", [], listed_at=listed_at)
    assert report.vanished == [] and instances.get(view.id, refresh=False).state == "running"
    assert intervals(engine) == [(view.id, True)]
    later = apply_listing(engine, "local", [], listed_at=utcnow())  # a fresh listing decides
    assert later.vanished == [view.id]
    assert intervals(engine) == [(view.id, False)]
