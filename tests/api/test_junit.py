"""``GET /api/runs/<id>/junit``: a run as JUnit XML, for whoever may read the run, on both
stores, from what nodes speaking the real protocol sent (their output, the recipes'
boundaries, an abort, a report archive holding a JUnit file)."""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.deploy import logs
from tests.api.secretapp import user_client
from tests.deploy.junitdata import cases, checked, outcome
from tests.deploy.support import Node, complete_all, nodes, push_app, wait_for_state

pytestmark = pytest.mark.usefixtures("fake")
FAILED = "deployment recipe of apps/web exited with 3: bad config"
JUNIT = b'<testsuite name="smoke"><testcase name="home page" time="0.2"/></testsuite>'


def send(member: Node, *lines: dict[str, Any]) -> None:
    body = {"node_instance": member.name, "lines": list(lines)}
    answer = member.api.post(f"/api/runs/{member.run_id}/logs", json=body, headers=member.headers)
    assert answer.status_code == 204, answer.text


def marker(phase: str, event: str, **end: Any) -> dict[str, Any]:
    text = json.dumps({"event": event, "n": 1, "module": f"apps/{phase}", **end})
    return {"state": "Executing", "recipe": phase, "stream": "phase", "text": text}


def output(phase: str, text: str, stream: str = "stdout") -> dict[str, Any]:
    return {"state": "Executing", "recipe": phase, "stream": stream, "text": text}


def report_archive(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as packed:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            packed.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def aborted_run(deploy_api: TestClient, owner: TestClient, fake: FakeConnector) -> str:
    """Owner's run of apps/demo: db.1 deployed, web.1's deployment failed (and it raised the
    abort), web.2 never got to its deployment; db.1 sent a report holding a JUnit file."""
    push_app(owner)
    started = owner.post("/api/runs", json={"module": "apps/demo", "keep_running": "never"})
    assert started.status_code == 201, started.text
    run_id: str = started.json()["id"]
    members = nodes(deploy_api, fake, run_id, 3)
    complete_all(members, "Provisioning")
    wait_for_state(deploy_api, run_id, "Executing")
    db, web = members["db.1"], members["web.1"]
    assert db.set("db.1:password", "pw").status_code == 200
    send(
        db,
        marker("deployment", "start"),
        output("deployment", "db ready"),
        marker("deployment", "end", code=0, stopped=False),
    )
    assert db.complete("Executing").status_code == 200
    send(web, *(m for p in ("packages",) for m in (marker(p, "start"), marker(p, "end", code=0))))
    send(
        web,
        marker("deployment", "start"),
        output("deployment", "\x1b[1mworking\x1b[0m"),
        output("deployment", "bad config", "stderr"),
        marker("deployment", "end", code=3, stopped=False),
    )
    assert web.set("abort", FAILED).status_code == 200
    wait_for_state(deploy_api, run_id, "SendingReports")
    archive = report_archive({"reports/smoke.xml": JUNIT, "logs/agent.log": b"..."})
    sent = db.api.put(f"/api/runs/{run_id}/reports/db.1", content=archive, headers=db.headers)
    assert sent.status_code == 201, sent.text
    complete_all(members, "SendingReports")
    wait_for_state(deploy_api, run_id, "Aborted")
    return run_id


def test_the_owner_reads_the_junit_report_of_an_aborted_run(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    alice = user_client(deploy_api, "alice")
    run_id = aborted_run(deploy_api, alice, fake)

    answer = alice.get(f"/api/runs/{run_id[:8]}/junit")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/xml"
    root = checked(answer.content)
    assert [s.get("name") for s in root.findall("testsuite")] == [
        "apps.demo.db",
        "apps.demo.web",
        "smoke",
    ]
    found = cases(root)
    failure = found["web.1 deployment"].find("failure")
    assert failure is not None and failure.get("message") == f"web.1: {FAILED}"
    assert found["web.1 deployment"].findtext("system-out") == "working\nbad config\n"
    assert outcome(found["web.1 packages"]) == "passed"
    assert outcome(found["db.1 deployment"]) == "passed"
    assert found["db.1 deployment"].findtext("system-out") == "db ready\n"
    skipped = found["web.2 deployment"].find("skipped")
    assert skipped is not None and skipped.get("message") == (
        f"not run: the run aborted first: web.1: {FAILED}"
    )
    assert outcome(found["home page"]) == "passed"
    assert (root.get("failures"), root.get("errors")) == ("1", "0")
    # The recipes' boundaries are kept for this report, and shown in no log.
    streams = {line["stream"] for line in alice.get(f"/api/runs/{run_id}/logs").json()}
    assert streams == {"stdout", "stderr"}


def test_another_users_run_is_not_there(deploy_api: TestClient, fake: FakeConnector) -> None:
    alice = user_client(deploy_api, "alice")
    bob = user_client(deploy_api, "bob")
    run_id = aborted_run(deploy_api, alice, fake)
    nobodys = str(uuid.uuid4())
    for ref, ghost in ((run_id, nobodys), (run_id[:8], nobodys[:8])):
        refused = bob.get(f"/api/runs/{ref}/junit")
        assert refused.status_code == 404, refused.text
        assert "no run" in refused.text and "web.1" not in refused.text
        # Word for word what a run nobody has gets.
        nothing = bob.get(f"/api/runs/{ghost}/junit")
        assert (nothing.status_code, refused.text.replace(ref, "X")) == (
            404,
            nothing.text.replace(ghost, "X"),
        )
    assert deploy_api.get(f"/api/runs/{run_id}/junit").status_code == 200  # the site's operator


def test_a_nodes_recipe_boundaries_have_an_allowance_beyond_its_output(
    deploy_api: TestClient, fake: FakeConnector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recipe that prints past the bound on lines does not push its end out of the store."""
    monkeypatch.setattr(logs, "MAX_LINES_PER_NODE", 5)
    monkeypatch.setattr(logs, "MAX_MARKS_PER_NODE", 3)
    push_app(deploy_api)
    started = deploy_api.post("/api/runs", json={"module": "apps/demo"})
    run_id = started.json()["id"]
    db = nodes(deploy_api, fake, run_id, 3)["db.1"]
    send(db, marker("deployment", "start"), *(output("deployment", f"{i}") for i in range(9)))
    send(db, marker("deployment", "end", code=0), output("deployment", "late"))
    send(db, *[marker("deployment", e, code=0) for e in ("start", "end", "start", "end")])
    shown = [line["text"] for line in deploy_api.get(f"/api/runs/{run_id}/logs").json()]
    assert shown == ["0", "1", "2", "[log truncated: at most 5 lines are kept]"]
    found = cases(checked(deploy_api.get(f"/api/runs/{run_id}/junit").content))
    # Of the second round's marks, two fit in the allowance (5 + 3 rows): the third round's
    # do not.
    assert "db.1 deployment (round 2)" in found and "db.1 deployment (round 3)" not in found
