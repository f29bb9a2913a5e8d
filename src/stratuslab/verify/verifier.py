"""The verifier: the server's loop that polls watched repositories, starts a run per commit,
reads the verdicts, bisects, and hands what people must be told to the outbox.

One thread ticks once a second; what may take long (a fetch, a checkout and push) runs on the
server's worker pool, one job per watch at a time. Every step is recorded before the next is
taken, so a server that stops carries on where it was: a verification recorded as running
whose run never started is queued again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from stratuslab.db.models import utcnow
from stratuslab.db.session import session_scope
from stratuslab.db.verify_models import VerificationRecord, WatchRecord
from stratuslab.errors import BackendError, Conflict, NotFound, StratusError
from stratuslab.principal import SERVER
from stratuslab.verify import outcomes, runner, schedule
from stratuslab.verify.parts import Mirror, Parts
from stratuslab.verify.values import Phase, Verdict, Why
from stratuslab.verify.watches import purge

log = logging.getLogger(__name__)
TICK_S = 1.0
MAX_JOBS = 4  # fetches and checkouts at once, of all watches
MAX_QUEUED = 100  # commits of one watch waiting to be verified (asked for, or retried)


class Verifier:
    def __init__(self, parts: Parts) -> None:
        self.p = parts
        self._busy: set[str] = set()  # watches with a job on the worker pool
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the loop ----------------------------------------------------------------------------

    def start(self) -> None:
        self._recover()
        self._thread = threading.Thread(target=self._loop, name="verifier", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def active(self) -> bool:
        """Watches to poll or verifications under way: a server with these keeps running."""
        with session_scope(self.p.engine) as session:
            found = session.scalars(
                select(WatchRecord.id).where(WatchRecord.paused.is_(False)).limit(1)
            ).first()
            return found is not None

    def _loop(self) -> None:
        while not self._stop.wait(TICK_S):
            try:
                self.tick()
            except Exception:  # the loop must outlive any one failure; it is logged
                log.exception("the verifier's round failed")

    def tick(self) -> None:
        """One round: conclude what ended, poll what is due, start what is queued, cancel
        what a removal asked, and deliver the notifications that are due."""
        self._conclude_ended()
        for watch_id, job in self._due():
            self._spawn(watch_id, job)
        if self.p.outbox is not None:
            self.p.outbox.deliver_due()

    def _spawn(self, watch_id: str, job: Callable[[str], None]) -> None:
        with self._lock:
            if watch_id in self._busy or len(self._busy) >= MAX_JOBS:
                return  # the next round takes it: the worker pool is the runs' too
            self._busy.add(watch_id)

        def run() -> None:
            try:
                job(watch_id)
            except Exception:
                log.exception("verifier job on watch %s failed", watch_id)
            finally:
                with self._lock:
                    self._busy.discard(watch_id)

        self.p.submit(run)

    def _due(self) -> list[tuple[str, Callable[[str], None]]]:
        """What each watch needs this round, from three reads whatever the number of watches:
        removal to finish, a poll that is due, or a queued commit to start."""
        now = utcnow()
        jobs: list[tuple[str, Callable[[str], None]]] = []
        with session_scope(self.p.engine) as session:
            watches = session.execute(
                select(
                    WatchRecord.id,
                    WatchRecord.removed,
                    WatchRecord.paused,
                    WatchRecord.wake,
                    WatchRecord.polled_at,
                    WatchRecord.every_s,
                )
            ).all()
            running = set(schedule.watches_in(session, Phase.RUNNING))
            queued = set(schedule.watches_in(session, Phase.QUEUED))
        for row in watches:
            if row.removed:
                jobs.append((row.id, self._finish_removal))
            elif row.paused:
                continue
            elif (
                row.wake
                or row.polled_at is None
                or row.polled_at + timedelta(seconds=row.every_s) <= now
            ):
                jobs.append((row.id, self.poll))
            elif row.id in queued and row.id not in running:
                jobs.append((row.id, self.start_next))
        return jobs

    # -- polling -----------------------------------------------------------------------------

    def poll(self, watch_id: str) -> None:
        """Fetch the repository, take each branch's head, then start what that queued."""
        with session_scope(self.p.engine) as session:
            watch = session.get(WatchRecord, watch_id)
            if watch is None or watch.removed:
                return
            watch.wake, watch.polled_at = False, utcnow()
            url, key, branches = watch.repository, watch.deploy_key, list(watch.branches)
        try:
            mirror = self.p.repositories.fetch(url, deploy_key=key)
            heads = mirror.heads(branches)
        except StratusError as exc:
            with session_scope(self.p.engine) as session:
                watch = session.get(WatchRecord, watch_id)
                if watch is not None:
                    watch.poll_error = str(exc)[:2000]
            return
        with session_scope(self.p.engine) as session:
            watch = session.get(WatchRecord, watch_id)
            if watch is None or watch.removed:
                return
            watch.poll_error = None
            for branch in branches:
                schedule.observe(session, watch, branch, heads.get(branch), mirror)
        self.start_next(watch_id, mirror)

    def ask(self, watch: WatchRecord, rev: str | None, branch: str | None) -> dict[str, Any]:
        """Verify one commit now (``stratus watch run``): the branch's head by default."""
        try:
            mirror = self.p.repositories.fetch(watch.repository, deploy_key=watch.deploy_key)
        except BackendError as exc:  # the repository's fault, or its server's: not ours
            raise Conflict(f"the repository cannot be fetched now: {exc}") from None
        branch = branch or watch.branches[0]
        if branch not in watch.branches:
            raise NotFound(f"the watch does not follow branch {branch!r}")
        if rev is None:
            head = mirror.heads([branch]).get(branch)
            if head is None:
                raise NotFound(f"no branch {branch!r} in {watch.repository}")
            rev = head
        commit = mirror.commit(mirror.resolve(rev))
        with session_scope(self.p.engine) as session:
            waiting = session.scalars(
                select(VerificationRecord.id).where(
                    VerificationRecord.watch_id == watch.id,
                    VerificationRecord.phase == Phase.QUEUED.value,
                )
            ).all()
            if len(waiting) >= MAX_QUEUED:
                raise Conflict(
                    f"{len(waiting)} commits of this watch wait to be verified already",
                    hint="wait for them, or pause and resume the watch",
                )
            row = schedule.record(watch.id, branch, commit, Why.ASKED)
            session.add(row)
            session.flush()
            answer = {"id": row.id, "commit": commit.sha, "branch": branch, "phase": row.phase}
        with session_scope(self.p.engine) as session:
            found = session.get(WatchRecord, watch.id)
            if found is not None:
                found.wake = True  # the next round starts it
        return answer

    # -- starting ----------------------------------------------------------------------------

    def start_next(self, watch_id: str, mirror: Mirror | None = None) -> None:
        with session_scope(self.p.engine) as session:
            watch = session.get(WatchRecord, watch_id)
            if watch is None or watch.removed or watch.paused:
                return
            row = schedule.next_for(session, watch_id)
            if row is None:
                return
            row.phase, row.started_at = Phase.RUNNING.value, utcnow()
            job = (row.id, row.commit, row.branch)
            session.expunge(watch)
        verification_id, sha, branch = job
        owner = self.p.principal_of(watch.owner)
        if owner is None:
            self._record(verification_id, runner.Judged(Verdict.ERROR, _GONE, None, None))
            return
        try:
            tree = mirror or self.p.repositories.fetch(
                watch.repository, deploy_key=watch.deploy_key
            )
            started = runner.start(
                tree,
                sha,
                module=watch.module,
                owner=owner,
                modules=self.p.modules,
                runs=self.p.runs,
                params=watch.params,
                keep_running=watch.keep_running,
                tags=[f"watch:{watch.name}"[:200], f"commit:{sha[:12]}", f"branch:{branch}"[:200]],
            )
        except StratusError as exc:
            started = runner.Started(None, Verdict.ERROR, str(exc)[:2000])
        except Exception as exc:  # a bug of ours must not leave it running for ever
            log.exception("verifying %s of watch %s", sha[:12], watch.name)
            started = runner.Started(None, Verdict.ERROR, f"the server failed: {exc}"[:2000])
        if started.run_id is None:
            verdict = started.verdict or Verdict.ERROR
            self._record(verification_id, runner.Judged(verdict, started.reason, None, 0.0))
            return
        with session_scope(self.p.engine) as session:
            row = session.get(VerificationRecord, verification_id)
            found = session.get(WatchRecord, watch_id)
            if row is None or found is None:
                return
            row.run_id = started.run_id
            if self.p.outbox is not None and found.forge:
                self.p.outbox.queue_status(
                    session,
                    found,
                    sha,
                    "pending",
                    target_url=self._run_url(started.run_id),
                    description=f"deploying {found.module} from pristine instances",
                )

    # -- concluding --------------------------------------------------------------------------

    def _conclude_ended(self) -> None:
        with session_scope(self.p.engine) as session:
            running = [
                (v.id, v.run_id, v.watch_id)
                for v in session.scalars(
                    select(VerificationRecord).where(
                        VerificationRecord.phase == Phase.RUNNING.value,
                        VerificationRecord.run_id.is_not(None),
                    )
                )
            ]
            removed = set(session.scalars(select(WatchRecord.id).where(WatchRecord.removed)))
        for verification_id, run_id, watch_id in running:
            assert run_id is not None
            try:
                settled = self.p.runs.settled(run_id)  # one read a round, whatever the run's size
                run = self.p.runs.summary(run_id, caller=SERVER) if settled else None
            except NotFound:
                gone = runner.Judged(Verdict.ERROR, "its run is gone from the store", None, None)
                self._record(verification_id, gone)
                continue
            judged = None
            if run is not None:
                events = self.p.runs.events(run_id, caller=SERVER, kinds=runner.JUDGED_KINDS)
                judged = runner.judge(run, events)
            if judged is None:
                if watch_id in removed:
                    self._cancel(run_id)
                continue
            self._record(verification_id, judged)

    def _cancel(self, run_id: str) -> None:
        """Cancel the run of a removed watch (once: a run already tearing down is left be)."""
        try:
            if self.p.runs.summary(run_id, caller=SERVER)["state"] == "Finalizing":
                return
            self.p.control.terminate(run_id, caller=SERVER)
        except StratusError as exc:
            log.info("cancelling run %s of a removed watch: %s", run_id, exc)

    def _record(self, verification_id: int, judged: runner.Judged) -> None:
        """Record a verdict, and everything it sets in motion, in one transaction; should
        what it sets in motion fail (a bug of ours), the verdict alone, rather than judging
        the same run again every round."""
        try:
            self._record_all(verification_id, judged)
        except Exception:
            log.exception("settling verification %s", verification_id)
            with session_scope(self.p.engine) as session:
                row = session.get(VerificationRecord, verification_id)
                if row is not None:
                    row.phase, row.ended_at = Phase.DONE.value, utcnow()
                    row.verdict, row.reason = judged.verdict.value, judged.reason
                    row.node = judged.node

    def _record_all(self, verification_id: int, judged: runner.Judged) -> None:
        with session_scope(self.p.engine) as session:
            row = session.get(VerificationRecord, verification_id)
            if row is None:
                return
            watch = session.get(WatchRecord, row.watch_id)
            row.phase, row.ended_at = Phase.DONE.value, utcnow()
            row.verdict, row.reason, row.node = judged.verdict.value, judged.reason, judged.node
            if watch is None or watch.removed:
                return
            state = schedule.branch_of(session, watch.id, row.branch)
            previous = Verdict(state.verdict) if state.verdict else None
            # The commit is in the mirror already (it was checked out from it): the verdict is
            # settled on it as it is, whether the repository can be fetched now or not.
            mirror = self.p.repositories.mirror(watch.repository)
            if mirror is None:
                try:
                    mirror = self.p.repositories.fetch(
                        watch.repository, deploy_key=watch.deploy_key
                    )
                except StratusError as exc:
                    log.warning("watch %s: no mirror to settle a verdict: %s", watch.name, exc)
                    return
            found = schedule.settle(session, watch, row, mirror)
            if self.p.outbox is None:
                return
            if judged.verdict is Verdict.ERROR and row.attempt == 1:
                return  # retried once before anybody is told
            if row.why == Why.BISECT.value and found is None:
                return  # a step of a bisect: told once it has named the culprit
            if row.why == Why.BISECT.value and found is not None:
                row = outcomes.culprit_row(session, watch.id, row.branch, found.culprit) or row
                judged = runner.Judged(Verdict(row.verdict or "failed"), row.reason, row.node, None)
            outcome = outcomes.build(
                watch, row, state, previous, judged, found, mirror, links_url=self.p.links_url
            )
            self.p.outbox.queue_outcome(session, watch, outcome, row.id)

    def _run_url(self, run_id: str) -> str:
        return f"{self.p.links_url}/api/runs/{run_id}"

    # -- removal and recovery ------------------------------------------------------------------

    def _finish_removal(self, watch_id: str) -> None:
        with session_scope(self.p.engine) as session:
            if schedule.running(session, watch_id) is None:
                purge(session, watch_id)

    def _recover(self) -> None:
        """A verification a stopped server left running without a run is queued again."""
        with session_scope(self.p.engine) as session:
            for row in session.scalars(
                select(VerificationRecord).where(
                    VerificationRecord.phase == Phase.RUNNING.value,
                    VerificationRecord.run_id.is_(None),
                )
            ):
                row.phase, row.started_at = Phase.QUEUED.value, None


_GONE = "the watch's owner no longer exists or is disabled"
