"""The /api/clouds resource in-process on the fake cloud, on SQLite and PostgreSQL: real
accounts with API keys (alice, bob, and ada an administrator). Administrators register,
change and remove clouds; everybody lists and shows the enabled ones; no answer holds a
credential, and bad input is a 4xx that says what is wrong."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from fastapi.testclient import TestClient

from stratuslab.cloud.connectors import REGISTRY
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.errors import BackendUnavailable
from tests.api.owners import accounts, client
from tests.cloud.test_registry import SECRETS

pytestmark = pytest.mark.usefixtures("secretive")


@pytest.fixture
def secretive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(REGISTRY, "secretive", "tests.cloud.test_registry:SecretiveFake")


@pytest.fixture
def users(api: TestClient) -> dict[str, TestClient]:
    keys = accounts(api.app.state.services)  # type: ignore[attr-defined]
    return {name: client(api.app, key["token"]) for name, key in keys.items()}


def error(answer: Any) -> tuple[int, str, str]:
    body = answer.json()["error"]
    return answer.status_code, body["type"], body["message"]


def names(http: TestClient) -> list[str]:
    answer = http.get("/api/clouds")
    assert answer.status_code == 200, answer.text
    return [c["name"] for c in answer.json()]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_administrators_register_clouds_and_every_user_sees_the_enabled_ones(
    users: dict[str, TestClient], fake_namespace: str
) -> None:
    ada, alice = users["ada"], users["alice"]
    body = {"name": "lab-2", "connector": "fake", "options": {"namespace": fake_namespace}}
    made = ada.post("/api/clouds", json={**body, "priority": 10, "max_instances": 4})
    assert made.status_code == 201, made.text
    view = made.json()
    assert (view["name"], view["connector"], view["priority"], view["max_instances"]) == (
        "lab-2",
        "fake",
        10,
        4,
    )
    assert view["enabled"] and view["capacity"]["cpus"] == 8 and view["capacity_error"] is None
    assert view["options"] == {"namespace": fake_namespace}
    assert names(alice) == ["lab-2", "local"]  # placement order
    listed = alice.get("/api/clouds").json()
    assert all(c["options"] is None for c in listed)
    shown = alice.get("/api/clouds/lab-2").json()
    assert shown["options"] is None and shown["instances"] == 0 and shown["capacity"]["cpus"] == 8

    assert error(ada.post("/api/clouds", json=body))[:2] == (409, "Conflict")
    changed = ada.patch("/api/clouds/lab-2", json={"priority": 200, "max_instances": None})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["priority"], changed.json()["max_instances"]) == (200, None)
    assert names(alice) == ["local", "lab-2"]

    off = ada.patch("/api/clouds/lab-2", json={"enabled": False, "note": "moving racks"})
    assert (off.json()["enabled"], off.json()["note"]) == (False, "moving racks")
    assert names(alice) == ["local"] and names(ada) == ["local", "lab-2"]
    assert error(alice.get("/api/clouds/lab-2"))[:2] == (404, "NotFound")
    on = ada.patch("/api/clouds/lab-2", json={"enabled": True})
    assert (on.json()["enabled"], on.json()["note"]) == (True, None)

    gone = ada.delete("/api/clouds/lab-2")
    assert gone.status_code == 200 and gone.json()["name"] == "lab-2"
    assert names(ada) == ["local"]
    assert error(ada.get("/api/clouds/lab-2"))[:2] == (404, "NotFound")


def test_users_who_are_no_administrators_change_nothing(
    users: dict[str, TestClient], fake_namespace: str
) -> None:
    alice = users["alice"]
    attempts = [
        alice.post("/api/clouds", json={"name": "mine", "connector": "fake", "options": {}}),
        alice.post("/api/clouds", json={"name": "mine", "lxd": {"endpoint": "https://h:8443"}}),
        alice.patch("/api/clouds/local", json={"enabled": False}),
        alice.delete("/api/clouds/local"),
    ]
    for answer in attempts:
        status, kind, message = error(answer)
        assert (status, kind) == (403, "Forbidden") and "only a site administrator" in message
    assert names(users["ada"]) == ["local"]
    assert users["ada"].get("/api/clouds/local").json()["enabled"]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"name": "Lab", "connector": "fake"}, 422, "is a DNS label"),
        ({"name": "l" * 65, "connector": "fake"}, 422, "name: String should have at most 64"),
        ({"name": "lab"}, 422, "give either connector (with its options) or lxd"),
        (
            {"name": "lab", "connector": "fake", "lxd": {"endpoint": "https://h:8443"}},
            422,
            "give either connector",
        ),
        ({"name": "lab", "connector": "nosuch"}, 422, "unknown connector 'nosuch'"),
        ({"name": "lab", "connector": "fake", "options": {"x": 1}}, 422, "bad options ['x']"),
        ({"name": "lab", "connector": "fake", "priority": 10001}, 422, "priority"),
        ({"name": "lab", "connector": "fake", "priority": True}, 422, "priority"),
        ({"name": "lab", "connector": "fake", "max_instances": -1}, 422, "max_instances"),
        ({"name": "lab", "connector": "fake", "colour": "red"}, 422, "colour"),
        ({"name": "lab", "lxd": {"endpoint": "http://h:8443"}}, 422, "lxd.endpoint"),
        ({"name": "lab", "connector": "fake", "options": {"k": "a\x00"}}, 422, "NUL"),
        ({"name": "local", "connector": "fake"}, 409, "'local' is recorded already"),
    ],
)
def test_bad_registrations_are_refused_saying_why(
    users: dict[str, TestClient], body: dict[str, Any], status: int, words: str
) -> None:
    answer = users["ada"].post("/api/clouds", json=body)
    assert error(answer)[0] == status, answer.text
    assert words in error(answer)[2]
    assert names(users["ada"]) == ["local"]


def test_an_option_that_is_no_json_number_is_refused(users: dict[str, TestClient]) -> None:
    for value in (b"NaN", b"Infinity"):
        answer = users["ada"].post(
            "/api/clouds",
            content=b'{"name": "lab", "connector": "fake", "options": {"cpus": %s}}' % value,
            headers={"Content-Type": "application/json"},
        )
        assert error(answer)[:2] == (422, "Invalid") and "options.cpus" in error(answer)[2]
    assert names(users["ada"]) == ["local"]


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("local", {"priority": -1}, 422, "priority"),
        ("local", {"note": "x" * 1001}, 422, "note"),
        ("local", {"note": "why"}, 422, "is enabled: a note says why"),
        ("local", {"enabled": True, "note": "why"}, 422, "enabling it clears the note"),
        ("local", {"colour": "red"}, 422, "colour"),
        ("nosuch", {"priority": 1}, 404, "no cloud called 'nosuch'"),
        ("x" * 65, {"priority": 1}, 422, "name"),
    ],
)
def test_bad_changes_are_refused_saying_why(
    users: dict[str, TestClient], path: str, body: dict[str, Any], status: int, words: str
) -> None:
    answer = users["ada"].patch(f"/api/clouds/{path}", json=body)
    assert error(answer)[0] == status, answer.text
    assert words in error(answer)[2]
    assert users["ada"].get("/api/clouds/local").json()["priority"] == 100


def test_a_cloud_is_not_removed_while_instances_live_there(users: dict[str, TestClient]) -> None:
    alice, ada = users["alice"], users["ada"]
    started = alice.post("/api/instances", json={"image": "debian-12", "name": "w"})
    assert started.status_code == 202, started.text
    status, kind, message = error(ada.delete("/api/clouds/local"))
    assert (status, kind) == (409, "Conflict") and "1 instance(s)" in message
    assert names(ada) == ["local"]
    assert ada.get("/api/clouds/local").json()["instances"] == 1


def test_an_unreachable_backend_is_refused_naming_it_and_nothing_is_recorded(
    users: dict[str, TestClient],
) -> None:
    url = f"https://127.0.0.1:{closed_port()}"
    ada = users["ada"]
    for body in (
        {"name": "far", "connector": "lxd", "options": {"endpoint": url}},
        {"name": "far", "lxd": {"endpoint": url, "password": "pw"}},
    ):
        status, kind, message = error(ada.post("/api/clouds", json=body))
        assert (status, kind) == (503, "BackendUnavailable") and url in message, message
    assert names(ada) == ["local"]


def test_show_answers_when_the_backend_does_not(
    users: dict[str, TestClient], fake: FakeConnector
) -> None:
    fake.ex_fail_next("capacity", BackendUnavailable("the fake host is down"))
    shown = users["alice"].get("/api/clouds/local")
    assert shown.status_code == 200
    assert (shown.json()["capacity"], shown.json()["capacity_error"]) == (
        None,
        "the fake host is down",
    )


def test_no_answer_holds_a_credential(users: dict[str, TestClient], fake_namespace: str) -> None:
    ada, alice = users["ada"], users["alice"]
    options = {"namespace": fake_namespace, **SECRETS}
    answers = [
        ada.post("/api/clouds", json={"name": "lab", "connector": "secretive", "options": options})
    ]
    assert answers[0].status_code == 201, answers[0].text
    answers += [
        ada.get("/api/clouds"),
        alice.get("/api/clouds"),
        ada.get("/api/clouds/lab"),
        alice.get("/api/clouds/lab"),
        ada.patch("/api/clouds/lab", json={"options": {"secret": "********"}, "priority": 5}),
        ada.post("/api/clouds", json={"name": "lab", "connector": "secretive", "options": options}),
        ada.delete("/api/clouds/lab"),
    ]
    for answer in answers:
        assert answer.status_code < 500
        leaked = [value for value in SECRETS.values() if value in answer.text]
        assert not leaked, answer.text
    assert answers[3].json()["options"]["secret"] == "********"
