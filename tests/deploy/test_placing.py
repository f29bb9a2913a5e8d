"""A run's node instances are placed on the site's clouds when it is created or scaled up: a
node without ``cloud:`` goes, instance by instance, to the first cloud by priority with room,
bursting past a full one; the run says which node instance went where and why, its machines
are made there, and its teardown destroys them there."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from stratuslab.cloud import clouds
from stratuslab.cloud.connectors.fake import FakeConnector
from tests.deploy.support import (
    APP,
    BASE,
    Node,
    complete_all,
    nodes,
    push_app,
    start_run,
    wait_for_state,
    wait_until,
)
from tests.support import set_cloud

BOTH = BASE + "  burst: debian-12\n"  # the base image lists an image on both clouds


@pytest.fixture
def burst(engine: Engine, fake: FakeConnector) -> Iterator[FakeConnector]:
    """A second fake cloud, tried after 'local', which is capped at 2 instances."""
    namespace = f"test-burst-{secrets.token_hex(4)}"
    clouds.record(engine, name="burst", connector="fake", options={"namespace": namespace})
    set_cloud(engine, "burst", priority=200)
    set_cloud(engine, "local", max_instances=2)
    yield FakeConnector(namespace=namespace)
    FakeConnector.ex_reset(namespace)


def push(api: TestClient, app: str = APP, base: str = BOTH) -> None:
    push_app(api, app=app)
    answer = api.post(
        "/api/modules",
        json={"modules": [{"path": "apps/base", "file": "apps/base.yaml", "text": base}]},
    )
    assert answer.status_code == 201, answer.text


def where(api: TestClient, run_id: str) -> dict[str, tuple[str, str | None]]:
    run = api.get(f"/api/runs/{run_id}").json()
    return {n["name"]: (n["cloud"], n["placement"]) for n in run["nodes"]}


def param(api: TestClient, run_id: str, key: str) -> Any:
    return api.get(f"/run/{run_id}/{key}").text


def on_both(
    api: TestClient, fake: FakeConnector, burst: FakeConnector, run_id: str
) -> dict[str, Node]:
    """The run's four node instances, two on each cloud, as support.nodes finds them."""
    wait_until(lambda: len(burst.list_instances(tags={"run": run_id})) == 2, what="burst's")
    found = nodes(api, fake, run_id, 2)
    for instance in burst.list_instances(tags={"run": run_id}):
        config = json.loads(
            instance.extra["user_data"].split("'STRATUS_AGENT_CONF'\n", 1)[1].split("\n", 1)[0]
        )
        found[config["node_instance"]] = Node(api, run_id, config["node_instance"], config["token"])
    return found


def test_past_the_local_cap_node_instances_burst_and_the_run_says_where_and_why(
    api: TestClient, fake: FakeConnector, burst: FakeConnector
) -> None:
    push(api)
    run = start_run(api, multiplicity={"web": 3})  # db.1, web.1..3: four on a cloud of two
    placed = where(api, run["id"])
    full = "burst: local is full (2 of 2 instances)"
    assert placed == {
        "db.1": ("local", "first by priority with room"),
        "web.1": ("local", "first by priority with room"),
        "web.2": ("burst", full),
        "web.3": ("burst", full),
    }
    events = api.get(f"/api/runs/{run['id']}/events").json()
    told = [e for e in events if e["kind"] == "placed"]
    assert {(e["fields"]["cloud"], tuple(e["fields"]["vms"])) for e in told} == {
        ("local", ("db.1", "web.1")),
        ("burst", ("web.2", "web.3")),
    }
    # SlipStream's cloudservice says it to the nodes too.
    assert param(api, run["id"], "web.3:cloudservice") == "burst"
    assert param(api, run["id"], "web.1:cloudservice") == "local"
    # The machines are made where the run placed them, and go when it ends.
    all_nodes = on_both(api, fake, burst, run["id"])
    made = sorted(i.name.rsplit("-", 2)[-2] + i.name[-2:] for i in burst.list_instances())
    assert made == ["web-2", "web-3"]
    for state in ("Provisioning", "Executing", "SendingReports", "Ready"):
        complete_all(all_nodes, state)
    wait_for_state(api, run["id"], "Done")
    assert fake.list_instances(tags={"run": run["id"]}) == []
    assert burst.list_instances(tags={"run": run["id"]}) == []


def test_a_node_the_application_pins_stays_on_its_cloud_or_refuses_the_run(
    api: TestClient, burst: FakeConnector
) -> None:
    pinned = APP.replace("    component: apps/web\n", "    component: apps/web\n    cloud: local\n")
    push(api, app=pinned)
    answer = api.post(
        "/api/runs", json={"module": "apps/demo", "keep_running": "never", "multiplicity": {}}
    )
    assert answer.status_code == 409, answer.text  # db.1 and web.1 fill local; web.2 is pinned
    error = answer.json()["error"]
    assert error["type"] == "CapacityExceeded"
    assert error["message"].startswith("node web: no cloud can take 1 instance: local is full")
    assert api.get("/api/runs").json() == []  # nothing recorded


def test_a_cloud_without_the_nodes_image_is_not_burst_to(
    api: TestClient, burst: FakeConnector
) -> None:
    push(api, base=BASE)  # an image for local alone
    answer = api.post(
        "/api/runs", json={"module": "apps/demo", "keep_running": "never", "multiplicity": {}}
    )
    assert answer.status_code == 409, answer.text
    assert "local is full (2 of 2 instances)" in answer.json()["error"]["message"]
    assert burst.list_instances() == []


def test_a_disabled_cloud_takes_no_new_run_but_the_next_does(
    api: TestClient, engine: Engine, burst: FakeConnector
) -> None:
    push(api)
    set_cloud(engine, "local", enabled=False, note="draining for maintenance")
    run = start_run(api)
    assert {cloud for cloud, _ in where(api, run["id"]).values()} == {"burst"}
    assert where(api, run["id"])["db.1"][1] == "burst: local takes no new instances"


def test_a_scale_up_bursts_when_the_first_cloud_is_full(
    api: TestClient, fake: FakeConnector, burst: FakeConnector
) -> None:
    push(api)
    run = start_run(api, mutable=True, multiplicity={"web": 1})
    all_nodes = nodes(api, fake, run["id"], 2)
    for state in ("Provisioning", "Executing", "SendingReports", "Ready"):
        wait_for_state(api, run["id"], state)
        complete_all(all_nodes, state)
    wait_for_state(api, run["id"], "Ready")
    answer = api.post(f"/api/runs/{run['id']}/nodes/web/instances", json={"count": 1})
    assert answer.json() == {"added": ["web.2"]}, answer.text
    assert where(api, run["id"])["web.2"] == ("burst", "burst: local is full (2 of 2 instances)")
    wait_until(lambda: len(burst.list_instances(tags={"run": run["id"]})) == 1, what="burst")
    api.delete(f"/api/runs/{run['id']}")
