"""Quotas on the instance service: what is over is refused before anything is recorded or
created, saying what and by how much; groups share theirs; a quota lowered below what is
held keeps what runs; two requests racing never both pass. On SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from stratuslab.accounts.users import Accounts
from stratuslab.cloud import clouds
from stratuslab.cloud.clouds import ConnectorPool
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.cloud.instances import InstanceService, RunRequest
from stratuslab.cloud.quotas import Limits, Quotas
from stratuslab.db.models import InstanceRecord
from stratuslab.db.session import session_scope
from stratuslab.errors import CapacityExceeded, Forbidden, Invalid, NotFound
from stratuslab.principal import SERVER, Principal
from tests.api import conftest as both_stores

store = both_stores.store  # these tests run on SQLite and on PostgreSQL
ADMIN = Principal.for_user("root", admin=True)


@pytest.fixture
def quotas(engine: Engine, fake: FakeConnector) -> Quotas:
    accounts = Accounts(engine)
    for name in ("alice", "bob", "carol"):
        accounts.add_user(name, caller=SERVER)
    return Quotas(engine)


def service(engine: Engine, pool: ConnectorPool, quotas: Quotas, owner: str) -> InstanceService:
    return InstanceService(engine, owner=owner, connectors=pool, name_prefix="q", quotas=quotas)


def live(engine: Engine, owner: str) -> int:
    with session_scope(engine) as session:
        return int(
            session.scalar(
                select(func.count()).where(
                    InstanceRecord.owner == owner, InstanceRecord.state != "gone"
                )
            )
            or 0
        )


def test_over_the_instance_quota_nothing_is_recorded_or_created_and_the_message_says_by_how_much(
    engine: Engine, pool: ConnectorPool, quotas: Quotas, fake: FakeConnector
) -> None:
    quotas.set("user:alice", limits=Limits(instances=5), caller=ADMIN)
    alice = service(engine, pool, quotas, "alice")
    alice.run(RunRequest(image="debian-12", count=3))
    with pytest.raises(CapacityExceeded) as refused:
        alice.prepare(RunRequest(image="debian-12", count=4))
    assert refused.value.exit_code == 68 and refused.value.http_status == 409
    assert "instances: 3 in use + 4 asked > quota 5 (over by 2)" in refused.value.message
    assert "user alice's quota (all clouds)" in refused.value.message
    assert live(engine, "alice") == 3 and len(fake.list_instances()) == 3
    assert len(alice.prepare(RunRequest(image="debian-12", count=2)).views) == 2  # just fits


def test_vcpus_and_memory_are_counted_at_each_size_and_an_unsized_instance_gets_the_default(
    engine: Engine, pool: ConnectorPool, quotas: Quotas, fake: FakeConnector
) -> None:
    quotas.set("user:alice", limits=Limits(cpu=4, ram_mb=2048), caller=ADMIN)
    alice = service(engine, pool, quotas, "alice")
    alice.run(RunRequest(image="debian-12", count=1, cpu=2, ram_mb=1024))
    (unsized,) = alice.run(RunRequest(image="debian-12"))
    assert (unsized.cpu, unsized.ram_mb) == (1, 512)  # what it is charged is what it may use
    assert fake.get(unsized.name).ram_mb == 512
    with pytest.raises(CapacityExceeded) as refused:
        alice.prepare(RunRequest(image="debian-12", count=1, cpu=2, ram_mb=1024))
    message = refused.value.message
    assert "vCPUs: 3 in use + 2 asked > quota 4 (over by 1)" in message
    assert "memory (MiB): 1536 in use + 1024 asked > quota 2048 (over by 512)" in message
    assert "instances" not in message.split(":", 2)[2]  # no instance limit, none reported


def test_a_stopped_instance_keeps_its_share_and_a_killed_one_frees_it(
    engine: Engine, pool: ConnectorPool, quotas: Quotas
) -> None:
    quotas.set("user:alice", limits=Limits(instances=1), caller=ADMIN)
    alice = service(engine, pool, quotas, "alice")
    (first,) = alice.run(RunRequest(image="debian-12"))
    alice.stop(first.id)
    with pytest.raises(CapacityExceeded, match=r"1 in use \+ 1 asked > quota 1"):
        alice.prepare(RunRequest(image="debian-12"))
    assert alice.start(first.id).state == "running"  # already counted: starting it is allowed
    alice.kill(first.id)
    assert alice.run(RunRequest(image="debian-12"))[0].state == "running"


def test_a_quota_set_below_usage_keeps_what_runs_and_refuses_new_work(
    engine: Engine, pool: ConnectorPool, quotas: Quotas
) -> None:
    alice = service(engine, pool, quotas, "alice")
    views = alice.run(RunRequest(image="debian-12", count=3))
    quotas.set("user:alice", limits=Limits(instances=1), caller=ADMIN)
    assert [alice.get(v.id).state for v in views] == ["running"] * 3
    assert alice.stop(views[0].id).state == "stopped"
    assert alice.start(views[0].id).state == "running"
    with pytest.raises(
        CapacityExceeded, match=r"instances: 3 in use \+ 1 asked > quota 1 \(over by 3\)"
    ):
        alice.prepare(RunRequest(image="debian-12"))
    (shown,) = quotas.show(caller=Principal.for_user("alice"))["quotas"]
    assert shown["over"] == ["instances"] and shown["usage"]["instances"] == 3


def test_a_group_quota_bounds_what_its_members_hold_together(
    engine: Engine, pool: ConnectorPool, quotas: Quotas
) -> None:
    accounts = Accounts(engine)
    accounts.add_group("physics", caller=SERVER)
    for member in ("alice", "bob"):
        accounts.add_member("physics", member, caller=SERVER)
    quotas.set("group:physics", limits=Limits(instances=3), caller=ADMIN)
    alice, bob = (service(engine, pool, quotas, name) for name in ("alice", "bob"))
    alice.run(RunRequest(image="debian-12", count=2))
    bob.run(RunRequest(image="debian-12"))
    with pytest.raises(CapacityExceeded) as refused:
        bob.prepare(RunRequest(image="debian-12"))
    assert "group physics's quota (all clouds): instances: 3 in use + 1 asked" in str(refused.value)
    carol = service(engine, pool, quotas, "carol")  # not a member: not bound
    assert len(carol.run(RunRequest(image="debian-12", count=4))) == 4
    # The group bounds each member on top of their own quota.
    quotas.set("group:physics", limits=Limits(instances=10), caller=ADMIN)
    quotas.set("user:bob", limits=Limits(instances=1), caller=ADMIN)
    with pytest.raises(CapacityExceeded, match="user bob's quota"):
        bob.prepare(RunRequest(image="debian-12"))
    assert len(alice.run(RunRequest(image="debian-12"))) == 1


def test_the_default_user_quota_binds_users_without_their_own_of_that_scope(
    engine: Engine, pool: ConnectorPool, quotas: Quotas
) -> None:
    quotas.set("user:*", limits=Limits(instances=1), caller=ADMIN)
    quotas.set("user:bob", limits=Limits(instances=3), caller=ADMIN)
    alice, bob = (service(engine, pool, quotas, name) for name in ("alice", "bob"))
    alice.run(RunRequest(image="debian-12"))
    with pytest.raises(CapacityExceeded, match="the default user quota"):
        alice.prepare(RunRequest(image="debian-12"))
    assert len(bob.run(RunRequest(image="debian-12", count=3))) == 3


def test_a_cloud_quota_counts_that_cloud_and_the_star_quota_all_clouds(
    engine: Engine, pool: ConnectorPool, quotas: Quotas, fake_namespace: str
) -> None:
    clouds.record(
        engine, name="other", connector="fake", options={"namespace": fake_namespace + "-o"}
    )
    try:
        quotas.set("user:alice", cloud="local", limits=Limits(instances=1), caller=ADMIN)
        quotas.set("user:alice", limits=Limits(instances=3), caller=ADMIN)
        alice = service(engine, pool, quotas, "alice")
        alice.run(RunRequest(image="debian-12"))
        with pytest.raises(CapacityExceeded, match=r"cloud local\): instances: 1 in use"):
            alice.prepare(RunRequest(image="debian-12"))
        alice.run(RunRequest(image="debian-12", cloud="other", count=2))
        with pytest.raises(CapacityExceeded, match=r"all clouds\): instances: 3 in use \+ 1"):
            alice.prepare(RunRequest(image="debian-12", cloud="other"))
        usage = quotas.show(caller=Principal.for_user("alice"))["usage"]
        assert {c: u["instances"] for c, u in usage.items()} == {"*": 3, "local": 1, "other": 2}
    finally:
        FakeConnector.ex_reset(fake_namespace + "-o")


def test_requests_racing_never_pass_together(
    engine: Engine, pool: ConnectorPool, quotas: Quotas
) -> None:
    quotas.set("user:alice", limits=Limits(instances=5), caller=ADMIN)
    gate = threading.Barrier(12)
    passed: list[int] = []
    refused: list[str] = []

    def ask() -> None:
        alice = service(engine, pool, quotas, "alice")
        gate.wait()
        try:
            passed.append(len(alice.prepare(RunRequest(image="debian-12", count=2)).views))
        except CapacityExceeded as exc:
            refused.append(exc.message)
        except Exception as exc:  # any other failure fails the test, saying what it was
            refused.append(repr(exc))

    threads = [threading.Thread(target=ask) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all("instances: 4 in use + 2 asked > quota 5" in m for m in refused), refused
    assert passed == [2, 2] and len(refused) == 10
    assert live(engine, "alice") == 4


def test_only_an_administrator_sets_quotas_and_bad_ones_are_refused(
    engine: Engine, quotas: Quotas
) -> None:
    alice = Principal.for_user("alice")
    with pytest.raises(Forbidden):
        quotas.set("user:alice", limits=Limits(instances=100), caller=alice)
    with pytest.raises(NotFound, match="no user 'nobody'"):
        quotas.set("user:nobody", limits=Limits(instances=1), caller=ADMIN)
    with pytest.raises(NotFound, match="no group 'nogroup'"):
        quotas.set("group:nogroup", limits=Limits(instances=1), caller=ADMIN)
    with pytest.raises(NotFound, match="no cloud called 'mars'"):
        quotas.set("user:alice", cloud="mars", limits=Limits(instances=1), caller=ADMIN)
    for bad in ("alice", "team:x", "user:"):
        with pytest.raises(Invalid, match="user:NAME, group:NAME"):
            quotas.set(bad, limits=Limits(instances=1), caller=ADMIN)
    with pytest.raises(Invalid, match="instances: between 0"):
        quotas.set("user:alice", limits=Limits(instances=-1), caller=ADMIN)
    with pytest.raises(NotFound, match="no user 'bob'"):
        quotas.show(caller=alice, user="bob")  # another user's quotas are not there
    quotas.set("user:alice", limits=Limits(instances=2, storage_gib=50), caller=ADMIN)
    (shown,) = quotas.show(caller=alice)["quotas"]
    assert shown["limits"] == {"instances": 2, "cpu": None, "ram_mb": None, "storage_gib": 50}
    quotas.set("user:alice", limits=Limits(), caller=ADMIN)  # no limit at all: removed
    assert quotas.show(caller=alice)["quotas"] == []
