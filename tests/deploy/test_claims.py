"""Claims on runs' work between server processes sharing one PostgreSQL.

Two :class:`Services` on one store stand for two processes (each has its own hub, listener,
heartbeat, supervisor and claims); the backend is the shared fake, whose instances both see.
Tests of real processes killed mid-run are in tests/api/test_server_processes.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from stratuslab import config
from stratuslab import services as composition
from stratuslab.cloud import clouds
from stratuslab.cloud.connectors.fake_shared import SharedFakeConnector
from stratuslab.db.models import InstanceRecord, RunEventRecord, RunRecord, ServerRecord, utcnow
from stratuslab.db.session import engine_for, session_scope
from stratuslab.deploy.claims import Claims
from stratuslab.deploy.model import ModuleText
from stratuslab.deploy.runs import RunRequest
from stratuslab.principal import SERVER, Principal
from stratuslab.services import Services
from tests.api.stores import database
from tests.deploy.support import BASE
from tests.support import environment, wait_until

pytestmark = pytest.mark.postgres
ALICE = Principal.for_user("alice")
WORKER = "kind: component\nparent: base\noutputs:\n  done: {}\n"
APP = "kind: application\nnodes:\n  worker:\n    component: apps/worker\n    multiplicity: 12\n"


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    with database("postgresql", tmp_path) as made:
        yield made


@pytest.fixture
def shared(tmp_path: Path, url: str) -> SharedFakeConnector:
    path = str(tmp_path / "fake.sqlite")
    clouds.record(engine_for(url), name="local", connector="fake-shared", options={"path": path})
    return SharedFakeConnector(path=path)


def services_on(tmp_path: Path, url: str, name: str) -> Services:
    settings = config.load(environment(tmp_path / name, STRATUS_DATABASE_URL=url))
    return composition.build(settings.with_overrides(claim_lease_s=6), token="test-token")


def test_two_processes_never_provision_one_run_twice(
    tmp_path: Path, url: str, shared: SharedFakeConnector
) -> None:
    a, b = services_on(tmp_path, url, "a"), services_on(tmp_path, url, "b")
    try:
        a.accounts.add_user("alice", caller=SERVER)
        a.modules.push(
            [
                ModuleText("apps/base", "apps/base.yaml", BASE),
                ModuleText("apps/worker", "apps/worker.yaml", WORKER),
                ModuleText("apps/app", "apps/app/module.yaml", APP),
            ],
            caller=ALICE,
        )
        # Runs recorded before either supervises: both find them at their first round.
        runs = [a.runs.create(RunRequest(module="apps/app"), caller=ALICE)["id"] for _ in range(6)]
        starting = [threading.Thread(target=s.start) for s in (a, b)]
        for thread in starting:
            thread.start()
        for thread in starting:
            thread.join()

        def provisioned() -> bool:
            with session_scope(a.engine) as session:
                done = session.scalar(
                    select(func.count())
                    .select_from(RunEventRecord)
                    .where(RunEventRecord.kind == "provisioned")
                )
            return done == 6 * 12

        wait_until(provisioned, timeout=120, what="every node instance provisioned")
        with session_scope(a.engine) as session:
            failed = session.scalars(
                select(RunEventRecord.message).where(RunEventRecord.kind == "provisioning-failed")
            ).all()
            records = session.scalar(
                select(func.count())
                .select_from(InstanceRecord)
                .where(InstanceRecord.run_id.in_(runs))
            )
            beating = set(session.scalars(select(ServerRecord.id)))
        assert failed == []
        assert records == 6 * 12  # one instance per node instance, never a second
        machines = shared.list_instances(has_tag="run")
        assert len(machines) == 6 * 12 and len({m.name for m in machines}) == 6 * 12
        assert {a.claims.me, b.claims.me} <= beating  # both processes' heartbeats
    finally:
        a.close()
        b.close()


def test_a_run_another_process_is_claiming_is_skipped_not_waited_for(
    tmp_path: Path, url: str
) -> None:
    services = services_on(tmp_path, url, "a")
    try:
        engine = services.engine
        with session_scope(engine) as session:
            run = _run("r-locked")
            session.add(run)
        other = Claims(engine, lease=timedelta(seconds=6))
        with session_scope(engine) as session:  # another process in the middle of claiming
            session.get(RunRecord, "r-locked", with_for_update=True)
            with other.claimed("r-locked") as claimed:
                assert claimed is False  # answered at once, the row still locked
        with other.claimed("r-locked") as claimed:
            assert claimed is True
    finally:
        services.close()


def test_the_claim_of_a_server_whose_heartbeat_stopped_is_free_on_any_host(
    tmp_path: Path, url: str
) -> None:
    services = services_on(tmp_path, url, "a")
    try:
        engine = services.engine
        lease = timedelta(seconds=6)
        now = utcnow()
        with session_scope(engine) as session:
            session.add_all([_run("r-1"), _run("r-2")])
            for name, seen in (("elsewhere:1:1", now - 2 * lease), ("elsewhere:2:1", now)):
                session.add(
                    ServerRecord(id=name, host="elsewhere", pid=1, started_at=now, seen_at=seen)
                )
            # Both claims are within their lease; only one server still beats.
            session.execute(
                update(RunRecord)
                .where(RunRecord.id == "r-1")
                .values(claimed_by="elsewhere:1:1", claimed_until=now + lease)
            )
            session.execute(
                update(RunRecord)
                .where(RunRecord.id == "r-2")
                .values(claimed_by="elsewhere:2:1", claimed_until=now + lease)
            )
        claims = Claims(engine, lease=lease)
        with claims.claimed("r-1") as silent, claims.claimed("r-2") as beating:
            assert (silent, beating) == (True, False)
    finally:
        services.close()


def test_a_process_whose_claim_was_taken_over_knows_it_at_its_next_renewal(
    tmp_path: Path, url: str
) -> None:
    """A process stalled past its lease (or cut off from the store) finds another's name on
    the run when it renews: it stops holding the claim, so that its job stops making machines
    (orchestrator: the job's ``proceed``) instead of making what the new holder makes too."""
    services = services_on(tmp_path, url, "a")
    try:
        engine = services.engine
        with session_scope(engine) as session:
            session.add(_run("r-stalled"))
        claims = Claims(engine, lease=timedelta(seconds=3))  # renewed every second
        with claims.claimed("r-stalled") as claimed:
            assert claimed and claims.holds("r-stalled")
            with session_scope(engine) as session:  # the survivor took it over meanwhile
                session.execute(
                    update(RunRecord)
                    .where(RunRecord.id == "r-stalled")
                    .values(
                        claimed_by="elsewhere:9:9", claimed_until=utcnow() + timedelta(seconds=60)
                    )
                )
            wait_until(lambda: not claims.holds("r-stalled"), timeout=10, what="the loss")
        with session_scope(engine) as session:  # and leaving does not free the other's claim
            run = session.get(RunRecord, "r-stalled")
            assert run is not None and run.claimed_by == "elsewhere:9:9"
    finally:
        services.close()


def _run(run_id: str) -> RunRecord:
    return RunRecord(
        id=run_id,
        owner="alice",
        module_path="apps/app",
        module_version=1,
        state="Ready",
        keep_running="always",
        plan={},
    )
