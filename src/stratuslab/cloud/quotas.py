"""Quotas: how much a user, and the members of a group together, may hold at once.

A quota is a record of the ``quotas`` table: a subject (``user:<name>``, ``group:<name>``, or
``user:*``, the default for every user without a quota of their own of that scope), a scope
(one cloud, or ``*`` for all clouds together) and limits on instances, vCPUs, memory (MiB) and
volume storage (GiB); a limit of None is no limit.

Who is bound by what, as a site that shares its machines among projects expects:

- a user by their own quota of each scope, or else by the default ``user:*`` of that scope;
- and by the quota of every group they belong to, on what all its members hold together (a
  project's allocation, which its members share).

A cloud's quota bounds what is held on that cloud; a ``*`` quota what is held on all of them.

What is held (:mod:`stratuslab.cloud.holdings`): every instance of the owner that is not gone,
at its size, plus what runs reserve for node instances whose machine is not recorded yet, and
every volume of theirs that is not gone, in whole GiB (checked by the volume service when it
records a volume, a clone or a resize).
A refusal is ``CapacityExceeded`` saying what is over and by how much; nothing is recorded. The
check and the record of what it admits are made in one transaction that holds a lock on each
subject that binds (a PostgreSQL advisory lock, always taken in the same order; SQLite
serializes every writing transaction already), so two requests racing cannot both pass. A quota
lowered below what is held leaves what exists alone and refuses what would add to it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from stratuslab.cloud.admission import Admitted, RunRequest
from stratuslab.cloud.holdings import (
    ALL,
    DEFAULT_CPU,
    DEFAULT_RAM_MB,
    Amount,
    Reserved,
    charge_of,
    held,
    nothing_reserved,
    totals,
)
from stratuslab.db.models import (
    CloudRecord,
    GroupMemberRecord,
    GroupRecord,
    QuotaRecord,
    UserRecord,
)
from stratuslab.db.session import session_scope
from stratuslab.errors import CapacityExceeded, Forbidden, Invalid, NotFound
from stratuslab.principal import Principal

__all__ = [
    "ALL",
    "DEFAULT_USER",
    "MAX_LIMIT",
    "Binding",
    "Limits",
    "Quotas",
    "bindings",
    "charged",
    "lock",
    "subject_of",
]

DEFAULT_USER = "user:*"  # the quota of every user without one of their own for that scope
_DIMENSIONS = (
    ("instances", "instances"),
    ("cpu", "vCPUs"),
    ("ram_mb", "memory (MiB)"),
    ("storage_gib", "storage (GiB)"),
)
MAX_LIMIT = 2**31 - 1  # what the store keeps


@dataclass(frozen=True)
class Limits:
    """A quota's limits; None is no limit."""

    instances: int | None = None
    cpu: int | None = None
    ram_mb: int | None = None
    storage_gib: int | None = None

    @classmethod
    def of(cls, row: QuotaRecord) -> Limits:
        return cls(row.instances, row.cpu, row.ram_mb, row.storage_gib)

    def to_dict(self) -> dict[str, int | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def enforced(self) -> bool:
        """Whether any limit is set."""
        return any(getattr(self, name) is not None for name, _ in _DIMENSIONS)

    def excess(self, in_use: Amount, asked: Amount) -> list[str]:
        """What ``asked`` on top of ``in_use`` would put over, each in a sentence."""
        over = []
        for name, label in _DIMENSIONS:
            limit = getattr(self, name)
            now, more = getattr(in_use, name), getattr(asked, name)
            if limit is not None and more > 0 and now + more > limit:
                over.append(
                    f"{label}: {now} in use + {more} asked > quota {limit} "
                    f"(over by {now + more - limit})"
                )
        return over

    def over(self, in_use: Amount) -> list[str]:
        """The limits ``in_use`` is already over (a quota lowered below what is held)."""
        return [
            name
            for name, _ in _DIMENSIONS
            if getattr(self, name) is not None and getattr(in_use, name) > getattr(self, name)
        ]


@dataclass(frozen=True)
class Binding:
    """A quota that binds one owner: whose holdings it adds up, and on which clouds."""

    subject: str  # user:alice, group:physics, or user:* (then applied to the owner alone)
    cloud: str  # a cloud's name, or ALL
    limits: Limits
    members: frozenset[str]  # the owners whose holdings count: the user, or the group's members
    lock_subject: str  # what two requests this quota decides between both lock

    def in_use(self, holdings: Mapping[str, Mapping[str, Amount]]) -> Amount:
        total = Amount()
        for owner in self.members:
            for cloud, amount in holdings.get(owner, {}).items():
                if self.cloud in (ALL, cloud):
                    total += amount
        return total

    def describe(self) -> str:
        kind, _, name = self.subject.partition(":")
        whose = (
            "the default user quota" if self.subject == DEFAULT_USER else f"{kind} {name}'s quota"
        )
        return f"{whose} ({'all clouds' if self.cloud == ALL else 'cloud ' + self.cloud})"


def subject_of(*, user: str | None = None, group: str | None = None) -> str:
    return f"group:{group}" if group is not None else f"user:{user}"


class Quotas:
    """Quotas as administrators set them and users read them, and the check every request
    that adds instances or volume storage passes inside the transaction that records them.
    ``reserved`` says what runs hold beyond their instances (the deployment engine's
    :func:`stratuslab.deploy.reservations.held_by_runs`)."""

    def __init__(self, engine: Engine, *, reserved: Reserved = nothing_reserved) -> None:
        self.engine = engine
        self.reserved = reserved

    # -- what administrators set and users read -------------------------------------------

    def show(
        self, *, caller: Principal, user: str | None = None, all_quotas: bool = False
    ) -> dict[str, Any]:
        """The quotas that bind ``user`` (the caller by default) with what they add up now,
        and what the user holds on each cloud; with ``all_quotas``, an administrator's view of
        every quota recorded (anybody else still sees their own). Asking of another user, as
        anybody but an administrator, is told there is no such user."""
        if user is not None and user != caller.user and not caller.sees_all:
            raise NotFound(f"no user {user[:70]!r}", hint="see your own: stratus quota show")
        everything = all_quotas and user is None and caller.sees_all
        target = None if everything else (user if user is not None else caller.user or "")
        with session_scope(self.engine) as session:
            if target is None:
                rows = list(session.scalars(select(QuotaRecord).order_by(QuotaRecord.subject)))
                groups = _members(session, {r.subject for r in rows if r.subject[:6] == "group:"})
                found = [_binding_of(row, groups) for row in rows]
                holdings = held(session, {o for b in found for o in b.members}, self.reserved)
                return {"user": None, "usage": None, "quotas": [_entry(b, holdings) for b in found]}
            found = bindings(session, target)
            holdings = held(
                session, {target} | {o for b in found for o in b.members}, self.reserved
            )
            usage = totals(holdings.get(target, {}))
            return {
                "user": target,
                "usage": {cloud: _usage_dict(amount) for cloud, amount in sorted(usage.items())},
                "quotas": [_entry(b, holdings) for b in found],
            }

    def set(
        self, subject: str, *, cloud: str = ALL, limits: Limits, caller: Principal
    ) -> dict[str, Any]:
        """Set (replace) the quota of ``subject`` on ``cloud``; with no limit at all, remove it.
        Administrators only. What is held already stays, even over the new limits."""
        if not caller.sees_all:
            raise Forbidden("only an administrator sets quotas")
        for name, value in limits.to_dict().items():
            if value is not None and not 0 <= value <= MAX_LIMIT:
                raise Invalid(f"{name}: between 0 and {MAX_LIMIT}, not {value}")
        with session_scope(self.engine) as session:
            _check_subject(session, subject)
            if cloud != ALL and session.get(CloudRecord, cloud[:64]) is None:
                raise NotFound(f"no cloud called {cloud[:70]!r}", hint="or * for all clouds")
            row = session.get(QuotaRecord, (subject, cloud))
            if not any(value is not None for value in limits.to_dict().values()):
                if row is not None:
                    session.delete(row)
                return {"subject": subject, "cloud": cloud, "limits": limits.to_dict()}
            if row is None:
                row = QuotaRecord(subject=subject, cloud=cloud)
                session.add(row)
            row.instances, row.cpu, row.ram_mb = limits.instances, limits.cpu, limits.ram_mb
            row.storage_gib = limits.storage_gib
            return {"subject": subject, "cloud": cloud, "limits": Limits.of(row).to_dict()}

    # -- the check ------------------------------------------------------------------------

    def enforce(self, session: Session, owner: str, demand: Mapping[str, Amount]) -> None:
        """Raise ``CapacityExceeded`` when ``demand`` (per cloud) on top of what ``owner`` (and
        each of their groups) holds would exceed a quota that binds them. Call it in the
        transaction that then records what it admits: it holds the subjects' locks until that
        transaction ends."""
        asked = {cloud: amount for cloud, amount in demand.items() if amount}
        if not asked:
            return
        found = [
            b
            for b in bindings(session, owner)
            if b.limits.enforced and (b.cloud == ALL or b.cloud in asked)
        ]
        if not found:
            return
        lock(session, {b.lock_subject for b in found})
        holdings = held(session, {o for b in found for o in b.members}, self.reserved)
        total = sum(asked.values(), Amount())
        refusals = []
        for binding in found:
            wanted = total if binding.cloud == ALL else asked[binding.cloud]
            excess = binding.limits.excess(binding.in_use(holdings), wanted)
            if excess:
                refusals.append(f"{binding.describe()}: {'; '.join(excess)}")
        if refusals:
            raise CapacityExceeded(
                "over quota: " + " | ".join(refusals),
                hint="free what you no longer need (stratus instance list, stratus run list, "
                "stratus volume list) or ask an administrator; see `stratus quota show`",
            )

    def refusal(
        self, session: Session, owner: str, batch: Iterable[Admitted]
    ) -> CapacityExceeded | None:
        """:meth:`enforce` for the requests of ``batch`` that are :func:`charged`: the refusal,
        or None."""
        demand: dict[str, Amount] = {}
        for admitted in batch:
            request = admitted.checked.request
            if charged(admitted):
                asked = charge_of(request.cpu, request.ram_mb, len(admitted.checked.names))
                demand[request.cloud] = demand.get(request.cloud, Amount()) + asked
        try:
            self.enforce(session, owner, demand)
        except CapacityExceeded as exc:
            return exc
        return None

    def sized(self, owner: str, requests: Sequence[RunRequest]) -> Sequence[RunRequest]:
        """Under a quota on vCPUs or memory, an instance asked without a size is given the
        size it is charged (``holdings.DEFAULT_CPU``, ``DEFAULT_RAM_MB``), so that the quota
        bounds what it may really use."""
        if all(r.cpu and r.ram_mb for r in requests):
            return requests
        with session_scope(self.engine) as session:
            if not any(
                b.limits.cpu is not None or b.limits.ram_mb is not None
                for b in bindings(session, owner)
            ):
                return requests
        return [
            replace(r, cpu=r.cpu or DEFAULT_CPU, ram_mb=r.ram_mb or DEFAULT_RAM_MB)
            for r in requests
        ]


def charged(admitted: Admitted) -> bool:
    """Whether instances are checked when they are recorded: all but those made for a run's
    node instances, which the run reserved when it was started or scaled up."""
    return admitted.checked.request.run_id is None


def bindings(session: Session, owner: str) -> list[Binding]:
    """Every quota that binds ``owner``: their own (or the default) of each scope, and their
    groups' quotas with the groups' members."""
    groups = list(
        session.scalars(select(GroupMemberRecord.group).where(GroupMemberRecord.user == owner))
    )
    subjects = [subject_of(user=owner), DEFAULT_USER, *(subject_of(group=g) for g in groups)]
    rows = list(session.scalars(select(QuotaRecord).where(QuotaRecord.subject.in_(subjects))))
    own = {row.cloud for row in rows if row.subject == subject_of(user=owner)}
    members = _members(session, [row.subject for row in rows if row.subject.startswith("group:")])
    found = []
    for row in rows:
        if row.subject == DEFAULT_USER and row.cloud in own:
            continue  # the user's own quota of that scope replaces the default
        if row.subject.startswith("group:"):
            who, locked = members.get(row.subject, frozenset()) | {owner}, row.subject
        else:
            who, locked = frozenset({owner}), subject_of(user=owner)
        found.append(Binding(row.subject, row.cloud, Limits.of(row), who, locked))
    return sorted(found, key=lambda b: (b.subject, b.cloud))


def _binding_of(row: QuotaRecord, groups: Mapping[str, frozenset[str]]) -> Binding:
    """A recorded quota, as the administrator's list shows it: a user's or a group's, on what
    its members hold; the default user quota binds each user alone, so it adds up nothing."""
    if row.subject.startswith("group:"):
        members = groups.get(row.subject, frozenset())
    elif row.subject == DEFAULT_USER:
        members = frozenset()
    else:
        members = frozenset({row.subject.removeprefix("user:")})
    return Binding(row.subject, row.cloud, Limits.of(row), members, row.subject)


def _entry(binding: Binding, holdings: Mapping[str, Mapping[str, Amount]]) -> dict[str, Any]:
    in_use = binding.in_use(holdings) if binding.members else None
    return {
        "subject": binding.subject,
        "cloud": binding.cloud,
        "limits": binding.limits.to_dict(),
        "usage": _usage_dict(in_use) if in_use is not None else None,
        "over": binding.limits.over(in_use) if in_use is not None else [],
    }


def _usage_dict(amount: Amount) -> dict[str, int]:
    return amount.to_dict()


def _check_subject(session: Session, subject: str) -> None:
    kind, colon, name = subject.partition(":")
    if subject == DEFAULT_USER:
        return
    if not colon or kind not in ("user", "group") or not name or len(subject) > 80:
        raise Invalid(
            f"quota subject {subject[:80]!r}: user:NAME, group:NAME, or user:* for every user"
        )
    record = UserRecord if kind == "user" else GroupRecord
    if session.get(record, name) is None:
        raise NotFound(f"no {kind} {name[:70]!r}", hint=f"see `stratus {kind} list`")


def _members(session: Session, subjects: Collection[str]) -> dict[str, frozenset[str]]:
    names = [s.removeprefix("group:") for s in subjects]
    if not names:
        return {}
    found: dict[str, set[str]] = {}
    for group, user in session.execute(
        select(GroupMemberRecord.group, GroupMemberRecord.user).where(
            GroupMemberRecord.group.in_(names)
        )
    ):
        found.setdefault(subject_of(group=group), set()).add(user)
    return {subject: frozenset(users) for subject, users in found.items()}


def lock(session: Session, subjects: Iterable[str]) -> None:
    """Hold a lock on each subject until the transaction ends: on PostgreSQL an advisory lock
    per subject, taken in one order so that two requests never wait for each other in a
    circle; on SQLite the transaction began IMMEDIATE and holds the only write lock already."""
    if session.get_bind().dialect.name != "postgresql":
        return
    for key in sorted({_lock_key(s) for s in subjects}):
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _lock_key(subject: str) -> int:
    digest = hashlib.sha256(b"stratus-quota\0" + subject.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)
