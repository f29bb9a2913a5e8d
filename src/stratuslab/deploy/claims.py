"""Claims on a run's background work: one server process works on a run at a time.

A claim is recorded on the run (``claimed_by``, ``claimed_until``): a lease, renewed at a
third of its length while the work lasts. Taking one locks the run's row with
``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so that a run another process is claiming at this
moment is skipped rather than waited for (the next supervision round asks again). Every
process also beats in ``servers`` every few seconds: a claim is free once its lease ran out,
once its server's heartbeat is older than a lease (on any host), or at once when its process
is gone on this host. With several servers on one PostgreSQL, this is what keeps two of them
from provisioning one run, and what lets a survivor carry on the runs of one that died.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine

from stratuslab.db.models import RunRecord, ServerRecord, utcnow
from stratuslab.db.session import session_scope

log = logging.getLogger(__name__)
LEASE = timedelta(seconds=60)  # the default lease (setting claim_lease_s)
BEAT_EVERY = 5.0  # seconds between heartbeats, at most (a third of a shorter lease)
FORGET_AFTER = 20  # leases after which a silent server's row is deleted


class Claims:
    def __init__(self, engine: Engine, *, lease: timedelta = LEASE) -> None:
        self.engine = engine
        self.lease = lease
        self.me = f"{socket.gethostname()}:{os.getpid()}:{time.monotonic_ns()}"
        with _STARTS_LOCK:
            _STARTS.add(self.me)
        self.beat_every = min(BEAT_EVERY, lease.total_seconds() / 3)
        self._stop = threading.Event()
        self._beating: threading.Thread | None = None
        self._held: set[str] = set()  # runs whose claim this process holds, renewed
        self._held_lock = threading.Lock()

    # -- heartbeats -----------------------------------------------------------------------

    def start(self) -> None:
        """Beat now, then every few seconds until :meth:`stop`."""
        self.beat()
        self._beating = threading.Thread(target=self._beat_loop, name="heartbeat", daemon=True)
        self._beating.start()

    def stop(self) -> None:
        """Stop beating and leave the table: this process's claims are free at once."""
        self._stop.set()
        if self._beating is not None:
            self._beating.join(timeout=5)
        try:
            with session_scope(self.engine) as session:
                session.execute(delete(ServerRecord).where(ServerRecord.id == self.me))
        except Exception:  # the store may be gone: the heartbeat then simply ages
            log.warning("could not remove this server's heartbeat", exc_info=True)

    def beat(self) -> None:
        now = utcnow()
        with session_scope(self.engine) as session:
            found = session.get(ServerRecord, self.me)
            if found is None:
                host, pid = self.me.split(":")[:2]
                session.add(ServerRecord(id=self.me, host=host, pid=int(pid), started_at=now))
            else:
                found.seen_at = now
            session.execute(
                delete(ServerRecord).where(ServerRecord.seen_at < now - self.lease * FORGET_AFTER)
            )

    def _beat_loop(self) -> None:
        while not self._stop.wait(self.beat_every):
            try:
                self.beat()
            except Exception:  # the store away for a moment: beat again next time
                log.warning("heartbeat failed", exc_info=True)

    # -- claims ---------------------------------------------------------------------------

    @contextmanager
    def claimed(self, run_id: str) -> Iterator[bool]:
        """Holds the run's claim for the block (True), or yields False when another has it."""
        if not self._claim(run_id):
            yield False
            return
        with self._held_lock:
            self._held.add(run_id)
        stop = threading.Event()
        renew = threading.Thread(target=self._renew, args=(run_id, stop), daemon=True)
        renew.start()
        try:
            yield True
        finally:
            stop.set()
            with self._held_lock:
                self._held.discard(run_id)
            with session_scope(self.engine) as session:
                session.execute(
                    update(RunRecord)
                    .where(RunRecord.id == run_id, RunRecord.claimed_by == self.me)
                    .values(claimed_by=None, claimed_until=None)
                )

    def holds(self, run_id: str) -> bool:
        """Whether this process still holds the claim on ``run_id``: false once a renewal
        found another process's name on it (this one stalled past its lease, or was cut off
        from the store), so that a job stops before its next backend call instead of making
        what the new holder makes too."""
        with self._held_lock:
            return run_id in self._held

    def _claim(self, run_id: str) -> bool:
        now = utcnow()
        with session_scope(self.engine) as session:
            run = session.scalars(
                select(RunRecord)
                .where(RunRecord.id == run_id)
                .with_for_update(skip_locked=True)  # another process claiming it now: skip
            ).one_or_none()
            if run is None:
                return False
            holder = run.claimed_by
            free = (
                holder in (None, self.me)
                or run.claimed_until is None
                or run.claimed_until < now
                or not alive(holder or "")  # its process is gone from this host
                or self._silent(session.get(ServerRecord, holder), now)
            )
            if free:
                if holder not in (None, self.me):
                    log.info("run %s: taking over the claim of %s", run_id, holder)
                run.claimed_by, run.claimed_until = self.me, now + self.lease
            return free

    def _silent(self, server: ServerRecord | None, now: datetime) -> bool:
        """Whether a claim's server stopped beating: no row (it left, or never beat: a claim
        older than heartbeats is left to its lease) or a heartbeat older than a lease."""
        return server is not None and server.seen_at < now - self.lease

    def _renew(self, run_id: str, stop: threading.Event) -> None:
        while not stop.wait(self.lease.total_seconds() / 3):
            try:
                with session_scope(self.engine) as session:
                    renewed = (
                        session.connection()
                        .execute(
                            update(RunRecord)
                            .where(RunRecord.id == run_id, RunRecord.claimed_by == self.me)
                            .values(claimed_until=utcnow() + self.lease)
                        )
                        .rowcount
                    )
                if not renewed:  # taken over while this process was stalled or cut off
                    log.warning("run %s: the claim was taken over; stopping its work", run_id)
                    with self._held_lock:
                        self._held.discard(run_id)
                    return
            except Exception:  # the store away for a moment: renew again next time
                log.warning("renewing the claim on run %s failed", run_id, exc_info=True)


def alive(claimant: str) -> bool:
    """Whether the server that made a claim (host:pid:start) still runs. Unknown hosts count as
    alive: only their heartbeat or the claim's expiry frees their work."""
    host, _, rest = claimant.partition(":")
    if host != socket.gethostname():
        return True
    pid = rest.partition(":")[0]
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    if int(pid) == os.getpid():  # our pid: one of ours, or a previous process's, now gone
        return _ours(claimant)
    return True


_STARTS: set[str] = set()  # the ids of this process's Claims objects (tests make several)
_STARTS_LOCK = threading.Lock()


def _ours(claimant: str) -> bool:
    with _STARTS_LOCK:
        return claimant in _STARTS
