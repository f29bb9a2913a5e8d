from __future__ import annotations

import asyncio
import threading
import time

from stratuslab.hub import Hub


def test_since_returns_only_matching_newer_events_in_order() -> None:
    hub = Hub()
    first = hub.publish("a", {"n": 1})
    hub.publish("b", {"n": 2})
    hub.publish("a", {"n": 3})
    assert [e.payload["n"] for e in hub.since(0, ["a"])] == [1, 3]
    assert [e.payload["n"] for e in hub.since(first, ["a"])] == [3]
    assert [e.topic for e in hub.since(0, prefixes=["b"])] == ["b"]


def test_an_async_waiter_wakes_as_soon_as_its_topic_is_published() -> None:
    hub = Hub()

    async def scenario() -> tuple[list[str], float]:
        seq = hub.seq
        threading.Timer(0.05, hub.publish, args=("other", {})).start()
        threading.Timer(0.1, hub.publish, args=("mine", {"v": "x"})).start()
        started = time.monotonic()
        events = await hub.wait(seq, topics=["mine"], timeout=5)
        return [e.topic for e in events], time.monotonic() - started

    topics, waited = asyncio.run(scenario())
    assert topics == ["mine"]
    assert 0.08 < waited < 1.0


def test_a_waiter_times_out_empty_handed() -> None:
    hub = Hub()
    assert asyncio.run(hub.wait(hub.seq, topics=["x"], timeout=0.05)) == []
    assert hub.wait_blocking(hub.seq, topics=["x"], timeout=0.05) == []


def test_a_thread_waiter_sees_an_event_published_from_another_thread() -> None:
    hub = Hub()
    seq = hub.seq
    threading.Timer(0.05, hub.publish, args=("t", {"ok": True})).start()
    events = hub.wait_blocking(seq, topics=["t"], timeout=5)
    assert events and events[0].payload == {"ok": True}


def test_the_log_is_bounded() -> None:
    hub = Hub(keep=3)
    for n in range(10):
        hub.publish("a", {"n": n})
    assert [e.payload["n"] for e in hub.since(0, ["a"])] == [7, 8, 9]
