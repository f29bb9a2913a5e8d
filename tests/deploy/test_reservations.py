"""Runs hold their node instances against their owner's quota from the moment they are
recorded, before any machine exists, so that runs started together cannot all pass. The
services here are not started: no run is provisioned, every node instance stays pending. On
SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from stratuslab import services as composition
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.cloud.quotas import Limits
from stratuslab.config import Settings
from stratuslab.db.models import RunRecord
from stratuslab.db.session import session_scope
from stratuslab.deploy.model import ModuleText
from stratuslab.deploy.runs import RunRequest
from stratuslab.errors import CapacityExceeded
from stratuslab.principal import SERVER, Principal
from stratuslab.services import Services
from tests.api import conftest as both_stores
from tests.deploy.support import APP, BASE, DB, WEB

store = both_stores.store  # these tests run on SQLite and on PostgreSQL
ALICE = Principal.for_user("alice")
ADMIN = Principal.for_user("root", admin=True)


@pytest.fixture
def idle(settings: Settings, fake: FakeConnector) -> Iterator[Services]:
    """The server's services, never started: runs are recorded and never provisioned."""
    services = composition.build(settings, token="test-token")
    services.accounts.add_user("alice", caller=SERVER)
    texts = [
        ModuleText("apps/base", "apps/base.yaml", BASE),
        ModuleText("apps/db", "apps/db.yaml", DB),
        ModuleText("apps/web", "apps/web.yaml", WEB),
        ModuleText("apps/demo", "apps/demo/module.yaml", APP),  # db.1, web.1, web.2
    ]
    services.modules.push(texts, caller=Principal.for_user("alice"))
    try:
        yield services
    finally:
        services.close()


def runs_of(services: Services) -> int:
    with session_scope(services.engine) as session:
        return int(session.scalar(select(func.count()).select_from(RunRecord)) or 0)


def test_a_recorded_run_holds_its_node_instances_before_any_machine_exists(
    idle: Services,
) -> None:
    idle.quotas.set("user:alice", limits=Limits(instances=4, cpu=3), caller=ADMIN)
    run = idle.runs.create(RunRequest(module="apps/demo"), caller=ALICE)
    assert run["state"] == "Initializing" and idle.instances_of("alice").for_run(run["id"]) == []
    held = idle.quotas.show(caller=ALICE)["usage"]["*"]
    assert held == {"instances": 3, "cpu": 3, "ram_mb": 1536, "storage_gib": 0}
    with pytest.raises(CapacityExceeded) as refused:
        idle.runs.create(RunRequest(module="apps/demo"), caller=ALICE)
    message = refused.value.message
    assert "instances: 3 in use + 3 asked > quota 4 (over by 2)" in message
    assert "vCPUs: 3 in use + 3 asked > quota 3 (over by 3)" in message
    assert runs_of(idle) == 1  # nothing of the refused run was recorded
    with pytest.raises(CapacityExceeded, match=r"instances: 3 in use \+ 2 asked"):
        idle.runs.create(RunRequest(module="apps/demo", multiplicity={"web": 1}), caller=ALICE)

    idle.control.terminate(run["id"], caller=ALICE)  # a cancelled run makes no more machines
    assert idle.quotas.show(caller=ALICE)["usage"]["*"]["instances"] == 0
    assert idle.runs.create(RunRequest(module="apps/demo"), caller=ALICE)["state"] == "Initializing"


def test_runs_started_together_pass_only_as_many_as_the_quota_admits(idle: Services) -> None:
    idle.quotas.set("user:alice", limits=Limits(instances=7), caller=ADMIN)  # two runs of 3
    gate = threading.Barrier(10)
    started: list[str] = []
    refused: list[str] = []

    def start() -> None:
        gate.wait()
        try:
            started.append(idle.runs.create(RunRequest(module="apps/demo"), caller=ALICE)["id"])
        except CapacityExceeded as exc:
            refused.append(exc.message)
        except Exception as exc:  # any other failure fails the test, saying what it was
            refused.append(repr(exc))

    threads = [threading.Thread(target=start) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(started) == 2 and len(refused) == 8 and runs_of(idle) == 2
    assert all("instances: 6 in use + 3 asked > quota 7 (over by 2)" in m for m in refused)


def test_node_instances_placed_on_a_cloud_fill_its_cap_and_keep_it_from_removal(
    idle: Services,
) -> None:
    from stratuslab.cloud import clouds
    from stratuslab.errors import Conflict
    from tests.support import set_cloud

    set_cloud(idle.engine, "local", max_instances=4)
    idle.runs.create(RunRequest(module="apps/demo"), caller=ALICE)  # three, none made yet
    assert clouds.get(idle.engine, "local").max_instances == 4
    with pytest.raises(CapacityExceeded, match=r"node web: .*local is full \(4 of 4 instances\)"):
        idle.runs.create(RunRequest(module="apps/demo"), caller=ALICE)  # db.1 fits, web.1 not
    assert runs_of(idle) == 1
    with pytest.raises(Conflict, match="3 node instance"):
        idle.clouds.remove(ADMIN, "local")
