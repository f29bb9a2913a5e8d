"""A run's events as SlipStream's event resource, the way ``Api.get_deployment_events`` of
slipstream-api asks for them (api.py): ``PUT /api/event`` with the CIMI filter in a form."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.principal import SERVER
from stratuslab.services import Services
from tests.deploy.support import nodes, push_app, start_run

pytestmark = pytest.mark.usefixtures("fake")
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def query(api: TestClient, **fields: str) -> object:
    return api.put("/api/event", data=fields, headers={**FORM, "Accept": "application/json"})


@pytest.fixture
def run_id(deploy_api: TestClient, fake: FakeConnector) -> str:
    push_app(deploy_api)
    run = start_run(deploy_api)
    members = nodes(deploy_api, fake, run["id"], 3)
    members["web.1"].set("web.1:abort", "no disk")  # an alarm
    return str(run["id"])


def test_a_runs_events_in_slipstreams_shape(deploy_api: TestClient, run_id: str) -> None:
    where = f"content/resource/href='run/{run_id}'"
    answer = query(deploy_api, **{"$filter": where})
    assert answer.status_code == 200  # type: ignore[attr-defined]
    listing = answer.json()  # type: ignore[attr-defined]
    assert listing["id"] == "event" and listing["count"] == len(listing["events"]) > 3
    first = listing["events"][0]
    assert first["type"] == "state" and first["severity"] == "medium"
    assert first["content"] == {
        "resource": {"href": f"run/{run_id}"},
        "state": "Initializing apps/demo/1 for alice",
    }
    assert first["timestamp"] and first["id"].startswith("event/")
    states = [e["content"]["state"] for e in listing["events"] if e["type"] == "state"]
    assert "Provisioning" in states and "SendingReports" in states
    alarms = [e for e in listing["events"] if e["type"] == "alarm"]
    assert alarms[0]["content"]["state"] == "web.1: no disk"
    assert alarms[0]["severity"] == "high"

    chosen = query(deploy_api, **{"$filter": f"{where} and (type='alarm' or type='action')"})
    assert {e["type"] for e in chosen.json()["events"]} == {"alarm"}  # type: ignore[attr-defined]
    page = query(deploy_api, **{"$filter": where, "$first": "2", "$last": "3"})
    assert (
        [e["id"] for e in page.json()["events"]]
        == [  # type: ignore[attr-defined]
            e["id"] for e in listing["events"][1:3]
        ]
    )
    same = deploy_api.get("/api/event", params={"$filter": where})
    assert same.json()["count"] == listing["count"]


def test_another_users_run_has_no_events_for_them(deploy_api: TestClient, run_id: str) -> None:
    services: Services = deploy_api.app.state.services  # type: ignore[attr-defined]
    services.accounts.add_user("bob", caller=SERVER, password="bob horse")
    bob = TestClient(deploy_api.app, headers={"Accept": "application/json"})
    bob.auth = ("bob", "bob horse")
    where = f"content/resource/href='run/{run_id}'"
    assert bob.put("/api/event", data={"$filter": where}).json()["count"] == 0
    nobody = TestClient(deploy_api.app).put("/api/event", data={"$filter": where})
    assert nobody.status_code == 401 and nobody.json()["status"] == 401


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("", "name one run"),
        ("type='state'", "name one run"),
        ("content/resource/href='job/1'", "name one run"),
        ("content/resource/href='run/a' and content/resource/href='run/b'", "name one run"),
        ("content/resource/href='run/a' or type='state'", "joined by 'and'"),
        ("content/resource/href='run/a' and (type='state'", "unclosed"),
        ("content/resource/href='run/a' and (type='state' or name='x')", "does not filter"),
        ("content/resource/href='run/a' and type='weird'", "no event type 'weird'"),
        ("content/resource/href='run/a' and type!='state'", "cannot read"),
        ("x" * 2000, "at most 1024 characters"),
    ],
)
def test_a_filter_this_server_does_not_read_is_a_clear_422(
    deploy_api: TestClient, given: str, said: str
) -> None:
    answer = query(deploy_api, **{"$filter": given})
    assert answer.status_code == 422  # type: ignore[attr-defined]
    assert said in answer.json()["message"]  # type: ignore[attr-defined]


def test_a_bad_page_is_a_422(deploy_api: TestClient) -> None:
    where = "content/resource/href='run/abc'"
    for bad in ("abc", "-1", "9" * 12):
        answer = query(deploy_api, **{"$filter": where, "$first": bad})
        assert answer.status_code == 422, bad  # type: ignore[attr-defined]
