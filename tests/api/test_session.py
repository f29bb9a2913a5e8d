"""SlipStream's session resource: a password or API-key login sets a cookie that every later
request may carry; logging out ends it; wrong credentials are refused, and repeated failures
wait. On both stores."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from stratuslab.accounts.authn import COOKIE
from stratuslab.principal import SERVER, Principal
from stratuslab.services import Services


def services_of(api: TestClient) -> Services:
    found: Services = api.app.state.services  # type: ignore[attr-defined]
    return found


def add_user(api: TestClient, name: str, password: str = "correct horse") -> None:
    services_of(api).accounts.add_user(name, caller=SERVER, password=password)


def login(api: TestClient, **template: Any) -> Any:
    bare = TestClient(api.app)  # no site token: what a SlipStream client has
    return bare, bare.post(
        "/api/session", json={"sessionTemplate": {"href": "session-template/internal", **template}}
    )


def key_login(client: TestClient, key: dict[str, Any]) -> Any:
    template = {"href": "session-template/api-key", "key": key["id"], "secret": key["secret"]}
    return client.post("/api/session", json={"sessionTemplate": template})


def test_a_password_login_sets_a_cookie_that_later_requests_carry(api: TestClient) -> None:
    add_user(api, "alice")
    client, answer = login(api, username="alice", password="correct horse")
    assert answer.status_code == 201
    session_id = answer.json()["resource-id"]
    assert session_id.startswith("session/")
    assert client.cookies.get(COOKIE)
    assert client.get("/api/runs").status_code == 200
    shown = client.get(f"/api/{session_id}").json()
    assert (shown["username"], shown["state"]) == ("alice", "open")

    assert client.delete(f"/api/{session_id}").status_code == 200
    client.cookies.set(COOKIE, answer.cookies[COOKIE])  # a client that kept the old cookie
    after = client.get("/api/runs")
    assert after.status_code == 401 and "log in again" in after.json()["error"]["hint"]


def test_an_api_key_login_and_the_key_as_bearer_and_basic(api: TestClient) -> None:
    add_user(api, "alice")
    alice = Principal.for_user("alice")
    key = services_of(api).credentials.create_key(caller=alice, name="ci")
    bare = TestClient(api.app)
    answer = key_login(bare, key)
    assert answer.status_code == 201 and bare.get("/api/runs").status_code == 200
    bearer = {"Authorization": f"Bearer {key['token']}"}
    assert TestClient(api.app).get("/api/runs", headers=bearer).status_code == 200
    basic = TestClient(api.app).get("/api/runs", auth=(key["id"], key["secret"]))
    assert basic.status_code == 200

    services_of(api).credentials.revoke_key(key["id"], caller=alice)
    refused = TestClient(api.app).get("/api/runs", headers=bearer)
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "this API key is wrong, revoked or expired"


def test_wrong_passwords_are_refused_alike_and_then_rate_limited(api: TestClient) -> None:
    add_user(api, "alice")
    _, unknown = login(api, username="nobody", password="whatever1")
    _, wrong = login(api, username="alice", password="wrong one")
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json()["error"]["message"] == wrong.json()["error"]["message"]
    for _ in range(4):
        login(api, username="alice", password="wrong one")
    _, locked = login(api, username="alice", password="correct horse")
    assert locked.status_code == 429
    assert "too many failed logins" in locked.json()["error"]["message"]
    assert "try again in" in locked.json()["error"]["hint"]


def test_a_disabled_user_is_logged_out_at_once(api: TestClient) -> None:
    add_user(api, "alice")
    client, answer = login(api, username="alice", password="correct horse")
    assert answer.status_code == 201
    services_of(api).accounts.set_disabled("alice", True, caller=SERVER)
    assert client.get("/api/runs").status_code == 401
    _, again = login(api, username="alice", password="correct horse")
    assert again.status_code == 401


def test_an_unknown_template_and_a_missing_password_are_clear_errors(api: TestClient) -> None:
    bare = TestClient(api.app)
    odd = bare.post("/api/session", json={"sessionTemplate": {"href": "session-template/oidc"}})
    assert odd.status_code == 404 and "no session template" in odd.json()["error"]["message"]
    _, partial = login(api, username="alice")
    assert partial.status_code == 422


def test_an_expired_api_key_is_refused_in_every_form(api: TestClient) -> None:
    from datetime import timedelta

    from stratuslab.db.models import ApiKeyRecord, utcnow
    from stratuslab.db.session import session_scope

    add_user(api, "alice")
    services = services_of(api)
    key = services.credentials.create_key(caller=Principal.for_user("alice"), expires_days=1)
    bearer = {"Authorization": f"Bearer {key['token']}"}
    assert TestClient(api.app).get("/api/runs", headers=bearer).status_code == 200
    with session_scope(services.engine) as session:
        row = session.get(ApiKeyRecord, key["id"].removeprefix("credential/"))
        assert row is not None
        row.expires_at = utcnow() - timedelta(seconds=1)
    assert TestClient(api.app).get("/api/runs", headers=bearer).status_code == 401
    basic = TestClient(api.app).get("/api/runs", auth=(key["id"], key["secret"]))
    assert basic.status_code == 401
    bare = TestClient(api.app)
    login = key_login(bare, key)
    assert login.status_code == 401
    (listed,) = services.credentials.list_keys(caller=Principal.for_user("alice"))
    assert listed["state"] == "expired"
