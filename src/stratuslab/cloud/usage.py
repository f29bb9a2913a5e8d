"""Accounting: the intervals instances ran, recorded from their state changes, and what they
add up to over a window of time.

Every place the instance service records a change of state (``fleet``, ``instances``,
``reconcile``) calls :func:`follow` in the same transaction: an instance that becomes running
opens an interval (its owner, cloud, run and size); one that is stopped, gone or in error
closes it; a start opens a new one. A stopped instance costs nothing. An instance asked
without a size runs under the default size the quotas charge (``holdings.DEFAULT_CPU``,
``DEFAULT_RAM_MB``) and is accounted at it.

:class:`Accounting` adds the intervals up per user, cloud or run, each clipped to the window
asked (an interval still open ends at the moment of the report): instance-hours, vCPU-hours
and memory in GiB-hours (MiB / 1024 x hours). The answer is JSON a billing script can rely on:
stable field names, numbers as numbers, the window echoed.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal, cast

from sqlalchemy import Table, insert, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from stratuslab.cloud.holdings import DEFAULT_CPU, DEFAULT_RAM_MB
from stratuslab.cloud.types import InstanceState
from stratuslab.db.models import InstanceRecord, UsageRecord, utcnow
from stratuslab.db.session import reading
from stratuslab.errors import Invalid, NotFound
from stratuslab.principal import Principal

By = Literal["user", "cloud", "run"]
BY: tuple[By, ...] = ("user", "cloud", "run")
_OPENS = {InstanceState.RUNNING.value}
_CLOSES = {InstanceState.STOPPED.value, InstanceState.GONE.value, InstanceState.ERROR.value}
_CHUNK = 500  # ids in one IN (): SQLite bounds the parameters of a statement
_USAGE = cast(Table, UsageRecord.__table__)
_ROUND = 6  # decimals of hours in an answer: a thousandth of a second is plenty


def follow(session: Session, ids: Iterable[str], *, at: datetime | None = None) -> None:
    """Bring the intervals of the instances ``ids`` in line with their recorded state, in the
    caller's transaction: open one for each running instance that has none open, close the
    open one of each that is stopped, gone or in error (at ``at``, by default now). Pending
    and unknown states change nothing. Calling it twice is the same as once."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return
    moment = at or utcnow()
    session.flush()
    connection = session.connection()
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        states = session.execute(
            select(
                InstanceRecord.id,
                InstanceRecord.owner,
                InstanceRecord.cloud,
                InstanceRecord.run_id,
                InstanceRecord.cpu,
                InstanceRecord.ram_mb,
                InstanceRecord.state,
            ).where(InstanceRecord.id.in_(chunk))
        ).all()
        running = set(
            session.scalars(
                select(UsageRecord.instance_id).where(
                    UsageRecord.instance_id.in_(chunk), UsageRecord.ended_at.is_(None)
                )
            )
        )
        opened = [
            {
                "instance_id": row.id,
                "owner": row.owner,
                "cloud": row.cloud,
                "run_id": row.run_id,
                "cpu": row.cpu or DEFAULT_CPU,
                "ram_mb": row.ram_mb or DEFAULT_RAM_MB,
                "started_at": moment,
                "ended_at": None,
            }
            for row in states
            if row.state in _OPENS and row.id not in running
        ]
        closed = [row.id for row in states if row.state in _CLOSES and row.id in running]
        if opened:
            connection.execute(insert(_USAGE), opened)
        if closed:
            connection.execute(
                update(_USAGE)
                .where(_USAGE.c.instance_id.in_(closed), _USAGE.c.ended_at.is_(None))
                .values(ended_at=moment)
            )


class Accounting:
    """What users' instances ran, added up over a window."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def report(
        self,
        *,
        caller: Principal,
        since: datetime | None = None,
        until: datetime | None = None,
        user: str | None = None,
        by: str = "user",
        all_users: bool = False,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """Instance-hours, vCPU-hours and memory GiB-hours per ``by`` (user, cloud or run)
        within [since, until) (by default from the first of this month, UTC, until now). A user
        sees their own; an administrator names anyone, or with ``all_users`` everybody (anybody
        else asking for all still sees their own)."""
        moment = now or utcnow()
        month = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        start = _aware(since) if since else month
        end = _aware(until) if until else moment
        if start >= end:
            raise Invalid(
                f"--since ({start.isoformat()}) must be before --until ({end.isoformat()})"
            )
        if by not in BY:
            raise Invalid(f"--by: one of {', '.join(BY)}, not {by[:20]!r}")
        if user is not None and user != caller.user and not caller.sees_all:
            raise NotFound(f"no user {user[:70]!r}", hint="see your own: stratus usage")
        everybody = all_users and user is None and caller.sees_all
        owner = None if everybody else (user if user is not None else caller.user or "")
        query = select(_USAGE).where(
            _USAGE.c.started_at < end,
            or_(_USAGE.c.ended_at.is_(None), _USAGE.c.ended_at > start),
        )
        if owner is not None:
            query = query.where(_USAGE.c.owner == owner)
        groups: dict[tuple[str | None, str | None, str | None], dict[str, float]] = {}
        with reading(self.engine) as connection:
            for row in connection.execute(query.order_by(_USAGE.c.id)):
                began = max(_aware(row.started_at), start)
                ended = min(_aware(row.ended_at) if row.ended_at else moment, end)
                hours = max((ended - began).total_seconds(), 0.0) / 3600
                key = (
                    row.owner if by in ("user", "run") else None,
                    row.cloud if by == "cloud" else None,
                    row.run_id if by == "run" else None,
                )
                _add(groups.setdefault(key, _zero()), hours, row.cpu, row.ram_mb)
        total = _zero()
        rows = []
        for (who, cloud, run), sums in sorted(groups.items(), key=lambda kv: _order(kv[0])):
            _merge(total, sums)
            rows.append({"user": who, "cloud": cloud, "run": run, **_rounded(sums)})
        return {
            "since": start.isoformat(),
            "until": end.isoformat(),
            "user": owner,
            "by": by,
            "units": {
                "instance_hours": "hours",
                "vcpu_hours": "vCPU x hours",
                "memory_gib_hours": "GiB x hours (MiB / 1024)",
            },
            "rows": rows,
            "total": _rounded(total),
        }


def _zero() -> dict[str, float]:
    return {"instance_hours": 0.0, "vcpu_hours": 0.0, "memory_gib_hours": 0.0, "intervals": 0}


def _add(sums: dict[str, float], hours: float, cpu: int, ram_mb: int) -> None:
    sums["instance_hours"] += hours
    sums["vcpu_hours"] += hours * cpu
    sums["memory_gib_hours"] += hours * ram_mb / 1024
    sums["intervals"] += 1


def _merge(total: dict[str, float], sums: dict[str, float]) -> None:
    for name, value in sums.items():
        total[name] += value


def _rounded(sums: dict[str, float]) -> dict[str, float | int]:
    return {
        name: int(value) if name == "intervals" else round(value, _ROUND)
        for name, value in sums.items()
    }


def _order(key: tuple[str | None, str | None, str | None]) -> tuple[str, str, str]:
    return (key[0] or "", key[1] or "", key[2] or "")


def _aware(moment: datetime) -> datetime:
    """A moment in UTC; one given without a zone is taken to be UTC."""
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:
        raise Invalid(f"{moment.isoformat()} is out of range in UTC") from None
