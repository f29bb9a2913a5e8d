"""/api/quotas, and quotas where users meet them: a run over its owner's quota is refused at
start (409, and an XML detail on SlipStream's /run) with nothing provisioned or recorded; a run
that fits is provisioned whole; scaling it up over the quota is refused. On both stores."""

from __future__ import annotations

from xml.etree import ElementTree as ET

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.db.models import RunRecord
from stratuslab.db.session import session_scope
from stratuslab.principal import SERVER, Principal
from tests.api.test_session import services_of
from tests.deploy.support import complete_all, nodes, push_app, wait_for_state, wait_until

pytestmark = pytest.mark.usefixtures("fake")
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def user_client(api: TestClient, name: str) -> TestClient:
    """A client of ``name``'s own, with an API key: what a user of the site holds."""
    services = services_of(api)
    if services.accounts.principal(name) is None:
        services.accounts.add_user(name, caller=SERVER)
    key = services.credentials.create_key(caller=Principal.for_user(name))
    return TestClient(api.app, headers={"Authorization": f"Bearer {key['token']}"})


def runs_recorded(api: TestClient) -> int:
    with session_scope(services_of(api).engine) as session:
        return int(session.scalar(select(func.count()).select_from(RunRecord)) or 0)


def test_administrators_set_quotas_and_users_read_their_own_with_usage(api: TestClient) -> None:
    alice, bob = user_client(api, "alice"), user_client(api, "bob")
    answer = api.put("/api/quotas/user:alice", json={"instances": 2, "ram_mb": 4096})
    assert answer.status_code == 200, answer.text
    assert answer.json()["limits"] == {
        "instances": 2, "cpu": None, "ram_mb": 4096, "storage_gib": None
    }  # fmt: skip
    assert api.put("/api/quotas/user:bob", json={"instances": 9}).status_code == 200
    refused = alice.put("/api/quotas/user:alice", json={"instances": 100})
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "Forbidden"

    assert alice.post("/api/instances", json={"image": "debian-12"}).status_code == 202
    mine = alice.get("/api/quotas").json()
    assert mine["user"] == "alice"
    (quota,) = mine["quotas"]
    assert (quota["subject"], quota["cloud"], quota["over"]) == ("user:alice", "*", [])
    assert quota["usage"] == {"instances": 1, "cpu": 1, "ram_mb": 512, "storage_gib": 0}
    assert mine["usage"]["*"]["instances"] == 1
    assert alice.get("/api/quotas", params={"user": "bob"}).status_code == 404
    assert [q["subject"] for q in alice.get("/api/quotas?all=true").json()["quotas"]] == [
        "user:alice"
    ]  # anybody else asking for all still sees their own
    every = api.get("/api/quotas", params={"all": "true"}).json()["quotas"]
    assert [(q["subject"], q["usage"]["instances"]) for q in every] == [
        ("user:alice", 1),
        ("user:bob", 0),
    ]
    assert api.get("/api/quotas", params={"user": "alice"}).json()["quotas"] == mine["quotas"]
    assert bob.get("/api/quotas").json()["quotas"][0]["limits"]["instances"] == 9


@pytest.mark.parametrize(
    ("subject", "body", "status", "says"),
    [
        ("user:alice", {"instances": -1}, 422, "instances"),
        ("user:alice", {"instances": 2**31}, 422, "instances"),
        ("user:alice", {"vms": 3}, 422, "vms"),
        ("user:alice", {"instances": "many"}, 422, "instances"),
        ("user:nobody", {"instances": 1}, 404, "no user 'nobody'"),
        ("group:nobody", {"instances": 1}, 404, "no group 'nobody'"),
        ("user:alice", {"cloud": "mars", "instances": 1}, 404, "no cloud called 'mars'"),
        ("alice", {"instances": 1}, 422, "user:NAME, group:NAME"),
        ("user:" + "a" * 80, {"instances": 1}, 422, "subject"),
    ],
)
def test_bad_quotas_get_a_clear_error(
    api: TestClient, subject: str, body: dict[str, object], status: int, says: str
) -> None:
    services_of(api).accounts.add_user("alice", caller=SERVER)
    answer = api.put(f"/api/quotas/{subject}", json=body)
    assert answer.status_code == status, answer.text
    assert says in answer.json()["error"]["message"]


def test_a_run_over_the_quota_is_refused_at_start_and_nothing_is_provisioned(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    push_app(deploy_api)  # db.1, web.1, web.2
    alice = user_client(deploy_api, "alice")
    deploy_api.put("/api/quotas/user:alice", json={"instances": 2})
    answer = alice.post("/api/runs", json={"module": "apps/demo", "keep_running": "never"})
    assert answer.status_code == 409, answer.text
    error = answer.json()["error"]
    assert error["type"] == "CapacityExceeded"
    assert "instances: 0 in use + 3 asked > quota 2 (over by 1)" in error["message"]
    assert "stratus quota show" in error["hint"]
    assert runs_recorded(deploy_api) == 0 and alice.get("/api/runs").json() == []
    assert fake.list_instances() == [] and alice.get("/api/instances").json() == []

    form = "refqname=module/apps/demo&keep-running=never"
    legacy = alice.post("/run", content=form, headers=FORM)
    assert legacy.status_code == 409
    detail = ET.fromstring(legacy.content).attrib["detail"]
    assert "instances: 0 in use + 3 asked > quota 2 (over by 1)" in detail
    assert runs_recorded(deploy_api) == 0 and fake.list_instances() == []


def test_a_run_that_fits_is_provisioned_whole_and_scaling_it_over_the_quota_is_refused(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    push_app(deploy_api)
    alice = user_client(deploy_api, "alice")
    deploy_api.put("/api/quotas/user:alice", json={"instances": 3, "cpu": 3})
    answer = alice.post("/api/runs", json={"module": "apps/demo", "mutable": True})
    assert answer.status_code == 201, answer.text
    run_id = answer.json()["id"]
    members = nodes(deploy_api, fake, run_id, 3)  # the run's own machines are not refused
    assert {(i.cpu, i.ram_mb) for i in fake.list_instances()} == {(1, 512)}
    members["db.1"].set("db.1:password", "pw")
    for state in ("Provisioning", "Executing", "SendingReports", "Ready"):
        wait_for_state(deploy_api, run_id, state)
        complete_all(members, state)
    wait_until(lambda: alice.get(f"/api/runs/{run_id}").json()["waiting"] == 0, what="Ready")

    refused = alice.post(f"/api/runs/{run_id}/nodes/web/instances", json={"count": 1})
    assert refused.status_code == 409, refused.text
    assert (
        "instances: 3 in use + 1 asked > quota 3 (over by 1)" in refused.json()["error"]["message"]
    )
    run = alice.get(f"/api/runs/{run_id}").json()
    assert run["state"] == "Ready" and run["scaling"] is None and len(run["nodes"]) == 3
    assert len(fake.list_instances()) == 3

    deploy_api.put("/api/quotas/user:alice", json={"instances": 4, "cpu": 4})
    added = alice.post(f"/api/runs/{run_id}/nodes/web/instances", json={"count": 1})
    assert added.json() == {"added": ["web.3"]}
    nodes(deploy_api, fake, run_id, 4)
