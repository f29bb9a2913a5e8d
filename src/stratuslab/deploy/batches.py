"""Group commit: the same change asked by many callers at once, applied in one transaction.

When a thousand node instances complete a barrier together, a transaction each would spend
most of the server's time beginning, locking the run and committing. Here each change is
handed to one thread of its own kind, which applies whatever has arrived in one call (a lone
change is a batch of one: it waits for nothing) and answers each caller with its own result;
changes that arrive during a call form the next batch. An error for one item does not fail the
others, unless the whole call fails, which fails its batch.

Callers get a ``concurrent.futures.Future``: a thread waits on it (:meth:`GroupCommit.__call__`),
a coroutine awaits it (``asyncio.wrap_future``) without holding a worker thread, so that a
storm of requests costs one thread, not one per request.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

from stratuslab.errors import StratusError

T = TypeVar("T")
R = TypeVar("R")

Apply = Callable[[Sequence[T]], Sequence["R | BaseException"]]
log = logging.getLogger(__name__)


class GroupCommit(Generic[T, R]):
    def __init__(self, apply: Apply[T, R], *, max_batch: int = 500, name: str = "") -> None:
        self._apply = apply
        self._max = max_batch
        self._name = name or getattr(apply, "__name__", "batches")
        self._ready = threading.Condition()
        self._pending: deque[tuple[T, Future[R]]] = deque()
        self._thread: threading.Thread | None = None

    def __call__(self, item: T) -> R:
        """Apply ``item`` (with whatever else is waiting) and return its answer, or raise its
        error."""
        return self.submit(item).result()

    def submit(self, item: T) -> Future[R]:
        """Queue ``item``; the future holds its answer once its batch is applied."""
        future: Future[R] = Future()
        with self._ready:
            self._pending.append((item, future))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name=f"commit-{self._name}", daemon=True
                )
                self._thread.start()
            self._ready.notify()
        return future

    def _loop(self) -> None:
        while True:
            with self._ready:
                while not self._pending:
                    self._ready.wait()
                size = min(self._max, len(self._pending))
                batch = [self._pending.popleft() for _ in range(size)]
            for (_, future), answer in zip(batch, self._answers(batch), strict=True):
                if isinstance(answer, BaseException):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)

    def _answers(self, batch: list[tuple[T, Future[R]]]) -> Sequence[R | BaseException]:
        try:
            answers = self._apply([item for item, _ in batch])
        except Exception as exc:  # the whole call failed: so did every item of it
            if not isinstance(exc, StratusError):
                log.exception("a batch of %d %s failed", len(batch), self._name)
            return [exc] * len(batch)
        if len(answers) != len(batch):
            error = RuntimeError(f"a batch of {len(batch)} got {len(answers)} answers")
            return [error] * len(batch)
        return answers
