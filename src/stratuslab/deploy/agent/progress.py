"""What the agent keeps track of while it works: the run's state, followed in a thread; recipe
output, shipped to the server in a thread; and what it has done in each state, on disk."""

from __future__ import annotations

import time

from .logger import log
from .protocol import BARRIER_STATES, MAX_WAIT

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing; mypy knows the name
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from .client import RunClient

LOG_BATCH = 500  # lines per POST, so one noisy recipe cannot make a huge request


class StateFollower:
    """Follows ``ss:state`` for the agent's whole life, by long-poll, in its own thread.

    ``state`` is the last value seen ('' before the first); a failure that ends the following
    (the server unreachable for longer than the retry period, the token refused) is raised
    again in the thread that waits in :meth:`next_state`.
    """

    def __init__(self, client: RunClient) -> None:
        import threading

        self.state = ""
        self._client = client
        self._error: Exception | None = None
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._follow, name="ss:state", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def next_state(self, seen: str) -> str:
        """Block until ``ss:state`` is something else than ``seen``, and return it."""
        with self._changed:
            self._changed.wait_for(lambda: self._error is not None or self.state != seen)
            if self._error is not None:
                raise self._error
            return self.state

    def _follow(self) -> None:
        try:
            while True:
                value = self._client.poll(
                    "ss:state", wait=MAX_WAIT, differs=self.state or None, ignore_abort=True
                )
                if value is not None:
                    with self._changed:
                        self.state = value
                        self._changed.notify_all()
        except Exception as exc:  # whatever it is, the main thread must hear of it
            with self._changed:
                self._error = exc
                self._changed.notify_all()


class LogShipper:
    """Sends recipe output lines to the server in batches, every half second, in a thread.

    Losing output is better than stalling a run, so a batch the server refuses is dropped
    (and said so in agent.log); the log files keep every line in any case.
    """

    def __init__(self, client: RunClient) -> None:
        import threading

        self._client = client
        self._pending: list[dict[str, Any]] = []
        self._sending = False
        self._cond = threading.Condition()
        threading.Thread(target=self._loop, name="log shipper", daemon=True).start()

    def add(self, line: dict[str, Any]) -> None:
        with self._cond:
            self._pending.append(line)

    def flush(self, timeout: float = 30) -> None:
        """Wait until every line added so far has been sent (or ``timeout`` passed)."""
        with self._cond:
            self._cond.wait_for(lambda: not self._pending and not self._sending, timeout)

    def _loop(self) -> None:
        while True:
            time.sleep(0.5)
            with self._cond:
                batch, self._pending = self._pending, []
                self._sending = bool(batch)
            for start in range(0, len(batch), LOG_BATCH):
                try:
                    self._client.send_logs(batch[start : start + LOG_BATCH])
                except Exception as exc:  # the shipper must outlive any one failure
                    log.warning("recipe output not sent: %s", exc)
            with self._cond:
                self._sending = False
                self._cond.notify_all()


class Markers:
    """What this node instance has done in each state of the run, kept on disk.

    A scalable run goes round Provisioning -> ... -> Ready once per scale action: each round is
    a cycle. The file ``<cycle>-<State>`` records that the state was handled, and holds
    ``complete`` while the agent still owes the server a ``complete`` for it, ``completed``
    once posted, or ``done`` when it posts none (a failed Executing). A restarted agent thus
    neither repeats a state nor forgets to complete it.
    """

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._dir = directory
        handled = [
            (int(cycle), BARRIER_STATES.index(state))
            for cycle, _, state in (path.name.partition("-") for path in directory.iterdir())
            if cycle.isdigit() and state in BARRIER_STATES
        ]
        self.cycle, last = max(handled, default=(0, -1))
        self.last = BARRIER_STATES[last] if last >= 0 else ""

    def begin(self, state: str) -> bool:
        """Whether ``state`` is new to this agent (then it becomes the current one). A state
        earlier in the round than the last one handled starts a new cycle."""
        if state == self.last:
            return False
        if not self.last or BARRIER_STATES.index(state) < BARRIER_STATES.index(self.last):
            self.cycle += 1
        self.last = state
        return True

    def record(self, state: str, status: str) -> None:
        (self._dir / f"{self.cycle}-{state}").write_text(status, encoding="utf-8")

    def status(self, state: str) -> str:
        try:
            return (self._dir / f"{self.cycle}-{state}").read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""

    def executed_before(self) -> bool:
        """Whether an earlier cycle went through Executing (scaling hooks, not recipes, then)."""
        return any((self._dir / f"{cycle}-Executing").exists() for cycle in range(1, self.cycle))
