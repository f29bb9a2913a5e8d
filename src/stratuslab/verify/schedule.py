"""Which commit is verified next, and what a verdict sets in motion.

The rules (docs/architecture.md, "Continuous verification"):

- A branch's new head is queued; commits it brings that nobody verified are *held*. A held or
  queued commit that a newer head passes over stays held: the newest is verified first.
- The newest passes: the held commits before it are skipped (nothing to learn from them).
- The newest fails after a commit that passed: the held commits between them are bisected in
  git's own order (``git rev-list --bisect``) until the first failing one is named; an
  ``error`` verdict (the infrastructure's fault) is retried once, then skipped by the bisect.
- A forced push that rewrites history drops what is no longer on the branch.

Everything here runs inside the caller's transaction, on records and a fetched mirror.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from stratuslab.db.models import utcnow
from stratuslab.db.verify_models import (
    NotificationRecord,
    VerificationRecord,
    WatchBranchRecord,
    WatchRecord,
)
from stratuslab.verify.values import Commit, Phase, Verdict, Why

MAX_HELD = 200  # commits one push may bring that are kept for a bisect
MAX_KEPT = 5000  # verifications of one watch kept in its history


class History(Protocol):
    """What the schedule asks of a fetched repository (``verify/git.py``'s Mirror)."""

    def commit(self, sha: str) -> Commit: ...

    def between(self, good: str | None, bad: str, *, limit: int = 1000) -> list[Commit]: ...

    def is_ancestor(self, ancestor: str, descendant: str) -> bool: ...

    def bisect_next(
        self, good: Sequence[str], bad: str, *, skip: Sequence[str] = ()
    ) -> str | None: ...


@dataclass(frozen=True)
class BisectResult:
    culprit: str  # the first failing commit
    last_good: str
    runs: int  # bisect verifications it took


def branch_of(session: Session, watch_id: str, branch: str) -> WatchBranchRecord:
    found = session.get(WatchBranchRecord, (watch_id, branch))
    if found is None:
        found = WatchBranchRecord(watch_id=watch_id, branch=branch)
        session.add(found)
    return found


def observe(
    session: Session, watch: WatchRecord, branch: str, head: str | None, repo: History
) -> list[VerificationRecord]:
    """Take a branch's head as just fetched: queue it if it is new, hold what it brings. The
    answer is what was queued."""
    state = branch_of(session, watch.id, branch)
    if head is None:  # the branch is gone: nothing of it is verified any more
        if state.head is not None:
            _drop(session, watch.id, branch, "the branch was deleted")
        state.head = None
        return []
    if state.head == head:
        return []
    previous, state.head = state.head, head
    if previous is not None and repo.is_ancestor(previous, head):
        brought = repo.between(previous, head, limit=MAX_HELD)
    else:
        if previous is not None:  # a forced push: what it removed is not verified
            _drop_unreachable(session, watch.id, branch, head, repo)
        brought = [repo.commit(head)]
    known = set(
        session.scalars(
            select(VerificationRecord.commit).where(
                VerificationRecord.watch_id == watch.id, VerificationRecord.branch == branch
            )
        )
    )
    # What was queued and not started is passed over: the newest is verified first.
    session.execute(
        update(VerificationRecord)
        .where(
            VerificationRecord.watch_id == watch.id,
            VerificationRecord.branch == branch,
            VerificationRecord.phase == Phase.QUEUED.value,
            VerificationRecord.why == Why.NEWEST.value,
        )
        .values(phase=Phase.HELD.value)
    )
    queued: list[VerificationRecord] = []
    for commit in reversed(brought):  # oldest first: ids grow with the history
        if commit.sha in known:
            continue
        newest = commit.sha == head
        row = record(watch.id, branch, commit, Why.NEWEST if newest else Why.SKIPPED)
        row.phase = (Phase.QUEUED if newest else Phase.HELD).value
        session.add(row)
        if newest:
            queued.append(row)
    if head in known:  # seen before (a branch reset to an older commit): verify it again
        row = record(watch.id, branch, repo.commit(head), Why.NEWEST)
        session.add(row)
        queued.append(row)
    session.flush()
    _prune(session, watch.id)
    return queued


def _prune(session: Session, watch_id: str) -> None:
    """Keep a watch's history bounded: past MAX_KEPT, the oldest settled ones go, with the
    notifications that told of them."""
    settled = (Phase.DONE.value, Phase.SKIPPED.value)
    ids = session.scalars(
        select(VerificationRecord.id)
        .where(VerificationRecord.watch_id == watch_id, VerificationRecord.phase.in_(settled))
        .order_by(VerificationRecord.id.desc())
        .offset(MAX_KEPT)
    ).all()
    if ids:
        session.execute(delete(VerificationRecord).where(VerificationRecord.id.in_(ids)))
        # What was sent of them goes with them; what is still to send is not lost.
        session.execute(
            delete(NotificationRecord).where(
                NotificationRecord.verification_id.in_(ids), NotificationRecord.state != "pending"
            )
        )


def record(
    watch_id: str, branch: str, commit: Commit, why: Why, attempt: int = 1
) -> VerificationRecord:
    return VerificationRecord(
        watch_id=watch_id,
        branch=branch,
        commit=commit.sha,
        author=commit.author[:255],
        email=commit.email[:255],
        subject=commit.subject[:255],
        committed_at=commit.when,
        why=why.value,
        phase=Phase.QUEUED.value,
        attempt=attempt,
    )


def watches_in(session: Session, phase: Phase) -> list[str]:
    """The watches with a verification in ``phase``."""
    query = select(VerificationRecord.watch_id).where(VerificationRecord.phase == phase.value)
    return list(session.scalars(query.distinct()))


def running(session: Session, watch_id: str) -> int | None:
    """The watch's verification under way (its id), if one is."""
    found: int | None = session.scalars(
        select(VerificationRecord.id).where(
            VerificationRecord.watch_id == watch_id,
            VerificationRecord.phase == Phase.RUNNING.value,
        )
    ).first()
    return found


def next_for(session: Session, watch_id: str) -> VerificationRecord | None:
    """The verification to start for a watch: none while one runs; else the newest queued."""
    if running(session, watch_id) is not None:
        return None
    return session.scalars(
        select(VerificationRecord)
        .where(
            VerificationRecord.watch_id == watch_id,
            VerificationRecord.phase == Phase.QUEUED.value,
        )
        .order_by(VerificationRecord.id.desc())
        .limit(1)
    ).first()


def settle(
    session: Session, watch: WatchRecord, done: VerificationRecord, repo: History
) -> BisectResult | None:
    """What ``done``'s verdict sets in motion: a retry, skips, the next bisect step, and the
    branch's colour. Answers the bisect's result once it has named the first failing commit."""
    verdict = Verdict(done.verdict or Verdict.ERROR.value)
    if verdict is Verdict.ERROR and done.attempt == 1:
        retry = record(watch.id, done.branch, _commit_of(done), Why.RETRY, attempt=2)
        retry.why = done.why if done.why == Why.BISECT.value else Why.RETRY.value
        session.add(retry)
        return None
    state = branch_of(session, watch.id, done.branch)
    if done.why != Why.BISECT.value and _is_newest(state, done, repo):
        _colour(state, done, verdict)
    if verdict is Verdict.PASSED:
        if state.last_good is None or repo.is_ancestor(state.last_good, done.commit):
            state.last_good = done.commit
        _skip_held(session, watch.id, done.branch, before=done.commit, repo=repo)
        if done.why != Why.BISECT.value:
            return None
        return _bisect(session, watch, state, repo)  # a step passed: the break is later
    if done.why == Why.BISECT.value:  # a step failed, or could not tell (skipped)
        return _bisect(session, watch, state, repo)
    if not verdict.bad or state.last_good is None:
        return None
    return _bisect(session, watch, state, repo)


def _bisect(
    session: Session, watch: WatchRecord, state: WatchBranchRecord, repo: History
) -> BisectResult | None:
    """Queue the next commit to bisect, or answer the first failing one."""
    good = state.last_good
    if good is None or state.head is None:
        return None
    rows = list(
        session.scalars(
            select(VerificationRecord).where(
                VerificationRecord.watch_id == watch.id,
                VerificationRecord.branch == state.branch,
            )
        )
    )
    in_range = {c.sha for c in repo.between(good, state.head, limit=MAX_HELD * 4)}
    verdicts: dict[str, str] = {}
    for row in rows:
        if row.commit in in_range and row.phase == Phase.DONE.value and row.verdict:
            verdicts.setdefault(row.commit, row.verdict)
            if row.verdict != Verdict.ERROR.value:
                verdicts[row.commit] = row.verdict
    bad = [sha for sha, v in verdicts.items() if Verdict(v).bad]
    if not bad:
        return None
    if any(
        r.phase in (Phase.QUEUED.value, Phase.RUNNING.value)
        for r in rows
        if r.why == Why.BISECT.value
    ):
        return None  # a step is under way
    first_bad = min(bad, key=lambda sha: len(repo.between(good, sha, limit=MAX_HELD * 4)))
    passed = [sha for sha, v in verdicts.items() if v == Verdict.PASSED.value]
    skipped = [sha for sha, v in verdicts.items() if v in (Verdict.ERROR.value, "cancelled")]
    step = repo.bisect_next([good, *passed], first_bad, skip=skipped)
    if step is None or step == first_bad or step in verdicts:
        held = [r for r in rows if r.phase == Phase.HELD.value and r.commit in in_range]
        for row in held:
            row.phase = Phase.SKIPPED.value
        state.broken_by = first_bad
        runs = sum(1 for r in rows if r.why == Why.BISECT.value and r.phase == Phase.DONE.value)
        return BisectResult(culprit=first_bad, last_good=_last_good(good, passed, repo), runs=runs)
    held_row = next(
        (r for r in rows if r.commit == step and r.phase == Phase.HELD.value),
        None,
    )
    if held_row is not None:
        held_row.phase, held_row.why = Phase.QUEUED.value, Why.BISECT.value
    else:
        session.add(record(watch.id, state.branch, repo.commit(step), Why.BISECT))
    return None


def _last_good(good: str, passed: Sequence[str], repo: History) -> str:
    """The newest commit known to pass before the culprit."""
    best = good
    for sha in passed:
        if repo.is_ancestor(best, sha):
            best = sha
    return best


def _is_newest(state: WatchBranchRecord, done: VerificationRecord, repo: History) -> bool:
    """Whether ``done`` is newer than the commit the branch's colour was taken at."""
    if state.verdict_commit is None or state.verdict_commit == done.commit:
        return True
    return repo.is_ancestor(state.verdict_commit, done.commit) or not repo.is_ancestor(
        done.commit, state.verdict_commit
    )


def _colour(state: WatchBranchRecord, done: VerificationRecord, verdict: Verdict) -> None:
    if verdict not in (Verdict.PASSED, Verdict.FAILED, Verdict.INVALID):
        return  # an error or a cancellation says nothing of the commit
    was_bad = Verdict(state.verdict).bad if state.verdict else None
    if was_bad is None or was_bad != verdict.bad:
        state.since, state.since_commit = utcnow(), done.commit
        state.broken_by = None
    state.verdict, state.verdict_commit = verdict.value, done.commit


def _skip_held(session: Session, watch_id: str, branch: str, *, before: str, repo: History) -> None:
    for row in session.scalars(
        select(VerificationRecord).where(
            VerificationRecord.watch_id == watch_id,
            VerificationRecord.branch == branch,
            VerificationRecord.phase == Phase.HELD.value,
        )
    ):
        if repo.is_ancestor(row.commit, before):
            row.phase = Phase.SKIPPED.value


def _drop(session: Session, watch_id: str, branch: str, why: str) -> None:
    session.execute(
        update(VerificationRecord)
        .where(
            VerificationRecord.watch_id == watch_id,
            VerificationRecord.branch == branch,
            VerificationRecord.phase.in_((Phase.QUEUED.value, Phase.HELD.value)),
        )
        .values(phase=Phase.SKIPPED.value, reason=why, ended_at=utcnow())
    )


def _drop_unreachable(
    session: Session, watch_id: str, branch: str, head: str, repo: History
) -> None:
    for row in session.scalars(
        select(VerificationRecord).where(
            VerificationRecord.watch_id == watch_id,
            VerificationRecord.branch == branch,
            VerificationRecord.phase.in_((Phase.QUEUED.value, Phase.HELD.value)),
        )
    ):
        if not repo.is_ancestor(row.commit, head):
            row.phase, row.reason = Phase.SKIPPED.value, "history was rewritten (a forced push)"
    state = session.get(WatchBranchRecord, (watch_id, branch))
    if state is not None and state.last_good and not repo.is_ancestor(state.last_good, head):
        state.last_good = None  # no longer on the branch: nothing to bisect from


def _commit_of(row: VerificationRecord) -> Commit:
    return Commit(
        sha=row.commit,
        author=row.author,
        email=row.email,
        subject=row.subject,
        when=row.committed_at or utcnow(),
    )
