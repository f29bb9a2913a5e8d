"""The storage quota on volumes: what is over is refused on create, clone and resize before
anything is recorded or made, saying what and by how much; per cloud and on all clouds, for
users and groups; gone volumes free what they held; `quota show` says what is in use; creates
racing never pass together. On SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy.engine import Engine

from stratuslab.accounts.users import Accounts
from stratuslab.cloud import clouds
from stratuslab.cloud.clouds import ConnectorPool
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.cloud.instances import RunRequest
from stratuslab.cloud.quotas import Limits, Quotas
from stratuslab.errors import CapacityExceeded
from stratuslab.principal import SERVER, Principal
from tests.api import conftest as both_stores
from tests.cloud.volume_support import GiB, service

store = both_stores.store  # these tests run on SQLite and on PostgreSQL
ADMIN = Principal.for_user("root", admin=True)


@pytest.fixture
def quotas(engine: Engine, fake: FakeConnector) -> Quotas:
    accounts = Accounts(engine)
    for name in ("alice", "bob", "carol"):
        accounts.add_user(name, caller=SERVER)
    return Quotas(engine)


def test_over_the_storage_quota_nothing_is_recorded_or_made_and_the_message_says_by_how_much(
    engine: Engine, pool: ConnectorPool, quotas: Quotas, fake: FakeConnector
) -> None:
    quotas.set("user:alice", limits=Limits(storage_gib=10), caller=ADMIN)
    alice = service(engine, pool, "alice", quotas=quotas)
    alice.create("big", size_bytes=6 * GiB)
    with pytest.raises(CapacityExceeded) as refused:
        alice.create("more", size_bytes=5 * GiB)
    assert "user alice's quota (all clouds): storage (GiB): 6 in use + 5 asked > quota 10 " in (
        refused.value.message
    )
    assert "(over by 1)" in refused.value.message and "volume list" in str(refused.value.hint)
    assert [v.name for v in alice.list()] == ["big"] and len(fake.list_volumes()) == 1
    alice.create("half", size_bytes=GiB + GiB // 2)  # counts 2 GiB: whole GiB, rounded up
    with pytest.raises(CapacityExceeded, match="8 in use \\+ 3 asked"):
        alice.create("more", size_bytes=3 * GiB)
    alice.delete("big")  # a gone volume holds nothing
    assert alice.create("more", size_bytes=8 * GiB).state == "ready"
    usage = quotas.show(caller=Principal.for_user("alice"))
    assert usage["usage"]["*"]["storage_gib"] == 10 and usage["usage"]["local"]["storage_gib"] == 10
    (shown,) = usage["quotas"]
    assert shown["usage"]["storage_gib"] == 10 and shown["over"] == []


def test_a_clone_is_charged_at_its_sources_size_and_a_resize_by_what_it_adds(
    engine: Engine, pool: ConnectorPool, quotas: Quotas, fake: FakeConnector
) -> None:
    quotas.set("user:alice", limits=Limits(storage_gib=10), caller=ADMIN)
    alice = service(engine, pool, "alice", quotas=quotas)
    alice.create("base", size_bytes=4 * GiB)
    alice.snapshot("base", "v1")
    alice.create("copy", source="base/v1")  # 4 more: 8 held
    with pytest.raises(CapacityExceeded, match="8 in use \\+ 4 asked > quota 10"):
        alice.create("again", size_bytes=GiB, source="alice/base")
    with pytest.raises(CapacityExceeded, match="8 in use \\+ 3 asked > quota 10"):
        alice.resize("copy", size_bytes=7 * GiB)
    assert alice.get("copy").size_bytes == 4 * GiB and len(fake.list_volumes()) == 2
    assert alice.resize("copy", size_bytes=6 * GiB).size_bytes == 6 * GiB  # 10: just fits
    quotas.set("user:alice", limits=Limits(storage_gib=5), caller=ADMIN)  # lowered below
    (shown,) = quotas.show(caller=Principal.for_user("alice"))["quotas"]
    assert shown["over"] == ["storage_gib"]
    assert alice.resize("copy", size_bytes=GiB).size_bytes == GiB  # shrinking always passes
    instances = alice.instances
    instances.quotas = quotas
    assert len(instances.run(RunRequest(image="debian-12"))) == 1  # storage does not bound them


def test_a_cloud_quota_counts_that_cloud_the_star_quota_all_and_a_group_its_members(
    engine: Engine, pool: ConnectorPool, quotas: Quotas, fake_namespace: str
) -> None:
    clouds.record(
        engine, name="other", connector="fake", options={"namespace": fake_namespace + "-o"}
    )
    try:
        quotas.set("user:alice", cloud="local", limits=Limits(storage_gib=2), caller=ADMIN)
        quotas.set("user:alice", limits=Limits(storage_gib=6), caller=ADMIN)
        alice = service(engine, pool, "alice", quotas=quotas)
        alice.create("here", size_bytes=2 * GiB)
        with pytest.raises(CapacityExceeded, match="cloud local\\): storage \\(GiB\\): 2 in use"):
            alice.create("more", size_bytes=GiB)
        alice.create("there", size_bytes=3 * GiB, cloud="other")
        with pytest.raises(CapacityExceeded, match="all clouds\\): storage \\(GiB\\): 5 in use"):
            alice.create("more", size_bytes=2 * GiB, cloud="other")
        usage = quotas.show(caller=Principal.for_user("alice"))["usage"]
        assert {c: u["storage_gib"] for c, u in usage.items()} == {"*": 5, "local": 2, "other": 3}
        accounts = Accounts(engine)
        accounts.add_group("physics", caller=SERVER)
        for member in ("bob", "carol"):
            accounts.add_member("physics", member, caller=SERVER)
        quotas.set("group:physics", limits=Limits(storage_gib=4), caller=ADMIN)
        service(engine, pool, "bob", quotas=quotas).create("b", size_bytes=3 * GiB)
        with pytest.raises(CapacityExceeded, match="group physics's quota \\(all clouds\\)"):
            service(engine, pool, "carol", quotas=quotas).create("c", size_bytes=2 * GiB)
    finally:
        FakeConnector.ex_reset(fake_namespace + "-o")


def test_creates_racing_never_pass_together(
    engine: Engine, pool: ConnectorPool, quotas: Quotas, fake: FakeConnector
) -> None:
    quotas.set("user:alice", limits=Limits(storage_gib=10), caller=ADMIN)
    gate = threading.Barrier(8)
    passed: list[str] = []
    refused: list[str] = []

    def ask(n: int) -> None:
        alice = service(engine, pool, "alice", quotas=quotas)
        gate.wait()
        try:
            passed.append(alice.create(f"v{n}", size_bytes=3 * GiB).id)
        except CapacityExceeded as exc:
            refused.append(exc.message)
        except Exception as exc:  # any other failure fails the test, saying what it was
            refused.append(repr(exc))

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(passed) == 3, refused
    assert len(refused) == 5 and all("storage (GiB): 9 in use + 3 asked" in r for r in refused)
    assert len(fake.list_volumes()) == 3
