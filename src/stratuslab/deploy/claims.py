"""Claims on a run's background work: one server process works on a run at a time.

A claim is recorded on the run (``claimed_by``, ``claimed_until``) and renewed while the work
lasts; a claim that lapsed, or whose process is gone on this host, is taken over at once. With
several servers on one PostgreSQL, this is what keeps two of them from provisioning one run.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.engine import Engine

from stratuslab.db.models import RunRecord, utcnow
from stratuslab.db.session import session_scope

CLAIM = timedelta(seconds=60)  # how long a claim on a run's work lasts unless renewed


class Claims:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.me = f"{socket.gethostname()}:{os.getpid()}:{time.monotonic_ns()}"

    @contextmanager
    def claimed(self, run_id: str) -> Iterator[bool]:
        """Holds the run's claim for the block (True), or yields False when another has it."""
        if not self._claim(run_id):
            yield False
            return
        stop = threading.Event()
        renew = threading.Thread(target=self._renew, args=(run_id, stop), daemon=True)
        renew.start()
        try:
            yield True
        finally:
            stop.set()
            with session_scope(self.engine) as session:
                session.execute(
                    update(RunRecord)
                    .where(RunRecord.id == run_id, RunRecord.claimed_by == self.me)
                    .values(claimed_by=None, claimed_until=None)
                )

    def _claim(self, run_id: str) -> bool:
        now = utcnow()
        with session_scope(self.engine) as session:
            run = session.get(RunRecord, run_id, with_for_update=True)
            if run is None:
                return False
            free = (
                run.claimed_by in (None, self.me)
                or run.claimed_until is None
                or run.claimed_until < now
            )
            if not free and not alive(run.claimed_by or ""):
                free = True  # its server died: no need to wait for the claim to lapse
            if free:
                run.claimed_by, run.claimed_until = self.me, now + CLAIM
            return free

    def _renew(self, run_id: str, stop: threading.Event) -> None:
        while not stop.wait(CLAIM.total_seconds() / 3):
            with session_scope(self.engine) as session:
                session.execute(
                    update(RunRecord)
                    .where(RunRecord.id == run_id, RunRecord.claimed_by == self.me)
                    .values(claimed_until=utcnow() + CLAIM)
                )


def alive(claimant: str) -> bool:
    """Whether the server that made a claim (host:pid:start) still runs. Unknown hosts count as
    alive: only a claim's expiry frees their work."""
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
    return int(pid) != os.getpid()  # our pid in another's claim: a previous process, now gone
