"""A batch of requests (a run's node instances): checked together against one reading of
each cloud, recorded together, each refused on its own merits."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import event, select
from sqlalchemy.engine import Engine

from stratuslab.cloud.base import Capacity, Image
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.cloud.instances import InstanceService, Prepared, RunRequest
from stratuslab.db.models import InstanceRecord
from stratuslab.db.session import session_scope
from stratuslab.errors import BackendError, CapacityExceeded, Conflict, Invalid, NotFound

Calls = dict[str, int]


@pytest.fixture
def calls(fake: FakeConnector, monkeypatch: pytest.MonkeyPatch) -> Calls:
    """How often the backend is asked for its capacity and images."""
    counted: Calls = {"capacity": 0, "get_image": 0}
    capacity, get_image = fake.capacity, fake.get_image

    def counting_capacity() -> Capacity:
        counted["capacity"] += 1
        return capacity()

    def counting_get_image(name: str) -> Image:
        counted["get_image"] += 1
        return get_image(name)

    monkeypatch.setattr(fake, "capacity", counting_capacity)
    monkeypatch.setattr(fake, "get_image", counting_get_image)
    return counted


@pytest.fixture
def service(engine: Engine, fake: FakeConnector) -> Iterator[InstanceService]:
    # The connector the test counts on, for the cloud it recorded; others are unknown.
    def connectors(cloud: str) -> FakeConnector:
        if cloud != "local":
            raise NotFound(f"no cloud called {cloud!r} is recorded")
        return fake

    yield InstanceService(engine, owner="alice", connectors=connectors, name_prefix="test")


def node(n: int, **extra: object) -> RunRequest:
    fields: dict[str, object] = {
        "image": "debian-12",
        "name": f"r1-web-{n}",
        "run_id": "r1",
        "node_instance": f"web.{n}",
        "user_data": f"#!/bin/sh\necho node {n}\n",
        **extra,
    }
    return RunRequest(**fields)  # type: ignore[arg-type]


def records(engine: Engine) -> list[tuple[str, str]]:
    with session_scope(engine) as session:
        rows = session.scalars(select(InstanceRecord).order_by(InstanceRecord.name))
        return [(row.name, row.state) for row in rows]


def test_a_batch_reads_capacity_and_each_image_once_and_records_in_one_transaction(
    service: InstanceService, engine: Engine, calls: Calls
) -> None:
    log: list[str] = []
    event.listen(
        engine,
        "before_cursor_execute",
        lambda _c, _cur, statement, *_: (
            log.append("insert") if statement.startswith("INSERT INTO instances") else None
        ),
    )
    event.listen(engine, "commit", lambda _conn: log.append("commit"))
    outcomes = service.prepare_many([node(n) for n in (1, 2, 3, 4, 5)])
    assert all(isinstance(o, Prepared) for o in outcomes)
    assert calls == {"capacity": 1, "get_image": 1}
    first, last = log.index("insert"), len(log) - 1 - log[::-1].index("insert")
    assert "commit" not in log[first:last]  # every record written in one transaction
    assert log[last:].count("commit") == 1
    assert records(engine) == [(f"r1-web-{n}", "pending") for n in (1, 2, 3, 4, 5)]
    prepared = [o for o in outcomes if isinstance(o, Prepared)]
    assert [p.views[0].node_instance for p in prepared] == [f"web.{n}" for n in (1, 2, 3, 4, 5)]
    assert prepared[2].user_data == "#!/bin/sh\necho node 3\n"


def test_a_request_that_fails_its_checks_is_refused_alone(
    service: InstanceService, engine: Engine
) -> None:
    outcomes = service.prepare_many(
        [
            node(1),
            node(2, name="Bad_Name"),
            node(3, user_data="echo no shebang"),
            node(4, image="no-such-image"),
            node(5, cloud="elsewhere"),
            node(6, ram_mb=10),
            node(7),
        ]
    )
    kinds = [type(o).__name__ for o in outcomes]
    assert kinds == [
        "Prepared",
        "Invalid",
        "Invalid",
        "NotFound",
        "NotFound",
        "Invalid",
        "Prepared",
    ]
    assert "no image called 'no-such-image'" in str(outcomes[3])
    assert "elsewhere" in str(outcomes[4])
    assert records(engine) == [("r1-web-1", "pending"), ("r1-web-7", "pending")]


def test_names_taken_by_a_live_instance_or_earlier_in_the_batch_are_refused(
    service: InstanceService, engine: Engine
) -> None:
    service.prepare(RunRequest(image="debian-12", name="taken"))
    first, again, clash, fine = service.prepare_many(
        [
            RunRequest(image="debian-12", name="twice"),
            RunRequest(image="debian-12", name="twice"),
            RunRequest(image="debian-12", name="taken"),
            RunRequest(image="debian-12"),
        ]
    )
    assert isinstance(first, Prepared) and isinstance(fine, Prepared)
    assert isinstance(again, Conflict) and "'twice' already exists" in str(again)
    assert isinstance(clash, Conflict) and "'taken' already exists" in str(clash)


def test_the_batch_total_is_checked_against_what_is_free(
    service: InstanceService, engine: Engine
) -> None:
    """Each of these fits alone on the fake's 16 GiB (512 MiB kept for the host); together
    they do not, and every request of the batch is refused, saying how much and how free."""
    outcomes = service.prepare_many(
        [node(1, ram_mb=6000), node(2, ram_mb=6000), node(3, ram_mb=4000), node(4, name="Bad")]
    )
    assert isinstance(outcomes[3], Invalid)
    refusals = outcomes[:3]
    assert all(isinstance(o, CapacityExceeded) for o in refusals)
    assert str(refusals[0]).startswith(
        "not enough capacity: 1 x 4000 MiB + 2 x 6000 MiB of memory asked (16000 MiB in all), "
        "15872 MiB free"
    )
    assert records(engine) == []
    assert isinstance(service.prepare_many([node(1, ram_mb=6000)])[0], Prepared)


def test_a_request_asking_more_cpus_than_the_host_has_is_refused_alone(
    service: InstanceService,
) -> None:
    big, small = service.prepare_many([node(1, cpu=64), node(2, cpu=2)])
    assert isinstance(big, CapacityExceeded) and "64 CPUs asked per instance" in str(big)
    assert isinstance(small, Prepared)


def test_a_cloud_that_cannot_say_its_capacity_refuses_in_bounded_time(
    service: InstanceService, fake: FakeConnector, engine: Engine
) -> None:
    fake.ex_fail_next("capacity", BackendError("LXD did not answer GET /1.0/resources within 10 s"))
    outcomes = service.prepare_many([node(1), node(2)])
    assert [str(o) for o in outcomes] == ["LXD did not answer GET /1.0/resources within 10 s"] * 2
    assert records(engine) == []


def test_an_empty_batch_is_an_empty_answer(service: InstanceService, calls: Calls) -> None:
    assert service.prepare_many([]) == []
    assert calls == {"capacity": 0, "get_image": 0}
