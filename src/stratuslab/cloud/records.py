"""Instances as the store keeps them and as users see them.

A record (``InstanceRecord``) is written before the backend is asked for anything and outlives
the instance; an :class:`InstanceView` is the frozen copy handed out once a transaction ends.
The functions here read and write records inside a session the caller holds, so that the
caller decides what one transaction is.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from stratuslab.cloud.admission import RunRequest
from stratuslab.cloud.base import Instance
from stratuslab.cloud.types import InstanceState
from stratuslab.db.models import InstanceRecord, utcnow
from stratuslab.errors import Invalid, NotFound


@dataclass(frozen=True)
class InstanceView:
    """An instance as users see it."""

    id: str
    name: str
    cloud: str
    owner: str
    image: str
    state: str
    addresses: tuple[str, ...]
    cpu: int | None
    ram_mb: int | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    error: str | None
    recovered: bool
    run_id: str | None
    node_instance: str | None

    @property
    def address(self) -> str | None:
        return self.addresses[0] if self.addresses else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            out[key] = value.isoformat() if isinstance(value, datetime) else value
        out["addresses"] = list(self.addresses)
        return out


def view_of(row: InstanceRecord) -> InstanceView:
    return InstanceView(
        id=row.id,
        name=row.name,
        cloud=row.cloud,
        owner=row.owner,
        image=row.image,
        state=row.state,
        addresses=tuple(row.addresses or ()),
        cpu=row.cpu,
        ram_mb=row.ram_mb,
        created_at=row.created_at,
        started_at=row.started_at,
        ended_at=row.ended_at,
        error=row.error,
        recovered=row.recovered,
        run_id=row.run_id,
        node_instance=row.node_instance,
    )


def apply(row: InstanceRecord, instance: Instance) -> bool:
    """Copy what the backend says onto the record; True when something changed."""
    before = (row.state, list(row.addresses))
    row.state = instance.state.value
    row.addresses = list(instance.addresses)
    return before != (row.state, row.addresses)


def mark_gone(row: InstanceRecord, *, error: str | None = None) -> None:
    """The record of an instance that no longer exists; an earlier reason is kept."""
    row.state, row.addresses, row.ended_at = InstanceState.GONE.value, [], utcnow()
    row.error = error or row.error


def pending(
    *, name: str, owner: str, image: str, request: RunRequest, ssh_keys: int, user_data: bool
) -> InstanceRecord:
    """A new record for an instance about to be asked of the backend."""
    return InstanceRecord(
        id=f"i-{secrets.token_hex(5)}",
        name=name,
        cloud=request.cloud,
        owner=owner,
        image=image,
        state=InstanceState.PENDING.value,
        addresses=[],
        cpu=request.cpu,
        ram_mb=request.ram_mb,
        ssh_keys=ssh_keys,
        user_data=user_data,
        run_id=request.run_id,
        node_instance=request.node_instance,
        recovered=False,
        created_at=utcnow(),
    )


def pending_values(
    *, name: str, owner: str, image: str, request: RunRequest, ssh_keys: int, user_data: bool
) -> dict[str, Any]:
    """:func:`pending` as the values of a row, for many records written in one statement."""
    return {
        "id": f"i-{secrets.token_hex(5)}",
        "name": name,
        "cloud": request.cloud,
        "owner": owner,
        "image": image,
        "state": InstanceState.PENDING.value,
        "addresses": [],
        "cpu": request.cpu,
        "ram_mb": request.ram_mb,
        "ssh_keys": ssh_keys,
        "user_data": user_data,
        "run_id": request.run_id,
        "node_instance": request.node_instance,
        "error": None,
        "recovered": False,
        "created_at": utcnow(),
        "started_at": None,
        "ended_at": None,
    }


def view_of_values(values: dict[str, Any]) -> InstanceView:
    """The view of a record written from ``values`` (see :func:`pending_values`)."""
    return InstanceView(
        id=values["id"],
        name=values["name"],
        cloud=values["cloud"],
        owner=values["owner"],
        image=values["image"],
        state=values["state"],
        addresses=tuple(values["addresses"]),
        cpu=values["cpu"],
        ram_mb=values["ram_mb"],
        created_at=values["created_at"],
        started_at=values["started_at"],
        ended_at=values["ended_at"],
        error=values["error"],
        recovered=values["recovered"],
        run_id=values["run_id"],
        node_instance=values["node_instance"],
    )


def adopted(cloud: str, instance: Instance) -> InstanceRecord:
    """A record for a tagged instance the store does not know (it lost it, or never wrote it)."""
    return InstanceRecord(
        id=instance.tags["id"],
        name=instance.name,
        cloud=cloud,
        owner=instance.tags.get("owner", "unknown"),
        image=instance.tags.get("image", instance.image),
        state=instance.state.value,
        addresses=list(instance.addresses),
        cpu=instance.cpu,
        ram_mb=instance.ram_mb,
        ssh_keys=0,
        user_data=False,
        run_id=instance.tags.get("run"),
        node_instance=instance.tags.get("node-instance"),
        recovered=True,
        created_at=instance.created_at or datetime.now(UTC),
    )


def swept(session: Session, cloud: str, instance: Instance) -> InstanceRecord | None:
    """Record a run's leftover, just destroyed, as gone (made from its tags if the store never
    had it); None when it carries no id, so that there is nothing to record."""
    if "id" not in instance.tags:
        return None
    row = session.get(InstanceRecord, instance.tags["id"])
    if row is None:
        row = adopted(cloud, instance)
        session.add(row)
    mark_gone(row, error=row.error or "left over by its run, destroyed by its tag")
    return row


def find(session: Session, ref: str, *, owner: str | None) -> InstanceRecord:
    """The record ``ref`` names among ``owner``'s (every owner's when None): an id, a unique id
    prefix, or a name (the live instance of that name first, when names were reused). Another
    owner's instance is not found, not even as a prefix that would be ambiguous."""
    row = session.get(InstanceRecord, ref)
    if row is not None and (owner is None or row.owner == owner):
        return row
    query = select(InstanceRecord).where(
        or_(InstanceRecord.name == ref, InstanceRecord.id.startswith(ref, autoescape=True))
    )
    if owner is not None:
        query = query.where(InstanceRecord.owner == owner)
    candidates = session.scalars(query.order_by(InstanceRecord.created_at.desc())).all()
    live = [r for r in candidates if r.state != InstanceState.GONE.value]
    for pool in (live, candidates):
        by_name = [r for r in pool if r.name == ref]
        if by_name:
            return by_name[0]
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        raise Invalid(f"{ref!r} matches {len(candidates)} instances", hint="give more of the id")
    raise NotFound(f"no instance {ref!r}", hint="see `stratus instance list`")
