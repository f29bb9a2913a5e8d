"""What a node's token may do: read its own run's parameters, write only its own node
instance's declared outputs, its statecustom, url.service and abort flag, the run's globals, and
its own report and output; and only while its run is not over.

Issue 7 measured, inside one run, node db.1 raising web.1's abort flag (the run aborted blaming
web.1) and web.1 setting db.1:hostname to evil.example, which the other nodes then read. Each
such write is refused here (403, naming the key), on both stores, and the run is as it was.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from stratuslab.api.app import create_app
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.config import Settings
from tests.deploy.support import (
    Node,
    complete_all,
    nodes,
    push_app,
    start_run,
    wait_for_state,
)


def started(api: TestClient, fake: FakeConnector, **body: Any) -> tuple[str, dict[str, Node]]:
    push_app(api)
    run = start_run(api, **body)
    return run["id"], nodes(api, fake, run["id"], 3)


def params(api: TestClient, run_id: str) -> dict[str, str | None]:
    found: dict[str, str | None] = api.get(f"/api/runs/{run_id}/params").json()
    return found


def abort_reason(api: TestClient, run_id: str) -> str | None:
    return api.get(f"/api/runs/{run_id}").json()["abort_reason"]  # type: ignore[no-any-return]


# -- another node's parameters ----------------------------------------------------------


@pytest.mark.parametrize(
    ("writer", "key", "value", "named"),
    [
        # issue 7: the run aborted blaming web.1
        ("db.1", "web.1:abort", "web.1 is broken", "web.1:abort"),
        ("db.1", "web:abort", "web.1 is broken", "web.1:abort"),  # web:abort is web.1's
        ("db.1", "web.1:abort", "", "web.1:abort"),  # clearing another's flag
        # issue 7: the other nodes then read evil.example
        ("web.1", "db.1:hostname", "evil.example", "db.1:hostname"),
        ("web.1", "db.1:password", "guessed", "db.1:password"),  # another's output
        ("web.1", "db:password", "guessed", "db.1:password"),
        ("web.1", "web.2:ready", "true", "web.2:ready"),  # another instance of its node
        ("web.1", "web.2:statecustom", "web.2 is done", "web.2:statecustom"),
        ("web.1", "db.1:url.service", "http://evil.example", "db.1:url.service"),
        ("web.1", "db:ids", "1,2,3", "db:ids"),  # another node's, which the server keeps
    ],
)
def test_a_node_may_not_write_another_nodes_parameter(
    deploy_api: TestClient, fake: FakeConnector, writer: str, key: str, value: str, named: str
) -> None:
    run_id, members = started(deploy_api, fake)
    before = params(deploy_api, run_id)
    answer = members[writer].set(key, value)
    assert answer.status_code == 403, answer.text
    assert answer.text.startswith(f"{writer} may not set {named}: a node sets only its own")
    assert params(deploy_api, run_id) == before
    assert abort_reason(deploy_api, run_id) is None
    # What the other nodes read is what the server (or its own node) set.
    for reader in members.values():
        assert reader.get("db:hostname").text == before["db.1:hostname"]


def test_a_node_may_not_set_its_own_input(deploy_api: TestClient, fake: FakeConnector) -> None:
    run_id, members = started(deploy_api, fake)
    for key in ("web.1:db_password", "greeting"):
        answer = members["web.1"].set(key, "mine now")
        assert answer.status_code == 403, answer.text
        assert answer.text.startswith(f"web.1 may not set web.1:{key.split(':')[-1]}: an input")
    assert params(deploy_api, run_id)["web.1:greeting"] == "hello"
    assert abort_reason(deploy_api, run_id) is None  # refused, not a broken recipe
    # The owner may still set an input of her run.
    assert deploy_api.put(f"/run/{run_id}/web.1:greeting", content=b"bonjour").status_code == 200
    assert members["web.1"].get("greeting").text == "bonjour"


def test_what_a_node_may_write(deploy_api: TestClient, fake: FakeConnector) -> None:
    run_id, members = started(deploy_api, fake)
    db, web = members["db.1"], members["web.1"]
    assert db.set("password", "s3cret").status_code == 200  # its declared output
    assert web.get("db_password").text == "s3cret"  # ... pushed into the mapped inputs
    assert members["web.2"].get("web.2:db_password").text == "s3cret"
    assert web.set("web.1:ready", "true").status_code == 200
    assert web.set("statecustom", "installing nginx").status_code == 200
    assert web.set("url.service", "http://web-1.example").status_code == 200
    assert web.set("ss:url.service", "http://web.example").status_code == 200
    found = params(deploy_api, run_id)
    assert found["web.1:statecustom"] == "installing nginx"
    assert found["web.1:url.service"] == "http://web-1.example"
    assert found["ss:url.service"] == "http://web.example"
    # What the server states stays the server's (409, SlipStream's answer), its own too.
    assert web.set("hostname", "evil.example").status_code == 409
    assert web.set("ss:state", "Done").status_code == 409
    assert abort_reason(deploy_api, run_id) is None


def test_writes_arriving_together_are_judged_one_by_one(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    """Writes are applied in batches (deploy/batches.py): a refused one among many allowed
    ones is refused, and only it."""
    run_id, members = started(deploy_api, fake)
    answers: dict[str, int] = {}

    def write(name: str, node: Node, key: str, value: str) -> None:
        answers[name] = node.set(key, value).status_code

    writes = [(f"ready-{i}", members["web.1"], "ready", str(i)) for i in range(8)] + [
        ("own input", members["web.2"], "greeting", "mine"),
        ("other output", members["web.1"], "db.1:password", "guessed"),
        ("own output", members["db.1"], "password", "s3cret"),
    ]
    threads = [threading.Thread(target=write, args=w) for w in writes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers.pop("own input") == answers.pop("other output") == 403
    assert set(answers.values()) == {200}
    found = params(deploy_api, run_id)
    assert (found["web.2:greeting"], found["db.1:password"]) == ("hello", "s3cret")


@pytest.mark.parametrize("request_name", ["complete", "plan", "logs", "report"])
def test_a_node_may_not_speak_for_another(
    deploy_api: TestClient, fake: FakeConnector, request_name: str
) -> None:
    """Its completions, its plan, its recipes' output and its report are a node's own."""
    run_id, members = started(deploy_api, fake)
    before = deploy_api.get(f"/api/runs/{run_id}").json()
    events = deploy_api.get(f"/api/runs/{run_id}/events").json()
    posing = Node(deploy_api, run_id, "web.1", members["db.1"].headers["Authorization"][7:])
    answer = node_requests(posing)[request_name]()
    assert answer.status_code == 403, answer.text
    assert "db.1 may not" in answer.text and "web.1" in answer.text
    assert deploy_api.get(f"/api/runs/{run_id}").json() == before
    assert deploy_api.get(f"/api/runs/{run_id}/events").json() == events
    assert deploy_api.get(f"/api/runs/{run_id}/logs").json() == []
    assert deploy_api.get(f"/api/runs/{run_id}/reports").json() == []


# -- aborts name who raised them ----------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("ss:abort", "the database is down", "db.1: the database is down"),
        ("ss:abort", "web.1: its fault", "db.1: web.1: its fault"),  # it cannot speak for web.1
        ("abort", "disk full", "db.1: disk full"),
        ("db.1:abort", "db.1: disk full", "db.1: disk full"),
    ],
)
def test_an_abort_a_node_raises_names_that_node(
    deploy_api: TestClient, fake: FakeConnector, key: str, value: str, reason: str
) -> None:
    run_id, members = started(deploy_api, fake)
    assert members["db.1"].set(key, value).status_code == 200
    assert abort_reason(deploy_api, run_id) == reason
    found = params(deploy_api, run_id)
    assert (found["ss:abort"], found["db.1:abort"], found["web.1:abort"]) == (reason, reason, None)
    aborts = deploy_api.get(f"/api/runs/{run_id}/events").json()
    assert [e["node_instance"] for e in aborts if e["kind"] == "abort"] == ["db.1"]


# -- whose token, and until when ----------------------------------------------------------

REPORT = gzip.compress(b"a report")


def node_requests(node: Node) -> dict[str, Callable[[], Any]]:
    """Every request a node's agent makes, as ``node`` would make it on its token's run."""
    api, run, name, headers = node.api, node.run_id, node.name, node.headers
    lines = {"node_instance": name, "lines": [{"text": "a line"}]}
    return {
        "get": lambda: node.get("ss:state"),
        "wait": lambda: node.get("ss:state", wait=0.1, differs="x"),
        "set": lambda: node.set("statecustom", "still here", ignoreabort="true"),
        "complete": lambda: node.complete(),
        "plan": lambda: api.get(f"/api/runs/{run}/nodes/{name}/plan", headers=headers),
        "logs": lambda: api.post(f"/api/runs/{run}/logs", json=lines, headers=headers),
        "report": lambda: api.put(
            f"/api/runs/{run}/reports/{name}", content=REPORT, headers=headers
        ),
        "xml": lambda: api.get(f"/run/{run}", headers=headers),
    }


REQUESTS = ["get", "wait", "set", "complete", "plan", "logs", "report", "xml"]


@pytest.mark.parametrize("request_name", REQUESTS)
def test_a_token_of_one_run_is_refused_on_another(
    deploy_api: TestClient, fake: FakeConnector, request_name: str
) -> None:
    _, members_a = started(deploy_api, fake)
    run_b = start_run(deploy_api)["id"]
    members_b = nodes(deploy_api, fake, run_b, 3)
    before = (params(deploy_api, run_b), deploy_api.get(f"/api/runs/{run_b}/events").json())
    impostor = Node(deploy_api, run_b, "db.1", members_a["db.1"].headers["Authorization"][7:])
    answer = node_requests(impostor)[request_name]()
    assert answer.status_code == 401, answer.text
    assert f"this token is not valid for run {run_b}" in answer.text
    after = (params(deploy_api, run_b), deploy_api.get(f"/api/runs/{run_b}/events").json())
    assert after == before
    # Its own run and the other run's own nodes are not affected.
    assert node_requests(members_a["db.1"])[request_name]().status_code < 400
    assert node_requests(members_b["db.1"])[request_name]().status_code < 400


def test_a_token_works_until_its_run_is_over(deploy_api: TestClient, fake: FakeConnector) -> None:
    """The agent's whole life: every state's completion, its report in SendingReports, its
    output; then Done, and its token is refused."""
    run_id, members = started(deploy_api, fake)
    for state_name in ("Provisioning", "Executing", "SendingReports"):
        wait_for_state(deploy_api, run_id, state_name)
        for node in members.values():
            sent = node_requests(node)
            assert sent["logs"]().status_code == 204
            assert sent["set"]().status_code == 200
            if state_name == "SendingReports":
                assert sent["report"]().status_code == 201
        complete_all(members, state_name)
    wait_for_state(deploy_api, run_id, "Ready")
    complete_all(members, "Ready")
    wait_for_state(deploy_api, run_id, "Done")
    reports = deploy_api.get(f"/api/runs/{run_id}/reports").json()
    assert [r["node_instance"] for r in reports] == ["db.1", "web.1", "web.2"]
    assert_over(members, "Done")


@pytest.fixture
def patient_api(settings: Settings, fake: FakeConnector) -> Iterator[TestClient]:
    """The deployment API with a report grace no loaded machine outlasts: an aborted run then
    waits in SendingReports until every node has completed it, as the test makes them."""
    app = create_app(settings.with_overrides(token="test-token", report_grace_s=120))
    with TestClient(app, headers={"Authorization": "Bearer test-token"}) as client:
        yield client


@pytest.mark.parametrize("ending", ["Aborted", "Cancelled"])
def test_a_token_is_refused_once_its_run_is_aborted_or_cancelled(
    patient_api: TestClient, fake: FakeConnector, ending: str
) -> None:
    deploy_api = patient_api
    run_id, members = started(deploy_api, fake)
    if ending == "Aborted":
        assert members["web.2"].set("abort", "tests failed").status_code == 200
        wait_for_state(deploy_api, run_id, "SendingReports")
        # An aborted run still collects reports: the token works until the run is over.
        assert node_requests(members["web.2"])["report"]().status_code == 201
        complete_all(members, "SendingReports")
    else:
        assert deploy_api.delete(f"/run/{run_id}").status_code == 204
    wait_for_state(deploy_api, run_id, ending)
    assert_over(members, ending)


def assert_over(members: dict[str, Node], ending: str) -> None:
    for node in members.values():
        for name, send in node_requests(node).items():
            answer = send()
            assert answer.status_code == 401, (node.name, name, answer.text)
            message = answer.json()["error"]["message"]
            assert (
                message == f"the run is over ({ending}): the token of {node.name} no longer works"
            )


def test_the_owner_still_reads_a_run_that_is_over(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    run_id, _members = started(deploy_api, fake)
    assert deploy_api.delete(f"/run/{run_id}").status_code == 204
    wait_for_state(deploy_api, run_id, "Cancelled")
    assert deploy_api.get(f"/run/{run_id}/ss:state").text == "Cancelled"
    assert json.loads(deploy_api.get(f"/api/runs/{run_id}/params").text)["ss:state"] == "Cancelled"
