"""The hub across processes on PostgreSQL: what one hub publishes wakes another's waiters.

Two hubs on one database stand for two server processes (each hub has its own connections and
listener, as a process has); one test uses a second real process. The connection drops are
real: the listener's backend is ended with ``pg_terminate_backend``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy

from stratuslab.db.session import engine_for
from stratuslab.hub_pg import MAX_PAYLOAD, PgHub, conninfo
from tests.api.stores import database

pytestmark = pytest.mark.postgres


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    with database("postgresql", tmp_path) as made:
        yield made


@pytest.fixture
def hubs(url: str) -> Iterator[tuple[PgHub, PgHub]]:
    dsn = conninfo(engine_for(url))
    a, b = PgHub(dsn), PgHub(dsn)
    try:
        assert a.wait_listening(10) and b.wait_listening(10)
        yield a, b
    finally:
        a.close()
        b.close()


def test_an_event_published_on_one_reaches_the_waiters_of_the_other(
    hubs: tuple[PgHub, PgHub],
) -> None:
    a, b = hubs
    seq = b.seq
    a.publish("param:r1:db.1:port", {"value": "5432"})
    found = b.wait_blocking(seq, topics=["param:r1:db.1:port"], timeout=10)
    assert [(e.topic, e.payload) for e in found] == [("param:r1:db.1:port", {"value": "5432"})]
    # Its own events come back to nobody twice: the publisher's hub has the event once.
    assert [e.topic for e in a.since(0, prefixes=[""])] == ["param:r1:db.1:port"]


def test_an_asyncio_long_poll_on_one_is_answered_when_the_other_publishes(
    hubs: tuple[PgHub, PgHub],
) -> None:
    a, b = hubs

    async def poll() -> list[str]:
        seq = b.seq
        waiting = asyncio.ensure_future(b.wait(seq, topics=["abort:r2"], timeout=20))
        await asyncio.sleep(0.2)
        await asyncio.to_thread(a.publish_many, [("run:r2", {}), ("abort:r2", {"why": "x"})])
        return [e.topic for e in await waiting]

    assert asyncio.run(poll()) == ["abort:r2"]


def test_a_payload_over_the_limit_arrives_without_it(hubs: tuple[PgHub, PgHub]) -> None:
    a, b = hubs
    seq = b.seq
    a.publish("instance:i-1", {"instance": {"error": "x" * MAX_PAYLOAD}})
    (event,) = b.wait_blocking(seq, topics=["instance:i-1"], timeout=10)
    assert event.payload == {}  # the watch reads the instance from the store instead


def test_a_fence_says_what_was_published_elsewhere_has_arrived(
    hubs: tuple[PgHub, PgHub],
) -> None:
    a, b = hubs
    heard: list[str] = []
    b.on_remote("secret:", lambda topic, _: heard.append(topic))
    a.publish("secret:r3", {})
    assert b.sync() and heard == ["secret:r3"]  # no waiting: the fence came after it


def test_a_dropped_connection_is_survived_and_waiters_are_woken_meanwhile(
    url: str, hubs: tuple[PgHub, PgHub]
) -> None:
    a, b = hubs
    admin = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:  # every other connection to the test database
            ended = conn.exec_driver_sql(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).scalar()
        assert ended and ended >= 2
        # A waiter on b is not left waiting on a dead connection: it is woken, with nothing
        # new, to read the store again, long before its own hour is up.
        woken: list[list[object]] = []
        waiter = threading.Thread(
            target=lambda: woken.append(b.wait_blocking(b.seq, topics=["never"], timeout=3600))
        )
        waiter.start()
        waiter.join(120)
        assert woken == [[]]
        assert b.wait_listening(30) and a.wait_listening(30)
        seq = b.seq
        a.publish("run:r4", {"after": "the drop"})  # the sender reconnects too
        assert [e.payload for e in b.wait_blocking(seq, topics=["run:r4"], timeout=10)] == [
            {"after": "the drop"}
        ]
    finally:
        admin.dispose()


CHILD = """
import sys
from stratuslab.hub_pg import PgHub
hub = PgHub(sys.argv[1])
assert hub.wait_listening(10)
hub.publish("param:r5:web.1:url", {"value": "http://web"})
hub.close()
"""


@pytest.mark.spawns
def test_an_event_crosses_from_another_process(url: str) -> None:
    hub = PgHub(conninfo(engine_for(url)))
    try:
        assert hub.wait_listening(10)
        seq = hub.seq
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
        subprocess.run([sys.executable, "-c", CHILD, hub.dsn], env=env, check=True, timeout=60)
        found = hub.wait_blocking(seq, topics=["param:r5:web.1:url"], timeout=10)
        assert [e.payload for e in found] == [{"value": "http://web"}]
    finally:
        hub.close()


def test_what_a_transaction_announces_arrives_when_it_commits_and_never_if_it_does_not(
    url: str, hubs: tuple[PgHub, PgHub], monkeypatch: pytest.MonkeyPatch
) -> None:
    from stratuslab.deploy.tx import transaction

    a, b = hubs

    def no_sender(texts: list[str]) -> bool:
        raise AssertionError("a transaction's events go in the transaction, not the sender")

    monkeypatch.setattr(a, "_send", no_sender)  # as if its sender connection were broken
    engine = engine_for(url)
    seq = b.seq
    with pytest.raises(RuntimeError), transaction(engine, a) as tx:
        tx.announce("secret:r3", {})
        raise RuntimeError("rolled back")
    with transaction(engine, a) as tx:
        tx.announce("secret:r4", {})
    found = b.wait_blocking(seq, prefixes=["secret:"], timeout=10)
    assert [e.topic for e in found] == ["secret:r4"]  # the rolled-back one never came
    assert [e.topic for e in a.since(0, prefixes=["secret:"])] == ["secret:r4"]  # and here once
