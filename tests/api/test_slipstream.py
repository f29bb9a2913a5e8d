"""The SlipStream-compatible /run resource, as its clients and node tools see it."""

from __future__ import annotations

from xml.etree import ElementTree as ET

import pytest
from fastapi.testclient import TestClient

from stratuslab.cloud.connectors.fake import FakeConnector
from tests.deploy.support import nodes, push_app, wait_for_state

pytestmark = pytest.mark.usefixtures("fake")
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_a_form_post_starts_a_run_and_answers_its_location(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    push_app(deploy_api)
    body = (
        "refqname=module/apps/demo/1&keep-running=never&tags=a,b"
        "&parameter--node--web--greeting=bonjour&parameter--node--web--multiplicity=1&parameter--site=lab"
    )
    answer = deploy_api.post("/run", content=body, headers=FORM)
    assert answer.status_code == 201, answer.text
    run_id = answer.headers["Location"].rsplit("/run/", 1)[1]
    members = nodes(deploy_api, fake, run_id, 2)
    assert sorted(members) == ["db.1", "web.1"]
    assert members["web.1"].get("web.1:greeting").text == "bonjour"
    assert deploy_api.get(f"/run/{run_id}/ss:site").text == "lab"
    assert deploy_api.get(f"/run/{run_id}/ss:tags").text == "a,b"


def test_the_run_document_is_xml_with_every_runtime_parameter(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    push_app(deploy_api)
    run_id = deploy_api.post(
        "/api/runs", json={"module": "apps/demo", "keep_running": "never"}
    ).json()["id"]
    nodes(deploy_api, fake, run_id, 3)
    answer = deploy_api.get(f"/run/{run_id}")
    assert answer.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(answer.content)
    assert root.tag == "run" and root.attrib["uuid"] == run_id
    assert root.attrib["moduleResourceUri"] == "module/apps/demo/1"
    assert root.attrib["state"] == "Provisioning" and root.attrib["user"] == "alice"
    assert root.attrib["cloudServiceNames"] == "local" and root.attrib["mutable"] == "false"
    values = {p.attrib["key"]: p.text for p in root.iter("runtimeParameter")}
    assert values["ss:state"] == "Provisioning"
    assert values["web.2:hostname"].startswith("10.99.")  # type: ignore[union-attr]
    assert values["web:ids"] == "1,2"
    listing = ET.fromstring(deploy_api.get("/run", params={"activeOnly": "true"}).content)
    assert [item.attrib["uuid"] for item in listing.iter("item")] == [run_id]


def test_a_refused_start_answers_409_with_an_xml_detail(deploy_api: TestClient) -> None:
    push_app(deploy_api)
    answer = deploy_api.post(
        "/run", content="refqname=module/apps/demo&parameter--node--nope--x=1", headers=FORM
    )
    assert answer.status_code == 409
    detail = ET.fromstring(answer.content).attrib["detail"]
    assert "nope" in detail
    missing = deploy_api.post("/run", content="refqname=module/apps/absent", headers=FORM)
    assert (
        missing.status_code == 409
        and "no module 'apps/absent'" in ET.fromstring(missing.content).attrib["detail"]
    )


def test_delete_terminates(deploy_api: TestClient, fake: FakeConnector) -> None:
    push_app(deploy_api)
    run_id = deploy_api.post("/api/runs", json={"module": "apps/demo"}).json()["id"]
    nodes(deploy_api, fake, run_id, 3)
    assert deploy_api.delete(f"/run/{run_id}").status_code == 204
    wait_for_state(deploy_api, run_id, "Cancelled")
    assert fake.list_instances(tags={"run": run_id}) == []
