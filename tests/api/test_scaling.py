"""Scalable runs: instances added and removed while the application runs."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from stratuslab.cloud.connectors.fake import FakeConnector
from tests.deploy.support import (
    Node,
    complete_all,
    nodes,
    push_app,
    start_run,
    wait_for_state,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("fake")
ROUND = ("Provisioning", "Executing", "SendingReports", "Ready")


def to_ready(api: TestClient, run_id: str, members: dict[str, Node]) -> None:
    for state in ROUND:
        wait_for_state(api, run_id, state)
        complete_all(members, state)


def test_adding_and_removing_instances_goes_round_the_barriers_again(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    push_app(deploy_api)
    run = start_run(deploy_api, mutable=True, keep_running="never")  # scalable runs stay regardless
    members = nodes(deploy_api, fake, run["id"], 3)
    members["db.1"].set("db.1:password", "pw")
    to_ready(deploy_api, run["id"], members)
    wait_until(
        lambda: deploy_api.get(f"/api/runs/{run['id']}").json()["state"] == "Ready", what="Ready"
    )

    added = deploy_api.post(f"/api/runs/{run['id']}/nodes/web/instances", json={"count": 1}).json()
    assert added == {"added": ["web.3"]}
    assert deploy_api.get(f"/api/runs/{run['id']}").json()["scaling"] == {
        "action": "vm_add", "node": "web", "vms": "web.3"
    }  # fmt: skip
    members = nodes(deploy_api, fake, run["id"], 4)
    assert members["web.3"].get("db_password").text == "pw"  # a new instance gets what was set
    assert members["web.3"].get("web:ids").text == "1,2,3"
    plan = deploy_api.get(
        f"/api/runs/{run['id']}/nodes/web.1/plan", headers=members["web.1"].headers
    ).json()
    assert plan["scaling"] == {"action": "vm_add", "node": "web", "vms": "web.3"}
    to_ready(deploy_api, run["id"], members)
    wait_until(
        lambda: deploy_api.get(f"/api/runs/{run['id']}").json()["scaling"] is None,
        what="the round over",
    )

    removed = deploy_api.delete(
        f"/api/runs/{run['id']}/nodes/web/instances", params={"ids": "1"}
    ).json()
    assert removed == {"removed": ["web.1"]}
    wait_until(
        lambda: len(fake.list_instances(tags={"run": run["id"]})) == 3, what="web.1 destroyed"
    )
    assert members["db.1"].get("web:ids").text == "2,3"
    del members["web.1"]
    to_ready(deploy_api, run["id"], members)

    assert deploy_api.delete(f"/api/runs/{run['id']}").status_code == 200
    wait_for_state(deploy_api, run["id"], "Done")
    assert fake.list_instances(tags={"run": run["id"]}) == []


def test_slipstream_scaling_requests(deploy_api: TestClient, fake: FakeConnector) -> None:
    push_app(deploy_api)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    answer = deploy_api.post("/run", content="refqname=module/apps/demo&mutable=on", headers=form)
    run_id = answer.headers["Location"].rsplit("/", 1)[1]
    members = nodes(deploy_api, fake, run_id, 3)
    busy = deploy_api.post(f"/run/{run_id}/web", content="n=2", headers=form)
    assert busy.status_code == 409 and "one scale action at a time, from Ready" in busy.text
    to_ready(deploy_api, run_id, members)
    grown = deploy_api.post(f"/run/{run_id}/web", content="n=2", headers=form)
    assert grown.status_code == 200 and grown.text == "web.3,web.4"
    members = nodes(deploy_api, fake, run_id, 5)
    to_ready(deploy_api, run_id, members)
    assert (
        deploy_api.request(
            "DELETE", f"/run/{run_id}/web", content="ids=3,4", headers=form
        ).status_code
        == 204
    )
    assert members["db.1"].get("web:multiplicity").text == "2"


def test_only_scalable_runs_scale(deploy_api: TestClient, fake: FakeConnector) -> None:
    push_app(deploy_api)
    run = start_run(deploy_api)
    refused = deploy_api.post(f"/api/runs/{run['id']}/nodes/web/instances", json={"count": 1})
    assert (
        refused.status_code == 409
        and refused.json()["error"]["message"] == "the run is not scalable"
    )
    unknown = deploy_api.post(f"/api/runs/{run['id']}/nodes/nope/instances", json={"count": 1})
    assert unknown.status_code == 409  # not scalable is said first


def test_a_removed_instance_no_longer_has_a_say(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    """Its agent may still run while its machine is destroyed: nothing it sends may count."""
    push_app(deploy_api)
    run = start_run(deploy_api, mutable=True)
    members = nodes(deploy_api, fake, run["id"], 3)
    to_ready(deploy_api, run["id"], members)
    deploy_api.delete(f"/api/runs/{run['id']}/nodes/web/instances", params={"ids": "2"})
    gone = members["web.2"]
    assert gone.set("web.2:abort", "cannot run my hook").status_code == 401
    assert gone.get("ss:state").status_code == 401
    assert deploy_api.get(f"/api/runs/{run['id']}").json()["abort_reason"] is None
