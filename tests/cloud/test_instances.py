"""The instance service on the fake connector: what users rely on, minus the real backend
(the same behaviours are proven on LXD in tests/integration)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import delete, update
from sqlalchemy.engine import Engine

from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.cloud.instances import InstanceService, RunRequest
from stratuslab.db.models import InstanceRecord, utcnow
from stratuslab.db.session import session_scope
from stratuslab.errors import BackendError, CapacityExceeded, Conflict, Invalid, NotFound

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHd8m5hLrq1vXbU3lY4D2v5b5nK0q0s7b1tQm1c2a3b4 alice@lab"


def test_run_records_then_creates_and_returns_running_instances_with_addresses(
    instances: InstanceService, fake: FakeConnector
) -> None:
    seen: list[tuple[str, str]] = []
    views = instances.run(
        RunRequest(
            image="debian-12",
            count=3,
            cpu=1,
            ram_mb=256,
            ssh_keys=(KEY,),
            user_data="#!/bin/sh\ntrue\n",
        ),
        on_event=lambda view, what: seen.append((view.id, what)),
    )
    assert [v.state for v in views] == ["running"] * 3
    assert all(v.address for v in views)
    assert len({v.name for v in views}) == 3
    for view in views:
        assert [what for vid, what in seen if vid == view.id] == ["created", "running"]
        backend = fake.get(view.name)
        assert backend.tags["id"] == view.id and backend.tags["owner"] == "alice"
        assert backend.extra["ssh_keys"] == [KEY]
        assert backend.ram_mb == 256


def test_names_are_given_or_numbered(instances: InstanceService) -> None:
    assert [v.name for v in instances.run(RunRequest(image="debian-12", name="web"))] == ["web"]
    assert [v.name for v in instances.run(RunRequest(image="debian-12", name="db", count=2))] == [
        "db-1",
        "db-2",
    ]
    with pytest.raises(Conflict, match="'web' already exists"):
        instances.run(RunRequest(image="debian-12", name="web"))


@pytest.mark.parametrize(
    ("request_", "error", "message"),
    [
        (RunRequest(image="nope"), NotFound, "no image called 'nope'"),
        (RunRequest(image="debian-12", count=0), Invalid, "-n must be between"),
        (RunRequest(image="debian-12", name="Bad_Name"), Invalid, "not a valid host name"),
        (RunRequest(image="debian-12", ram_mb=10), Invalid, "--ram must be at least 64"),
        (
            RunRequest(image="debian-12", cpu=99),
            CapacityExceeded,
            "99 CPUs asked per instance, the host has 8",
        ),
        (RunRequest(image="debian-12", count=3, ram_mb=8000), CapacityExceeded, "3 x 8000 MiB"),
        (RunRequest(image="debian-12", user_data="echo"), Invalid, "must start with '#!'"),
        (RunRequest(image="debian-12", ssh_keys=("junk",)), Invalid, "not an OpenSSH public key"),
    ],
)
def test_bad_requests_fail_before_anything_is_recorded(
    instances: InstanceService,
    fake: FakeConnector,
    request_: RunRequest,
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        instances.run(request_)
    assert instances.list_instances(include_gone=True) == []
    assert fake.list_instances() == []


def test_a_failed_creation_is_cleaned_up_and_recorded_as_gone_with_its_reason(
    instances: InstanceService, fake: FakeConnector
) -> None:
    fake.ex_fail_next("wait_for_address", BackendError("no DHCP lease"))
    views = instances.run(RunRequest(image="debian-12", count=2))
    states = sorted(v.state for v in views)
    assert states == ["gone", "running"]
    failed = next(v for v in views if v.state == "gone")
    assert failed.error == "no DHCP lease"
    assert [i.name for i in fake.list_instances()] == [
        next(v.name for v in views if v.state == "running")
    ]


def test_when_every_instance_fails_the_reason_is_raised(
    instances: InstanceService, fake: FakeConnector
) -> None:
    fake.ex_fail_next("create", BackendError("LXD: disk full"))
    with pytest.raises(BackendError, match="disk full"):
        instances.run(RunRequest(image="debian-12"))
    assert [v.state for v in instances.list_instances(include_gone=True)] == ["gone"]


def test_stop_start_kill_and_killing_twice(instances: InstanceService, fake: FakeConnector) -> None:
    (view,) = instances.run(RunRequest(image="debian-12", name="box"))
    assert instances.stop("box").state == "stopped"
    assert fake.get("box").state.value == "stopped"
    assert instances.start(view.id).state == "running"
    assert instances.kill(view.id[:6]).state == "gone"
    assert instances.kill(view.id).state == "gone"
    assert fake.list_instances() == []
    with pytest.raises(Conflict, match="is gone"):
        instances.stop(view.id)


def test_exec_runs_in_the_instance(instances: InstanceService) -> None:
    instances.run(RunRequest(image="debian-12", name="box"))
    result = instances.exec("box", ["hostname"])
    assert (result.exit_code, result.stdout) == (0, "box\n")
    assert instances.exec("box", ["nosuch"]).exit_code == 127


def test_an_instance_deleted_behind_our_back_shows_as_gone(
    instances: InstanceService, fake: FakeConnector
) -> None:
    (view,) = instances.run(RunRequest(image="debian-12"))
    fake.ex_vanish(view.name)
    assert instances.list_instances() == []
    (gone,) = instances.list_instances(include_gone=True)
    assert (gone.state, gone.error) == ("gone", "deleted outside StratusLab")


def test_an_instance_the_store_lost_is_found_and_listed(
    instances: InstanceService, fake: FakeConnector, engine: Engine
) -> None:
    (view,) = instances.run(RunRequest(image="debian-12", name="orphan"))
    with session_scope(engine) as session:
        session.execute(delete(InstanceRecord))
    (found,) = instances.list_instances()
    assert (found.id, found.name, found.owner, found.recovered, found.state) == (
        view.id,
        "orphan",
        "alice",
        True,
        "running",
    )


def test_an_instance_recorded_gone_that_still_exists_is_shown_again(
    instances: InstanceService, fake: FakeConnector, engine: Engine
) -> None:
    (view,) = instances.run(RunRequest(image="debian-12"))
    with session_scope(engine) as session:
        session.execute(update(InstanceRecord).values(state="gone", ended_at=utcnow()))
    (again,) = instances.list_instances()
    assert (
        again.id == view.id and again.state == "running" and "still exists" in (again.error or "")
    )


def test_a_record_left_pending_by_a_crash_is_resolved_after_a_grace_period(
    instances: InstanceService, fake: FakeConnector, engine: Engine
) -> None:
    prepared = instances.prepare(RunRequest(image="debian-12", name="crashed"))
    assert [v.state for v in instances.list_instances()] == ["pending"]  # maybe still being created
    with session_scope(engine) as session:
        session.execute(update(InstanceRecord).values(created_at=utcnow() - timedelta(hours=1)))
    assert instances.list_instances() == []
    (gone,) = instances.list_instances(include_gone=True)
    assert (gone.id, gone.error) == (prepared.views[0].id, "never created")


def test_users_reach_only_their_own_instances_and_administrators_every_one(
    engine: Engine, fake: FakeConnector
) -> None:
    from stratuslab.cloud.clouds import ConnectorPool

    pool = ConnectorPool(engine)
    alice = InstanceService(engine, owner="alice", connectors=pool)
    bob = InstanceService(engine, owner="bob", connectors=pool)
    admin = InstanceService(engine, owner="root", connectors=pool, sees_all=True)
    alice.run(RunRequest(image="debian-12", name="a"))
    (b,) = bob.run(RunRequest(image="debian-12", name="b"))
    assert [v.name for v in alice.list_instances()] == ["a"]
    # Asking for every owner's is an administrator's view; anybody else still sees their own.
    assert [v.name for v in alice.list_instances(all_owners=True)] == ["a"]
    assert sorted(v.owner for v in admin.list_instances(all_owners=True)) == ["alice", "bob"]
    for ref in (b.id, b.id[:6], "b"):
        with pytest.raises(NotFound):
            alice.get(ref)
        with pytest.raises(NotFound):
            alice.kill(ref)
    assert admin.get("b").owner == "bob"
    pool.close()


def test_refs_resolve_by_id_prefix_or_name(instances: InstanceService) -> None:
    (one,) = instances.run(RunRequest(image="debian-12", name="alpha"))
    assert instances.get(one.id).name == "alpha"
    assert instances.get(one.id[:5]).name == "alpha"
    assert instances.get("alpha").id == one.id
    with pytest.raises(NotFound, match="no instance 'zeta'"):
        instances.get("zeta")
