"""What the deployment engine asks the instance service about runs' machines, so that it
never needs a connector: every run's machine states at once, and a run's last sweep."""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Mapping

import pytest
from sqlalchemy import delete, update
from sqlalchemy.engine import Engine

from stratuslab import config
from stratuslab.cloud import clouds
from stratuslab.cloud.base import Instance, InstanceSpec
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.cloud.connectors.lxd import LxdConnector
from stratuslab.cloud.instances import InstanceService, InstanceView, RunRequest
from stratuslab.cloud.types import InstanceState
from stratuslab.db.models import InstanceRecord, utcnow
from stratuslab.db.session import session_scope
from stratuslab.errors import BackendError, BackendUnavailable

Told = list[tuple[str, str]]


@pytest.fixture
def told() -> Told:
    return []


@pytest.fixture
def service(engine: Engine, fake: FakeConnector, told: Told) -> Iterator[InstanceService]:
    def sink(view: InstanceView, what: str) -> None:
        told.append((view.id, what))

    yield InstanceService(
        engine, owner="alice", connectors=lambda _cloud: fake, on_event=sink, name_prefix="t"
    )


def machine(service: InstanceService, run: str, node: str) -> InstanceView:
    (view,) = service.run(RunRequest(image="debian-12", run_id=run, node_instance=node))
    return view


def test_every_runs_machines_come_from_one_listing_per_cloud(
    service: InstanceService, fake: FakeConnector, monkeypatch: pytest.MonkeyPatch
) -> None:
    machine(service, "r1", "web.1")
    stopped = machine(service, "r1", "web.2")
    machine(service, "r2", "db.1")
    service.run(RunRequest(image="debian-12"))  # no run: not a run's machine
    fake.stop(stopped.name)
    listings: list[Mapping[str, object]] = []
    original = fake.list_instances

    def counting(**kwargs: object) -> list[Instance]:
        listings.append(kwargs)
        return original(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fake, "list_instances", counting)
    assert service.machines_by_run(["local", "local"]) == {
        "r1": {"web.1": InstanceState.RUNNING, "web.2": InstanceState.STOPPED},
        "r2": {"db.1": InstanceState.RUNNING},
    }
    assert listings == [{"has_tag": "run", "addresses": False}]


def test_a_machine_that_is_gone_is_absent_and_a_duplicate_does_not_hide_the_live_one(
    service: InstanceService, fake: FakeConnector
) -> None:
    gone = machine(service, "r1", "web.1")
    machine(service, "r1", "web.2")
    fake.ex_vanish(gone.name)
    tags = {"id": "i-stale", "run": "r1", "node-instance": "web.2"}
    fake.create(InstanceSpec(name="stale", image="debian-12", tags=tags))
    fake.stop("stale")
    assert service.machines_by_run(["local"]) == {"r1": {"web.2": InstanceState.RUNNING}}


def test_a_cloud_that_cannot_be_listed_is_an_error_not_an_empty_answer(
    service: InstanceService, fake: FakeConnector
) -> None:
    machine(service, "r1", "web.1")
    fake.ex_fail_next("list", BackendUnavailable("LXD is not reachable"))
    with pytest.raises(BackendUnavailable):
        service.machines_by_run(["local"])


def test_sweeping_a_run_destroys_and_records_whatever_still_carries_its_tag(
    service: InstanceService, fake: FakeConnector, engine: Engine, told: Told
) -> None:
    killed = machine(service, "r1", "web.1")
    wrongly_gone = machine(service, "r1", "web.2")
    lost = machine(service, "r1", "web.3")
    other_run = machine(service, "r2", "db.1")
    fake.create(InstanceSpec(name="untagged", image="debian-12", tags={"run": "r1"}))
    service.kill(killed.id)
    with session_scope(engine) as session:  # what a crash may leave: records wrong or lost
        session.execute(
            update(InstanceRecord)
            .where(InstanceRecord.id == wrongly_gone.id)
            .values(state="gone", ended_at=utcnow())
        )
        session.execute(delete(InstanceRecord).where(InstanceRecord.id == lost.id))
    told.clear()
    destroyed = service.sweep_run("r1", ["local"])
    assert sorted(destroyed) == sorted([wrongly_gone.name, lost.name, "untagged"])
    assert [i.name for i in fake.list_instances(tags={"run": "r1"})] == []
    assert [i.name for i in fake.list_instances(tags={"run": "r2"})] == [other_run.name]
    by_id = {v.id: v for v in service.for_run("r1")}
    assert {by_id[i].state for i in (killed.id, wrongly_gone.id, lost.id)} == {"gone"}
    assert by_id[lost.id].recovered and "left over" in (by_id[lost.id].error or "")
    assert sorted(told) == sorted([(wrongly_gone.id, "gone"), (lost.id, "gone")])
    assert service.sweep_run("r1", ["local"]) == []


def test_a_sweep_that_fails_on_one_instance_still_does_the_rest_then_raises(
    service: InstanceService, fake: FakeConnector
) -> None:
    machine(service, "r1", "web.1")
    machine(service, "r1", "web.2")
    fake.ex_fail_next("destroy", BackendError("LXD: device busy"))
    with pytest.raises(BackendError, match="device busy"):
        service.sweep_run("r1", ["local"])
    assert len(fake.list_instances(tags={"run": "r1"})) == 1
    assert len(service.sweep_run("r1", ["local"])) == 1
    assert fake.list_instances(tags={"run": "r1"}) == []


def test_images_are_listed_through_the_service(service: InstanceService) -> None:
    assert "debian-12" in [i.name for i in service.list_images("local")]


@pytest.mark.lxd
def test_on_lxd_the_engine_sees_its_runs_machines_and_sweeps_them(engine: Engine) -> None:
    settings = config.load()
    options = {"endpoint": settings.lxd_endpoint, "profile": settings.lxd_profile}
    clouds.record(engine, name="local", connector="lxd", options=options)
    lxd = LxdConnector(**options)
    run_id = f"run-{secrets.token_hex(4)}"
    service = InstanceService(
        engine, owner="alice", connectors=lambda _cloud: lxd, name_prefix="test-runs"
    )
    made: list[str] = []
    try:
        for node in ("web.1", "web.2"):
            (view,) = service.run(RunRequest(image="debian-12", run_id=run_id, node_instance=node))
            made.append(view.name)
        service.stop(made[1])
        machines = service.machines_by_run(["local"])
        assert machines[run_id] == {"web.1": InstanceState.RUNNING, "web.2": InstanceState.STOPPED}
        assert sorted(service.sweep_run(run_id, ["local"])) == sorted(made)
        assert run_id not in service.machines_by_run(["local"])
        assert {v.state for v in service.for_run(run_id)} == {"gone"}
    finally:
        for name in made:  # clean up even when the test failed
            lxd.destroy(name)
        lxd.close()
