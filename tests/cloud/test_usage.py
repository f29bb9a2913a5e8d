"""Accounting from recorded state changes: running opens an interval, stopped, gone or error
closes it, a start opens a new one; the report adds them up clipped to its window. Times are
written into the intervals (no test waits for hours). On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.cloud.instances import InstanceService, RunRequest
from stratuslab.cloud.usage import Accounting
from stratuslab.db.models import UsageRecord
from stratuslab.db.session import session_scope
from stratuslab.errors import Invalid, NotFound
from stratuslab.principal import Principal
from tests.api import conftest as both_stores

store = both_stores.store  # these tests run on SQLite and on PostgreSQL
T0 = datetime(2031, 3, 1, 10, 0, tzinfo=UTC)
ALICE = Principal.for_user("alice")
ADMIN = Principal.for_user("root", admin=True)


def intervals(engine: Engine, instance_id: str | None = None) -> list[UsageRecord]:
    with session_scope(engine) as session:
        query = select(UsageRecord).order_by(UsageRecord.id)
        if instance_id is not None:
            query = query.where(UsageRecord.instance_id == instance_id)
        return list(session.scalars(query))


def place(engine: Engine, row_id: int, start: datetime, end: datetime | None) -> None:
    with session_scope(engine) as session:
        session.execute(
            update(UsageRecord)
            .where(UsageRecord.id == row_id)
            .values(started_at=start, ended_at=end)
        )


def test_a_stop_start_cycle_records_two_intervals_and_the_report_adds_them_up_clipped(
    engine: Engine, instances: InstanceService
) -> None:
    (view,) = instances.run(RunRequest(image="debian-12", cpu=2, ram_mb=1024))
    (opened,) = intervals(engine, view.id)
    assert opened.ended_at is None
    assert (opened.owner, opened.cloud, opened.cpu, opened.ram_mb) == ("alice", "local", 2, 1024)
    instances.stop(view.id)
    instances.stop(view.id)  # stopped again: nothing more to close
    assert [r.ended_at is not None for r in intervals(engine, view.id)] == [True]
    instances.start(view.id)
    instances.kill(view.id)
    first, second = intervals(engine, view.id)
    assert first.ended_at is not None and second.ended_at is not None
    assert second.started_at >= first.ended_at  # stopped between them: not counted

    # 10:00-12:00 running, stopped an hour, 13:00-14:30 running again.
    place(engine, first.id, T0, T0 + timedelta(hours=2))
    place(engine, second.id, T0 + timedelta(hours=3), T0 + timedelta(hours=4, minutes=30))
    report = Accounting(engine).report(
        caller=ALICE, since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=4)
    )
    assert report["since"] == "2031-03-01T11:00:00+00:00"
    assert report["until"] == "2031-03-01T14:00:00+00:00"
    ((row,),) = [report["rows"]]
    expected = {"instance_hours": 2.0, "vcpu_hours": 4.0, "memory_gib_hours": 2.0, "intervals": 2}
    assert row == {"user": "alice", "cloud": None, "run": None, **expected}
    assert report["total"] == expected
    whole = Accounting(engine).report(caller=ALICE, since=T0, until=T0 + timedelta(days=1))
    assert whole["total"]["instance_hours"] == 3.5


def test_an_open_interval_counts_until_the_report_and_an_unsized_instance_at_the_default(
    engine: Engine, instances: InstanceService
) -> None:
    (view,) = instances.run(RunRequest(image="debian-12"))
    (row,) = intervals(engine, view.id)
    assert (row.cpu, row.ram_mb) == (1, 512)
    place(engine, row.id, T0, None)
    report = Accounting(engine).report(
        caller=ALICE, since=T0 - timedelta(hours=5), now=T0 + timedelta(minutes=90)
    )
    assert report["until"] == (T0 + timedelta(minutes=90)).isoformat()
    assert report["total"] == {
        "instance_hours": 1.5,
        "vcpu_hours": 1.5,
        "memory_gib_hours": 0.75,
        "intervals": 1,
    }


def test_an_instance_deleted_behind_our_back_stops_counting_when_reconciliation_sees_it(
    engine: Engine, instances: InstanceService, fake: FakeConnector
) -> None:
    (view,) = instances.run(RunRequest(image="debian-12"))
    fake.ex_vanish(view.name)
    instances.list_instances()  # reconciles: vanished
    (row,) = intervals(engine, view.id)
    assert row.ended_at is not None


def test_by_cloud_and_by_run_and_who_may_see_what(engine: Engine) -> None:
    with session_scope(engine) as session:
        for owner, cloud, run, hours in (
            ("alice", "local", "run-a", 1),
            ("alice", "local", None, 2),
            ("alice", "other", "run-a", 4),
            ("bob", "local", "run-b", 8),
        ):
            session.add(
                UsageRecord(
                    instance_id=f"i-{owner}{hours}",
                    owner=owner,
                    cloud=cloud,
                    run_id=run,
                    cpu=1,
                    ram_mb=1024,
                    started_at=T0,
                    ended_at=T0 + timedelta(hours=hours),
                )
            )
    accounting = Accounting(engine)
    window = {"since": T0, "until": T0 + timedelta(days=1)}
    by_cloud = accounting.report(caller=ALICE, by="cloud", **window)
    assert [(r["cloud"], r["instance_hours"]) for r in by_cloud["rows"]] == [
        ("local", 3.0),
        ("other", 4.0),
    ]
    by_run = accounting.report(caller=ADMIN, by="run", all_users=True, **window)
    assert [(r["user"], r["run"], r["instance_hours"]) for r in by_run["rows"]] == [
        ("alice", None, 2.0),
        ("alice", "run-a", 5.0),
        ("bob", "run-b", 8.0),
    ]
    assert accounting.report(caller=ADMIN, user="bob", **window)["total"]["intervals"] == 1
    mine = accounting.report(caller=ALICE, all_users=True, **window)  # still only her own
    assert [r["user"] for r in mine["rows"]] == ["alice"]
    with pytest.raises(NotFound, match="no user 'bob'"):
        accounting.report(caller=ALICE, user="bob", **window)
    with pytest.raises(Invalid, match="must be before"):
        accounting.report(caller=ALICE, since=T0, until=T0)
    with pytest.raises(Invalid, match="--by"):
        accounting.report(caller=ALICE, by="week", **window)
