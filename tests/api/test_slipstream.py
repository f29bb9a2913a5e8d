"""The SlipStream-compatible /run resource, as its clients and node tools see it."""

from __future__ import annotations

from collections.abc import Iterator
from xml.etree import ElementTree as ET

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from stratuslab.cloud import clouds
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.principal import SERVER, Principal
from stratuslab.services import Services
from tests.deploy.support import nodes, push_app, wait_for_state, wait_until

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


# -- who may call: SlipStream's clients send a session cookie, or HTTP Basic ------------------


def _client(api: TestClient, how: str, user: str) -> TestClient:
    """A client without the site token, authenticated as ``user`` the way ``how`` says."""
    services: Services = api.app.state.services  # type: ignore[attr-defined]
    if services.accounts.principal(user) is None:
        services.accounts.add_user(user, caller=SERVER, password=f"{user} horse")
    client = TestClient(api.app)
    if how == "cookie":
        login = client.post(
            "/api/session",
            json={
                "sessionTemplate": {
                    "href": "session-template/internal",
                    "username": user,
                    "password": f"{user} horse",
                }
            },
        )
        assert login.status_code == 201, login.text
    elif how == "basic":
        client.auth = (user, f"{user} horse")
    else:
        key = services.credentials.create_key(caller=Principal.for_user(user))
        client.headers["Authorization"] = f"Bearer {key['token']}"
    return client


@pytest.mark.parametrize("how", ["cookie", "basic", "api-key"])
def test_every_run_request_takes_a_session_cookie_basic_or_an_api_key(
    deploy_api: TestClient, fake: FakeConnector, how: str
) -> None:
    push_app(deploy_api)
    alice = _client(deploy_api, how, "alice")  # the site's user: the modules are hers
    # As SlipStream's HttpClient sends every request (lib/slipstream/HttpClient.py, _call).
    alice.headers.update({"Accept": "application/xml", "ss-cache-key": ""})
    started = alice.post(
        "/run", content="refqname=module/apps/demo&keep-running=never", headers=FORM
    )
    assert started.status_code == 201, started.text
    run_id = started.headers["Location"].rsplit("/", 1)[1]
    members = nodes(deploy_api, fake, run_id, 3)
    assert ET.fromstring(alice.get(f"/run/{run_id}").content).attrib["user"] == "alice"
    listed = ET.fromstring(alice.get("/run", params={"activeOnly": "true"}).content)
    assert [item.attrib["uuid"] for item in listed.iter("item")] == [run_id]
    assert alice.put(f"/run/{run_id}/web.1:ready", content="yes").status_code == 200
    assert members["db.1"].get("web.1:ready").text == "yes"
    assert alice.get(f"/run/{run_id}/web.1:ready").text == "yes"
    assert alice.delete(f"/run/{run_id}/web.1:ready").status_code == 204
    assert alice.get(f"/run/{run_id}/web.1:ready").status_code == 412
    assert alice.post(f"/run/{run_id}/web.1:complete").status_code == 200

    bob = _client(deploy_api, how, "bob")
    for answer in (bob.get(f"/run/{run_id}"), bob.get(f"/run/{run_id}/ss:state")):
        assert answer.status_code == 404  # not even told that it exists
    assert bob.delete(f"/run/{run_id}").status_code == 404
    assert alice.delete(f"/run/{run_id}").status_code == 204
    wait_for_state(deploy_api, run_id, "Cancelled")


# -- the known gaps (SLIPSTREAM_PROTOCOL.md) ----------------------------------------------------


