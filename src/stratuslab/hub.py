"""An in-process event hub: publish from any thread, wait from asyncio or from a thread.

Every event gets a sequence number. A waiter says which topics it cares about and the last
sequence number it has seen, and is woken the moment a matching event is published: this is
what makes a long-poll answer at once instead of at the next polling interval. Events are kept
in a bounded log so that a waiter that was busy for a moment misses nothing recent.

This hub is one process's. With several server processes on one PostgreSQL, ``hub_pg.py``
carries what each publishes to the others' hubs; the interface is the same.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    seq: int
    topic: str
    payload: dict[str, Any]


@dataclass(eq=False)
class _Waiter:
    topics: frozenset[str]
    wake: Callable[[], None]
    prefixes: tuple[str, ...] = field(default=())

    def wants(self, topic: str) -> bool:
        return topic in self.topics or topic.startswith(self.prefixes)


class Hub:
    # Events are kept for waiters busy for a moment between two waits: a few seconds of the
    # busiest storm, not the history (the store has that).
    def __init__(self, *, keep: int = 20_000) -> None:
        self._lock = threading.Lock()
        self._seq = 0
        self._log: deque[Event] = deque(maxlen=keep)
        self._waiters: set[_Waiter] = set()

    @property
    def seq(self) -> int:
        with self._lock:
            return self._seq

    def publish(self, topic: str, payload: dict[str, Any] | None = None) -> int:
        with self._lock:
            self._seq += 1
            self._log.append(Event(self._seq, topic, payload or {}))
            woken = [w for w in self._waiters if w.wants(topic)]
            seq = self._seq
        for waiter in woken:
            waiter.wake()
        return seq

    def publish_many(
        self, items: Iterable[tuple[str, dict[str, Any]]], *, sent: bool = False
    ) -> None:
        """Publish each (topic, payload) in order: what one transaction announces. ``sent``:
        other processes have them already (:meth:`send_within` put them in the transaction),
        so they wake this process's waiters only."""
        for topic, payload in items:
            self.publish(topic, payload)

    def send_within(self, session: Any, items: Sequence[tuple[str, dict[str, Any]]]) -> bool:
        """Put ``items`` in the transaction of ``session`` for other processes, so that they
        arrive if and only if it commits; whether it did. In one process there is nobody
        else: nothing is sent."""
        return False

    def wake_all(self) -> None:
        """Wake every waiter with nothing new: each reads the store again. For when events
        may have been missed (another process's, while the way they come was down)."""
        with self._lock:
            woken = list(self._waiters)
        for waiter in woken:
            waiter.wake()

    def sync(self) -> bool:
        """Whether every event published anywhere before this call is in this hub now. In one
        process, always: publishing is immediate."""
        return True

    def on_remote(self, prefix: str, handler: Callable[[str, dict[str, Any]], None]) -> None:
        """Call ``handler(topic, payload)`` for each event on a topic starting with ``prefix``
        that another process published (none here: there is no other)."""

    def close(self) -> None:
        """Release what carries events between processes (nothing here)."""

    def since(
        self, seq: int, topics: Iterable[str] = (), prefixes: Iterable[str] = ()
    ) -> list[Event]:
        """Events after ``seq`` on ``topics`` (exact) or topics starting with ``prefixes``."""
        wanted, starts = frozenset(topics), tuple(prefixes)
        found = []
        with self._lock:
            for event in reversed(self._log):  # newest first: stop at the first one already seen
                if event.seq <= seq:
                    break
                if event.topic in wanted or event.topic.startswith(starts):
                    found.append(event)
        found.reverse()
        return found

    async def wait(
        self, seq: int, *, topics: Iterable[str] = (), prefixes: Iterable[str] = (), timeout: float
    ) -> list[Event]:
        """Events after ``seq``, waiting up to ``timeout`` seconds for the first one."""
        topics, prefixes = frozenset(topics), tuple(prefixes)
        found = self.since(seq, topics, prefixes)
        if found or timeout <= 0:
            return found
        loop = asyncio.get_running_loop()
        flag = asyncio.Event()

        def wake() -> None:  # called from the publishing thread
            loop.call_soon_threadsafe(flag.set)

        waiter = _Waiter(topics, wake, prefixes)
        with self._lock:
            self._waiters.add(waiter)
        try:
            found = self.since(seq, topics, prefixes)  # published between the check and the add
            if not found:
                try:
                    await asyncio.wait_for(flag.wait(), timeout)
                except TimeoutError:
                    return []
                found = self.since(seq, topics, prefixes)
            return found
        finally:
            with self._lock:
                self._waiters.discard(waiter)

    def wait_blocking(
        self, seq: int, *, topics: Iterable[str] = (), prefixes: Iterable[str] = (), timeout: float
    ) -> list[Event]:
        """The same as :meth:`wait`, for a thread."""
        topics, prefixes = frozenset(topics), tuple(prefixes)
        flag = threading.Event()
        waiter = _Waiter(topics, flag.set, prefixes)
        with self._lock:
            self._waiters.add(waiter)
        try:
            found = self.since(seq, topics, prefixes)
            if not found and flag.wait(timeout):
                found = self.since(seq, topics, prefixes)
            return found
        finally:
            with self._lock:
                self._waiters.discard(waiter)
