"""Work a run needs done in the background, asked for by whoever notices it.

The run control asks for a teardown when a run enters Finalizing, the run service for the
provisioning of a new run, scaling for a shrink; the supervisor's thread takes each item the
moment it is asked for and hands it to the orchestrator. A queue rather than a call keeps the
state machine free of the orchestrator (which itself reports to the state machine), and work
asked for in a transaction is asked only once it has committed.
"""

from __future__ import annotations

import queue
from enum import StrEnum


class Work(StrEnum):
    PROVISION = "provision"  # create the instances of node instances that have none
    SHRINK = "shrink"  # destroy the machines of node instances removed from a scalable run
    TEARDOWN = "teardown"  # destroy every instance of a run in Finalizing, then end it


class WorkQueue:
    def __init__(self) -> None:
        self._items: queue.SimpleQueue[tuple[str, Work]] = queue.SimpleQueue()

    def ask(self, run_id: str, work: Work) -> None:
        self._items.put((run_id, work))

    def take(self, timeout: float) -> tuple[str, Work] | None:
        """The next item, waiting up to ``timeout`` seconds for one."""
        try:
            return self._items.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return None
