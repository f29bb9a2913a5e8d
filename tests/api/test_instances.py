"""The /api/instances resource, in-process on the fake cloud."""

from __future__ import annotations

import json
import queue
import threading

from fastapi.testclient import TestClient

from stratuslab.cloud import events
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.cloud.instances import InstanceService, RunRequest
from stratuslab.errors import BackendError


def run(api: TestClient, **body: object) -> list[dict[str, object]]:
    """POST then follow the watch stream to the end; returns the final state of each instance."""
    accepted = api.post("/api/instances", json={"image": "debian-12", **body})
    assert accepted.status_code == 202, accepted.text
    assert all(i["state"] == "pending" for i in accepted.json()["instances"])
    final: dict[str, dict[str, object]] = {}
    with api.stream("GET", accepted.json()["watch"]) as stream:
        for line in stream.iter_lines():
            if line.strip():
                change = json.loads(line)
                final[change["instance"]["id"]] = change["instance"]
    return list(final.values())


def test_run_answers_202_and_the_watch_stream_ends_when_all_are_running(api: TestClient) -> None:
    views = run(api, count=2, name="web")
    assert sorted(v["name"] for v in views) == ["web-1", "web-2"]  # type: ignore[type-var]
    assert {v["state"] for v in views} == {"running"}
    listed = api.get("/api/instances").json()
    assert sorted(v["name"] for v in listed) == ["web-1", "web-2"]


def test_the_stream_reports_failures_with_their_reason(
    api: TestClient, fake: FakeConnector
) -> None:
    fake.ex_fail_next("create", BackendError("LXD: no space left on device"))
    (view,) = run(api)
    assert view["state"] == "gone"
    assert view["error"] == "LXD: no space left on device"


def test_show_stop_start_kill(api: TestClient) -> None:
    (view,) = run(api, name="box")
    assert api.get("/api/instances/box").json()["id"] == view["id"]
    assert api.post("/api/instances/box/stop").json()["state"] == "stopped"
    assert api.post("/api/instances/box/start").json()["state"] == "running"
    assert api.delete(f"/api/instances/{view['id']}").json()["state"] == "gone"
    assert api.get("/api/instances").json() == []
    assert [v["id"] for v in api.get("/api/instances", params={"gone": True}).json()] == [
        view["id"]
    ]


def test_exec(api: TestClient) -> None:
    run(api, name="box")
    answer = api.post("/api/instances/box/exec", json={"command": ["echo", "hi"]}).json()
    assert answer == {"exit_code": 0, "stdout": "hi\n", "stderr": ""}


def test_errors_are_json_with_type_message_and_hint(api: TestClient) -> None:
    missing = api.get("/api/instances/nothing")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "NotFound"
    assert missing.json()["error"]["hint"] == "see `stratus instance list`"
    bad = api.post("/api/instances", json={"image": "debian-12", "colour": "blue"})
    assert bad.status_code == 422
    assert bad.json()["error"]["message"].startswith("colour:")
    capacity = api.post("/api/instances", json={"image": "debian-12", "cpu": 64})
    assert capacity.status_code == 409 and capacity.json()["error"]["type"] == "CapacityExceeded"


def test_the_token_is_required(api: TestClient) -> None:
    denied = api.get("/api/instances", headers={"Authorization": "Bearer wrong"})
    assert denied.status_code == 401 and denied.json()["error"]["type"] == "Unauthorized"
    assert api.get("/health", headers={"Authorization": ""}).json()["status"] == "ok"


def test_the_user_header_scopes_what_is_listed(api: TestClient) -> None:
    run(api, name="mine")
    assert api.get("/api/instances", headers={"X-Stratus-User": "bob"}).json() == []
    # Every owner's is an administrator's view: bob asking for all still sees only his own.
    every = api.get(
        "/api/instances", params={"all": True}, headers={"X-Stratus-User": "bob"}
    ).json()
    assert every == []
    # The site token with no user named is the host's administrator.
    every = api.get("/api/instances", params={"all": True}).json()
    assert [v["owner"] for v in every] == ["alice"]


def test_a_kill_by_the_deployment_engine_reaches_the_watch_stream(api: TestClient) -> None:
    """The engine kills through the instance service, not the routes: the service's own sink
    (the hub's, as api/deps.py gives it) is what tells the watchers."""
    services = api.app.state.services  # type: ignore[attr-defined]
    engine_side = InstanceService(
        services.engine,
        owner="alice",
        connectors=services.connectors,
        on_event=events.publisher(services.hub),
    )
    prepared = engine_side.prepare(RunRequest(image="debian-12", run_id="r1"))  # pending
    (view,) = prepared.views
    lines: queue.Queue[dict[str, object] | None] = queue.Queue()

    def watch() -> None:
        with api.stream("GET", f"/api/instances/watch?ids={view.id}&timeout=30") as stream:
            for line in stream.iter_lines():
                if line.strip():
                    lines.put(json.loads(line))
        lines.put(None)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    first = lines.get(timeout=30)  # the stream has read the state: what follows is an event
    assert first is not None and first["what"] == "pending"
    engine_side.kill(view.id)
    last = lines.get(timeout=30)
    assert last is not None and last["what"] == "gone"
    assert last["instance"]["state"] == "gone"  # type: ignore[index]
    assert lines.get(timeout=30) is None  # every instance settled: the stream ended
    watcher.join(timeout=30)
