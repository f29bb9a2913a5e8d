"""Attaches racing for one volume, on SQLite and PostgreSQL: read-write, exactly one wins and
the other is told where the volume went; read-only, every reader gets it and then no writer
does."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy.engine import Engine

from stratuslab.cloud.clouds import ConnectorPool
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.errors import Conflict
from tests.api import conftest as both_stores
from tests.cloud.volume_support import GiB, instance, service

store = both_stores.store  # these tests run on SQLite and on PostgreSQL


def race(
    engine: Engine, pool: ConnectorPool, targets: list[str], *, read_only: bool
) -> tuple[list[str], list[str]]:
    """Attach alice/data to each of ``targets`` at once: who won, and what the others heard."""
    gate = threading.Barrier(len(targets))
    won: list[str] = []
    lost: list[str] = []

    def attach(target: str) -> None:
        volumes = service(engine, pool, "alice")  # one service per request, as the API makes
        gate.wait()
        try:
            volumes.attach("data", target, read_only=read_only)
            won.append(target)
        except Conflict as exc:
            lost.append(exc.message)
        except Exception as exc:  # any other failure fails the test, saying what it was
            lost.append(repr(exc))

    threads = [threading.Thread(target=attach, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return won, lost


def test_two_attaches_racing_read_write_one_wins_the_other_is_told_where_it_is(
    engine: Engine, pool: ConnectorPool, fake: FakeConnector
) -> None:
    alice = service(engine, pool, "alice")
    data = alice.create("data", size_bytes=GiB)
    one, two = instance(alice), instance(alice)
    for _ in range(5):  # each round a fresh race
        won, lost = race(engine, pool, [one.id, two.id], read_only=False)
        assert len(won) == 1, lost
        (winner,) = won
        (refusal,) = lost
        assert refusal.startswith(f"volume alice/data is attached to {winner} at /mnt/data")
        assert "a volume attached read-write is attached nowhere else" in refusal
        (attachment,) = alice.get("data").attachments
        assert (attachment.instance, attachment.state) == (winner, "attached")
        loser = two if winner == one.id else one
        assert list(fake.ex_mounts(loser.name)) == []  # the loser's backend was never asked
        assert list(fake.ex_mounts(next(v.name for v in (one, two) if v.id == winner))) == [
            f"stratus-{data.id}"
        ]
        alice.detach("data", winner)


def test_readers_share_a_volume_and_then_no_writer_gets_it(
    engine: Engine, pool: ConnectorPool, fake: FakeConnector
) -> None:
    alice = service(engine, pool, "alice")
    alice.create("data", size_bytes=GiB)
    readers = [instance(alice).id for _ in range(4)]
    won, lost = race(engine, pool, readers, read_only=True)
    assert sorted(won) == sorted(readers) and lost == []
    assert len(alice.get("data").attachments) == 4
    with pytest.raises(Conflict, match=r"attached to .* \(read-only\)"):
        alice.attach("data", instance(alice).id)
