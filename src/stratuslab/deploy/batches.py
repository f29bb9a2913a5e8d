"""Group commit: the same change asked by many threads at once, applied in one transaction.

When a thousand node instances complete a barrier together, a transaction each would spend
most of the server's time beginning, locking the run and committing. Here the first caller
becomes the leader: it takes every item waiting (its own and those that arrived meanwhile),
applies them in one call, hands each caller its own answer, and gives the lead up once its own
item is answered; items that came in during that call form the next batch. A lone caller waits
for nothing: its batch is itself. Each item's answer is its own (an error for one does not
fail the others), unless the whole call fails, which fails the whole batch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

Apply = Callable[[Sequence[T]], Sequence["R | BaseException"]]


class _Slot(Generic[T, R]):
    __slots__ = ("answer", "done", "item")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.answer: R | BaseException | None = None


class GroupCommit(Generic[T, R]):
    def __init__(self, apply: Apply[T, R], *, max_batch: int = 500) -> None:
        self._apply = apply
        self._max = max_batch
        self._cond = threading.Condition()
        self._pending: list[_Slot[T, R]] = []
        self._leading = False

    def __call__(self, item: T) -> R:
        """Apply ``item`` (with whatever else is waiting) and return its answer, or raise its
        error."""
        slot: _Slot[T, R] = _Slot(item)
        with self._cond:
            self._pending.append(slot)
            while self._leading and not slot.done:
                self._cond.wait()
            if slot.done:
                return self._answer(slot)
            self._leading = True
        try:
            while not slot.done:
                with self._cond:
                    batch, self._pending = self._pending[: self._max], self._pending[self._max :]
                answers = self._answers(batch)
                with self._cond:
                    for waiting, answer in zip(batch, answers, strict=True):
                        waiting.answer, waiting.done = answer, True
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._leading = False
                self._cond.notify_all()  # someone still waiting takes the lead
        return self._answer(slot)

    @staticmethod
    def _answer(slot: _Slot[T, R]) -> R:
        if isinstance(slot.answer, BaseException):
            raise slot.answer
        return slot.answer  # type: ignore[return-value]  # done: the answer is an R

    def _answers(self, batch: list[_Slot[T, R]]) -> Sequence[R | BaseException]:
        try:
            answers = self._apply([s.item for s in batch])
        except Exception as exc:  # the whole call failed: so did every item of it
            return [exc] * len(batch)
        if len(answers) != len(batch):
            error = RuntimeError(f"a batch of {len(batch)} got {len(answers)} answers")
            return [error] * len(batch)
        return answers