def test_delete_of_a_key_clears_it_and_of_a_node_name_removes_instances(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    """SlipStream routes DELETE /run/<uuid>/<key> to the runtime parameter when the key holds a
    ':' (RuntimeParameterResource.resetRuntimeParameter: 204), to the node otherwise."""
    push_app(deploy_api)
    run_id = deploy_api.post("/api/runs", json={"module": "apps/demo"}).json()["id"]
    members = nodes(deploy_api, fake, run_id, 3)
    web = members["web.1"]
    assert web.set("web.1:ready", "yes").status_code == 200
    cleared = deploy_api.delete(f"/run/{run_id}/web.1:ready", headers=web.headers)
    assert cleared.status_code == 204
    assert web.get("web.1:ready").status_code == 412  # set no more
    assert deploy_api.delete(f"/run/{run_id}/web.2:nope").status_code == 404
    assert deploy_api.delete(f"/run/{run_id}/ss:state").status_code == 409  # the server's
    not_scalable = deploy_api.request("DELETE", f"/run/{run_id}/web", content="ids=2", headers=FORM)
    assert not_scalable.status_code == 409 and "not scalable" in not_scalable.text
    assert [n for n in members if fake.list_instances(tags={"node-instance": n})] == list(members)


def test_slipstreams_ss_abort_cancel_clears_through_delete(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    """ss-abort --cancel of slipstream-client 3.71 (lib/slipstream/Client.py, cancel_abort):
    DELETE ss:abort?ignoreabort=true, then DELETE <node>.1:abort?ignoreabort=true. A flag
    nobody raised clears at once; once the run is aborted, the node's own flag clears and
    ss:abort stays: an abort is final here."""
    push_app(deploy_api)
    run_id = deploy_api.post("/api/runs", json={"module": "apps/demo"}).json()["id"]
    members = nodes(deploy_api, fake, run_id, 3)
    web = members["web.1"]
    cancel = {"Content-Type": "application/xml", "Accept": "application/xml", "ss-cache-key": ""}
    query = {"ignoreabort": "true"}
    for key in ("ss:abort", "web.1:abort"):
        answer = deploy_api.delete(f"/run/{run_id}/{key}", params=query, headers=cancel)
        assert answer.status_code == 204, (key, answer.text)
    assert deploy_api.get(f"/api/runs/{run_id}").json()["abort_reason"] is None

    assert web.set("web.1:abort", "disk full").status_code == 200
    with_token = {**cancel, **web.headers}
    final = deploy_api.delete(f"/run/{run_id}/ss:abort", params=query, headers=with_token)
    assert final.status_code == 409 and "an abort is final" in final.text
    own = deploy_api.delete(f"/run/{run_id}/web.1:abort", params=query, headers=with_token)
    assert own.status_code == 204
    assert web.get("web.1:abort", ignoreabort="true").status_code == 412
    assert web.get("ss:abort", ignoreabort="true").text == "web.1: disk full"
    theirs = deploy_api.delete(f"/run/{run_id}/db.1:abort", params=query, headers=with_token)
    assert theirs.status_code == 403


@pytest.mark.parametrize(
    ("given", "mutable"),
    [("on", True), ("true", True), ("yes", True), ("TRUE", True), ("off", False), ("", False)],
)
def test_mutable_is_true_for_on_true_and_yes(
    deploy_api: TestClient, given: str, mutable: bool
) -> None:
    """ss-execute --scalable sends mutable=true, Api.deploy(scalable=True) mutable=on."""
    push_app(deploy_api)
    body = f"refqname=module/apps/demo&keep-running=never&mutable={given}"
    answer = deploy_api.post("/run", content=body, headers=FORM)
    assert answer.status_code == 201, answer.text
    run_id = answer.headers["Location"].rsplit("/", 1)[1]
    assert deploy_api.get(f"/api/runs/{run_id}").json()["mutable"] is mutable
    assert (
        ET.fromstring(deploy_api.get(f"/run/{run_id}").content).attrib["mutable"]
        == str(mutable).lower()
    )


TWO_CLOUDS = "kind: image\nimages:\n  local: debian-12\n  other: debian-12\n"


@pytest.fixture
def other_cloud(engine: Engine, fake_namespace: str) -> Iterator[FakeConnector]:
    namespace = f"{fake_namespace}-other"
    clouds.record(engine, name="other", connector="fake", options={"namespace": namespace})
    yield FakeConnector(namespace=namespace)
    FakeConnector.ex_reset(namespace)


def test_the_start_form_overrides_a_nodes_cloud_and_tolerated_failures(
    deploy_api: TestClient, fake: FakeConnector, other_cloud: FakeConnector
) -> None:
    push_app(deploy_api)
    deploy_api.post(
        "/api/modules",
        json={"modules": [{"path": "apps/base", "file": "apps/base.yaml", "text": TWO_CLOUDS}]},
    )
    body = (
        "refqname=module/apps/demo&keep-running=never"
        "&parameter--node--web--cloudservice=other"
        "&parameter--node--web--max-provisioning-failures=1"
    )
    answer = deploy_api.post("/run", content=body, headers=FORM)
    assert answer.status_code == 201, answer.text
    run_id = answer.headers["Location"].rsplit("/", 1)[1]
    services: Services = deploy_api.app.state.services  # type: ignore[attr-defined]
    plan = services.runs.plan(run_id, caller=SERVER)
    assert (plan.nodes["web"].cloud, plan.nodes["web"].max_provisioning_failures) == ("other", 1)
    assert (plan.nodes["db"].cloud, plan.nodes["db"].max_provisioning_failures) == ("local", 0)
    wait_until(lambda: len(other_cloud.list_instances(tags={"run": run_id})) == 2, what="web")
    assert len(fake.list_instances(tags={"run": run_id})) == 1  # db stays where it was
    run = ET.fromstring(deploy_api.get(f"/run/{run_id}").content)
    assert run.attrib["cloudServiceNames"] == "local,other"


@pytest.mark.parametrize(
    ("field", "detail"),
    [
        ("parameter--node--web--cloudservice=nowhere", "no cloud 'nowhere' at this site"),
        ("parameter--node--nope--cloudservice=local", "no node 'nope' (nodes: db, web)"),
        ("parameter--node--web--max-provisioning-failures=-1", "must be a number from 0"),
        ("parameter--node--web--max-provisioning-failures=10001", "between 0 and 10000"),
        ("parameter--node--nope--max-provisioning-failures=1", "no node 'nope'"),
    ],
)
def test_a_bad_override_is_a_409_with_a_clear_detail(
    deploy_api: TestClient, fake: FakeConnector, field: str, detail: str
) -> None:
    push_app(deploy_api)
    answer = deploy_api.post("/run", content=f"refqname=module/apps/demo&{field}", headers=FORM)
    assert answer.status_code == 409
    assert detail in ET.fromstring(answer.content).attrib["detail"]
    assert deploy_api.get("/api/runs").json() == []  # nothing was started
    assert fake.list_instances() == []


def test_a_cloud_the_image_lacks_is_a_409_naming_the_image(
    deploy_api: TestClient, other_cloud: FakeConnector
) -> None:
    push_app(deploy_api)  # apps/base has an image on the cloud local only
    answer = deploy_api.post(
        "/run",
        content="refqname=module/apps/demo&parameter--node--db--cloudservice=other",
        headers=FORM,
    )
    assert answer.status_code == 409
    assert "no image for cloud 'other'" in ET.fromstring(answer.content).attrib["detail"]
