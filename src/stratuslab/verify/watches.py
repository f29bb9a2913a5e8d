"""Watches: the repositories the server verifies on their owners' behalf.

A watch belongs to the user who added it and is reached by its name among theirs (an
administrator names another's as ``owner/name``); anybody else is told it does not exist. Its
secret authenticates the forge's push hooks and signs the webhooks it sends; it is shown to its
owner only. Every list a watch keeps is bounded here, where it is written.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from stratuslab.db.models import utcnow
from stratuslab.db.session import session_scope
from stratuslab.db.verify_models import (
    NotificationRecord,
    VerificationRecord,
    WatchBranchRecord,
    WatchRecord,
)
from stratuslab.errors import Conflict, Invalid, NotFound
from stratuslab.principal import Principal
from stratuslab.verify import addresses, checks, schedule

MAX_WATCHES = 50  # a user's watches
MAX_BRANCHES = checks.MAX_BRANCHES
MAX_NOTIFY = checks.MAX_NOTIFY
MAX_PARAMS = checks.MAX_PARAMS
MAX_EVERY_S = 7 * 24 * 3600
DEFAULT_EVERY_S = 300

CheckUrl = Callable[[str, bool], str]  # (url, local allowed) -> the URL as kept
CheckForge = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class WatchSpec:
    repository: str
    module: str
    branches: Sequence[str] = ("main",)
    every_s: int = DEFAULT_EVERY_S
    params: Mapping[str, str] = field(default_factory=dict)
    notify: Sequence[str] = ()
    name: str | None = None
    keep_running: str = "never"
    mail_every_failure: bool = False
    forge: dict[str, Any] | None = None
    deploy_key: str | None = None


class Watches:
    def __init__(
        self,
        engine: Engine,
        *,
        check_url: CheckUrl,
        check_forge: CheckForge | None = None,
        min_every_s: int = 10,
        private_addresses: bool = False,
    ) -> None:
        self.engine = engine
        self._check_url = check_url
        self._check_forge = check_forge
        self.min_every_s = min_every_s
        self.private_addresses = private_addresses  # the site lets watches reach them

    # -- adding and changing ------------------------------------------------------------------

    def add(self, spec: WatchSpec, *, caller: Principal) -> dict[str, Any]:
        """Record a watch of ``caller``'s; its first poll is due at once. The answer carries
        the secret (for the forge's hook settings), which later views hide."""
        owner = _person(caller)
        repository = self._check_url(spec.repository, caller.admin)
        private = caller.admin or self.private_addresses
        addresses.check_public(repository, what="the repository's host", allowed=private)
        for target in spec.notify:
            if not target.startswith("mailto:"):
                addresses.check_public(target, what="the webhook's host", allowed=private)
        if spec.forge and isinstance(spec.forge.get("api"), str):
            addresses.check_public(spec.forge["api"], what="the forge's host", allowed=private)
        name = spec.name or checks.name_from(repository)
        row = WatchRecord(
            id=secrets.token_hex(16),  # 128 random bits: badges, feeds, hooks are by id
            owner=owner,
            name=checks.checked_name(name),
            repository=repository,
            module=checks.checked_module(spec.module),
            branches=checks.checked_branches(spec.branches),
            every_s=self._checked_every(spec.every_s),
            params=checks.checked_params(spec.params),
            notify=checks.checked_notify(spec.notify),
            keep_running=checks.checked_keep(spec.keep_running),
            secret=secrets.token_hex(20),
            mail_every_failure=spec.mail_every_failure,
            forge=self._check_forge(spec.forge) if spec.forge and self._check_forge else None,
            deploy_key=checks.checked_key(spec.deploy_key),
            wake=True,
        )
        if spec.forge and self._check_forge is None:
            raise Invalid("commit statuses are not available on this server")
        try:
            with session_scope(self.engine) as session:
                count = (
                    session.scalar(select(func.count()).select_from(WatchRecord).where(_of(owner)))
                    or 0
                )
                if count >= MAX_WATCHES:
                    raise Conflict(
                        f"{owner} has {count} watches, the most one user may have",
                        hint="remove one first (`stratus watch remove NAME`)",
                    )
                session.add(row)
                session.flush()
                return view(row, []) | {"secret": row.secret}
        except IntegrityError:
            if self._leaving(owner, row.name):  # removed, its run not yet ended
                raise Conflict(
                    f"{owner}'s watch {row.name!r} is being removed: its run is being cancelled",
                    hint="add it again in a minute, or give another --name",
                ) from None
            raise Conflict(
                f"{owner} already has a watch named {row.name!r}", hint="give another --name"
            ) from None

    def set_paused(self, ref: str, paused: bool, *, caller: Principal) -> dict[str, Any]:
        with session_scope(self.engine) as session:
            row = self._find(session, ref, caller)
            row.paused = paused
            row.wake = not paused
            return view(row, _branches(session, row.id))

    def wake(self, ref: str, *, caller: Principal) -> dict[str, Any]:
        """Poll the watch at once (``stratus watch notify``, from a post-receive hook)."""
        with session_scope(self.engine) as session:
            row = self._find(session, ref, caller)
            row.wake = True
            return view(row, _branches(session, row.id))

    def wake_by_id(self, watch_id: str) -> WatchRecord | None:
        """The watch a forge's hook names (authenticated by its secret, by the caller)."""
        with session_scope(self.engine) as session:
            row = session.get(WatchRecord, watch_id)
            if row is None or row.removed:
                return None
            session.expunge(row)
            return row

    def mark_woken(self, watch_id: str) -> None:
        with session_scope(self.engine) as session:
            row = session.get(WatchRecord, watch_id)
            if row is not None and not row.removed:
                row.wake = True

    def remove(self, ref: str, *, caller: Principal) -> dict[str, Any]:
        """Remove a watch. One whose verification is under way is marked removed: its run is
        cancelled, and the watch goes once the run has ended (the verifier sees to it)."""
        with session_scope(self.engine) as session:
            row = self._find(session, ref, caller)
            answer = view(row, _branches(session, row.id))
            if schedule.running(session, row.id) is None:
                purge(session, row.id)
                return answer | {"removed": True}
            row.removed, row.paused = True, True
            return answer | {"removed": False, "pending": "its run is being cancelled"}

    # -- reading ---------------------------------------------------------------------------

    def list_watches(self, *, caller: Principal, owner: str | None = None) -> list[dict[str, Any]]:
        """The caller's watches (every user's, for an administrator), or only ``owner``'s."""
        with session_scope(self.engine) as session:
            query = select(WatchRecord).where(WatchRecord.removed.is_(False))
            if caller.owner_filter is not None:
                query = query.where(WatchRecord.owner == caller.owner_filter)
            if owner is not None:
                query = query.where(WatchRecord.owner == owner)
            rows = session.scalars(query.order_by(WatchRecord.owner, WatchRecord.name)).all()
            branches: dict[str, list[WatchBranchRecord]] = {row.id: [] for row in rows}
            for state in session.scalars(
                select(WatchBranchRecord).where(WatchBranchRecord.watch_id.in_(list(branches)))
            ):
                branches[state.watch_id].append(state)
            return [view(row, branches[row.id]) for row in rows]

    def show(self, ref: str, *, caller: Principal) -> dict[str, Any]:
        with session_scope(self.engine) as session:
            row = self._find(session, ref, caller)
            return view(row, _branches(session, row.id))

    def record(self, ref: str, *, caller: Principal) -> WatchRecord:
        """The watch's record, detached (for the verifier's use on the caller's behalf)."""
        with session_scope(self.engine) as session:
            row = self._find(session, ref, caller)
            session.expunge(row)
            return row

    def history(
        self, ref: str, *, caller: Principal, branch: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Each verification of the watch, newest first."""
        limit = max(1, min(limit, 1000))
        with session_scope(self.engine) as session:
            row = self._find(session, ref, caller)
            query = select(VerificationRecord).where(VerificationRecord.watch_id == row.id)
            if branch is not None:
                query = query.where(VerificationRecord.branch == branch)
            found = session.scalars(query.order_by(VerificationRecord.id.desc()).limit(limit))
            return [verification_view(v) for v in found]

    def _leaving(self, owner: str, name: str) -> bool:
        with session_scope(self.engine) as session:
            found = session.scalars(
                select(WatchRecord.removed).where(
                    WatchRecord.owner == owner, WatchRecord.name == name
                )
            ).first()
            return bool(found)

    def _find(self, session: Session, ref: str, caller: Principal) -> WatchRecord:
        owner, slash, name = ref.rpartition("/")
        if not slash:
            owner = caller.user or ""
        if len(ref) > 200:
            raise NotFound("no such watch")
        row = session.scalars(
            select(WatchRecord).where(
                WatchRecord.owner == owner,
                WatchRecord.name == name,
                WatchRecord.removed.is_(False),
            )
        ).one_or_none()
        if row is None or not caller.owns(row.owner):
            raise NotFound(f"no watch {ref!r}", hint="see `stratus watch list`")
        return row

    def _checked_every(self, every_s: int) -> int:
        if not self.min_every_s <= every_s <= MAX_EVERY_S:
            raise Invalid(
                f"--every {every_s}: between {self.min_every_s} and {MAX_EVERY_S} seconds",
                hint="a push hook wakes a watch at once; polling is the fallback",
            )
        return every_s


def purge(session: Session, watch_id: str) -> None:
    """Delete a watch and everything it keeps (its pending notifications included)."""
    for model in (NotificationRecord, VerificationRecord, WatchBranchRecord):
        session.execute(delete(model).where(model.watch_id == watch_id))
    session.execute(delete(WatchRecord).where(WatchRecord.id == watch_id))


def view(row: WatchRecord, branches: Sequence[WatchBranchRecord]) -> dict[str, Any]:
    """A watch as its owner reads it (its secret and deploy key never)."""
    known = {b.branch: b for b in branches}
    return {
        "id": row.id,
        "name": row.name,
        "owner": row.owner,
        "repository": row.repository,
        "module": row.module,
        "every_s": row.every_s,
        "params": dict(row.params),
        "notify": list(row.notify),
        "keep_running": row.keep_running,
        "mail_every_failure": row.mail_every_failure,
        "forge": {k: v for k, v in row.forge.items() if k != "token"} if row.forge else None,
        "deploy_key": row.deploy_key is not None,
        "paused": row.paused,
        "polled_at": _iso(row.polled_at),
        "poll_error": row.poll_error,
        "created_at": _iso(row.created_at),
        "branches": [_branch_view(name, known.get(name)) for name in row.branches],
    }


def verification_view(v: VerificationRecord) -> dict[str, Any]:
    seconds = None
    if v.started_at and v.ended_at:
        seconds = round((v.ended_at - v.started_at).total_seconds(), 1)
    return {
        "id": v.id,
        "branch": v.branch,
        "commit": v.commit,
        "author": v.author,
        "email": v.email,
        "subject": v.subject,
        "why": v.why,
        "phase": v.phase,
        "verdict": v.verdict,
        "reason": v.reason,
        "node": v.node,
        "run_id": v.run_id,
        "attempt": v.attempt,
        "queued_at": _iso(v.queued_at),
        "started_at": _iso(v.started_at),
        "ended_at": _iso(v.ended_at),
        "seconds": seconds,
    }


def _branch_view(name: str, b: WatchBranchRecord | None) -> dict[str, Any]:
    if b is None:  # not polled yet: the same fields, all empty
        b = WatchBranchRecord(watch_id="", branch=name)
    return {
        "branch": name,
        "head": b.head,
        "verdict": b.verdict,
        "verdict_commit": b.verdict_commit,
        "since": _iso(b.since),
        "since_commit": b.since_commit,
        "broken_by": b.broken_by,
        "last_good": b.last_good,
        "status": status_line(b, utcnow()),
    }


def status_line(b: WatchBranchRecord, now: datetime) -> str:
    """Where a branch stands, in words: "passing since 8e01d44, 3 h", "broken by 3f2a9c1"."""
    if b.verdict is None:
        return "not yet verified"
    age = f", {_age((now - b.since).total_seconds())}" if b.since else ""
    since = (b.since_commit or b.verdict_commit or "")[:7]
    if b.verdict == "passed":
        return f"passing since {since}{age}"
    if b.verdict in ("failed", "invalid"):
        if b.broken_by:
            return f"broken by {b.broken_by[:7]}{age}" + (
                f", last good {b.last_good[:7]}" if b.last_good else ""
            )
        return f"failing since {since}{age}"
    return f"{b.verdict} at {(b.verdict_commit or '')[:7]}"


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{int(seconds)} s"
    if seconds < 5400:
        return f"{int(seconds // 60)} min"
    if seconds < 2 * 86400:
        return f"{int(seconds // 3600)} h"
    return f"{int(seconds // 86400)} days"


def _branches(session: Session, watch_id: str) -> list[WatchBranchRecord]:
    return list(
        session.scalars(select(WatchBranchRecord).where(WatchBranchRecord.watch_id == watch_id))
    )


def _of(owner: str) -> Any:
    return (WatchRecord.owner == owner) & WatchRecord.removed.is_(False)


def _person(caller: Principal) -> str:
    if caller.is_node or not caller.user:
        raise Invalid(f"{caller} may not watch repositories: only a user does")
    return caller.user


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None
