"""Group commit: many callers at once, each with its own answer, applied in few calls."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from stratuslab.deploy.batches import GroupCommit


class Recorder:
    """An apply function that records its batches; while ``gate`` is closed it holds the
    first call, so that callers pile up behind it."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.entered = threading.Event()

    def __call__(self, items: Sequence[int]) -> list[int | BaseException]:
        self.entered.set()
        self.gate.wait(10)
        self.batches.append(list(items))
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]


def test_a_lone_caller_is_its_own_batch() -> None:
    recorder = Recorder()
    recorder.gate.set()
    group: GroupCommit[int, int] = GroupCommit(recorder)
    assert group(4) == 40
    with pytest.raises(ValueError, match="odd 3"):
        group(3)
    assert recorder.batches == [[4], [3]]


def test_callers_that_pile_up_are_applied_together_each_with_its_own_answer() -> None:
    recorder = Recorder()
    group: GroupCommit[int, int] = GroupCommit(recorder)
    first = threading.Thread(target=group, args=(0,))
    first.start()
    assert recorder.entered.wait(5)  # the leader is inside apply, holding the gate
    answers: dict[int, object] = {}

    def one(item: int) -> None:
        try:
            answers[item] = group(item)
        except ValueError as exc:
            answers[item] = str(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(1, 41)]
    for thread in threads:
        thread.start()
    while len(group._pending) < 40:  # every one of them waits behind the leader
        threading.Event().wait(0.01)
    recorder.gate.set()
    for thread in [first, *threads]:
        thread.join(10)
    assert answers == {i: (f"odd {i}" if i % 2 else i * 10) for i in range(1, 41)}
    assert recorder.batches == [[0], list(range(1, 41))]  # two calls for 41 items


def test_a_failing_call_fails_its_batch_and_the_next_callers_still_get_through() -> None:
    calls = {"n": 0}

    def apply(items: Sequence[int]) -> list[int | BaseException]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("the store went away")
        return list(items)

    group: GroupCommit[int, int] = GroupCommit(apply)
    with pytest.raises(RuntimeError, match="the store went away"):
        group(1)
    assert group(2) == 2


def test_batches_are_bounded() -> None:
    recorder = Recorder()
    group: GroupCommit[int, int] = GroupCommit(recorder, max_batch=7)
    first = threading.Thread(target=group, args=(0,))
    first.start()
    assert recorder.entered.wait(5)
    threads = [threading.Thread(target=group, args=(i * 2,)) for i in range(1, 21)]
    for thread in threads:
        thread.start()
    while len(group._pending) < 20:
        threading.Event().wait(0.01)
    recorder.gate.set()
    for thread in [first, *threads]:
        thread.join(10)
    assert all(len(batch) <= 7 for batch in recorder.batches)
    assert sorted(i for batch in recorder.batches for i in batch) == [i * 2 for i in range(21)]
