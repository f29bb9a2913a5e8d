"""SlipStream's session resource: a password or API-key login sets a cookie that every later
request may carry; logging out ends it; wrong credentials are refused, and repeated failures
wait. On both stores."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from stratuslab.accounts import COOKIE
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


# -- what SlipStream's clients read (slipstream/SlipStreamServer ssclj, slipstream-api) -------


def test_a_login_answers_as_slipstreams_session_resource(api: TestClient) -> None:
    """session.clj / util/response.clj: 201, Location the id, {status, message, resource-id};
    auth/cookies.clj: the cookie's value is ``token=<token>``, for the whole site."""
    add_user(api, "alice")
    client, answer = login(api, username="alice", password="correct horse")
    session_id = answer.json()["resource-id"]
    assert answer.status_code == 201 and answer.headers["Location"] == session_id
    assert answer.json() == {
        "status": 201,
        "message": f"created {session_id}",
        "resource-id": session_id,
    }
    set_cookie = answer.headers["set-cookie"]
    assert set_cookie.startswith(f"{COOKIE}=token=") and "Path=/" in set_cookie
    assert "HttpOnly" in set_cookie and "Secure" not in set_cookie  # plain HTTP here
    assert client.cookies.get(COOKIE, "").startswith("token=")

    shown = client.get(f"/api/{session_id}").json()
    assert shown["username"] == "alice" and shown["resourceURI"].endswith("/Session")
    assert shown["sessionTemplate"] == {"href": "session-template/internal"}
    assert shown["operations"] == [{"rel": "delete", "href": session_id}]


def test_the_session_collection_holds_the_callers_current_session_or_none(
    api: TestClient,
) -> None:
    """What Api.current_session reads (a PUT, CIMI's query): never a 401, so that
    Api.is_authenticated can say False."""
    add_user(api, "alice")
    add_user(api, "bob")
    alice, answer = login(api, username="alice", password="correct horse")
    bob, _ = login(api, username="bob", password="correct horse")
    for method in ("GET", "PUT"):
        mine = alice.request(method, "/api/session").json()
        assert mine["count"] == 1 and mine["id"] == "session"
        assert [s["id"] for s in mine["sessions"]] == [answer.json()["resource-id"]]
        assert mine["sessions"][0]["username"] == "alice"
        assert mine["operations"] == [{"rel": "add", "href": "session"}]
    assert bob.get("/api/session").json()["sessions"][0]["username"] == "bob"
    nobody = TestClient(api.app).put("/api/session")
    assert nobody.status_code == 200 and nobody.json()["count"] == 0
    assert nobody.json()["sessions"] == []


def test_logout_revokes_the_cookie_and_the_old_cookie_then_gets_a_401(api: TestClient) -> None:
    add_user(api, "alice")
    client, answer = login(api, username="alice", password="correct horse")
    session_id = answer.json()["resource-id"]
    token = answer.cookies[COOKIE]
    out = client.delete(f"/api/{session_id}")
    assert out.status_code == 200
    assert out.json() == {
        "status": 200,
        "message": f"{session_id} deleted",
        "resource-id": session_id,
    }
    assert out.headers["set-cookie"].startswith(f"{COOKIE}=INVALID; Path=/; Max-Age=0")
    assert client.cookies.get(COOKIE) is None  # the client forgot it
    kept = TestClient(api.app, cookies={COOKIE: token})  # a client that kept it anyway
    for refused in (
        kept.get("/api/runs"),
        kept.get("/run"),
        kept.get("/run/0b9f3c1e-0000-4000-8000-000000000000/ss:state"),
        kept.get(f"/api/{session_id}"),
    ):
        assert refused.status_code == 401
    assert kept.get("/api/runs").json()["error"]["hint"] == "log in again"
    assert kept.get("/api/session").json()["count"] == 0


def test_an_api_key_login_takes_the_key_with_or_without_its_prefix(api: TestClient) -> None:
    """session_api_key.clj: the key is a credential id, ``credential/`` optional."""
    add_user(api, "alice")
    key = services_of(api).credentials.create_key(caller=Principal.for_user("alice"))
    for given in (key["id"], key["id"].removeprefix("credential/")):
        client, answer = login(
            api, href="session-template/api-key", key=given, secret=key["secret"]
        )
        assert answer.status_code == 201, answer.text
        assert client.get("/api/session").json()["sessions"][0]["method"] == "api-key"


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"sessionTemplate": "session-template/internal"}',
        b'{"sessionTemplate": {"username": "alice", "password": "x"}}',
        b'{"sessionTemplate": {"href": 42}}',
        b'{"sessionTemplate": {"href": "session-template/internal", "username": ["a"]}}',
        b'{"sessionTemplate": {"href": "session-template/internal", "username": "'
        + b"a" * 65
        + b'", "password": "x"}}',
        b'{"sessionTemplate": {"href": "session-template/api-key", "key": "k"}}',
        b"\xff\xfe{}",
        b"\xc3\x28",  # not UTF-8
        b'{"sessionTemplate": {"href": "\xc3\x28"}}',
    ],
)
def test_a_malformed_session_template_is_a_422_in_slipstreams_shape(
    api: TestClient, body: bytes
) -> None:
    answer = TestClient(api.app).post(
        "/api/session", content=body, headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 422, answer.text
    error = answer.json()
    assert error["status"] == 422 and error["message"]  # what Api reads of an error
    assert error["error"]["type"] == "Invalid"


def test_an_unknown_template_is_not_found_even_with_odd_characters(api: TestClient) -> None:
    for href in ("session-template/oidc", "\u00e9\u0000", "x" * 128):
        answer = TestClient(api.app).post("/api/session", json={"sessionTemplate": {"href": href}})
        assert answer.status_code == 404 and answer.json()["status"] == 404


def test_an_oversized_login_is_refused_before_it_is_read(api: TestClient) -> None:
    huge = b'{"sessionTemplate": {"href": "session-template/internal", "x": "' + b"a" * 70_000
    answer = TestClient(api.app).post(
        "/api/session", content=huge + b'"}}', headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 413 and "over 65536 bytes" in answer.json()["message"]


@pytest.mark.parametrize(
    "cookie", ["x" * 5000, "token=" + "y" * 600, "token=", '"token=a;b"', "\u00e9" * 40]
)
def test_a_cookie_of_any_length_or_shape_is_a_401_never_a_5xx(api: TestClient, cookie: str) -> None:
    odd = TestClient(api.app, headers={"Cookie": f"{COOKIE}={cookie}".encode()})
    refused = odd.get("/api/runs")
    assert refused.status_code == 401 and refused.json()["error"]["type"] == "Unauthorized"
    assert odd.get("/run").status_code == 401
    assert odd.get("/api/session").json()["count"] == 0


def test_logins_under_names_nobody_has_leave_nothing_in_the_store(api: TestClient) -> None:
    from sqlalchemy import func, select

    from stratuslab.db.models import LoginFailureRecord
    from stratuslab.db.session import session_scope

    add_user(api, "alice")
    for number in range(20):
        login(api, username=f"nobody{number}", password="whatever1")
    login(api, username="alice", password="wrong one")
    with session_scope(services_of(api).engine) as session:
        subjects = session.scalars(select(LoginFailureRecord.subject)).all()
        assert subjects == ["user:alice"]
        assert session.scalar(select(func.count()).select_from(LoginFailureRecord)) == 1


def test_logging_in_again_and_again_keeps_a_bounded_number_of_sessions(api: TestClient) -> None:
    from datetime import timedelta

    from sqlalchemy import func, select

    from stratuslab.accounts.credentials import MAX_SESSIONS
    from stratuslab.db.models import SessionRecord, utcnow
    from stratuslab.db.session import session_scope

    add_user(api, "alice")
    credentials = services_of(api).credentials
    first = credentials.open_session("alice", method="internal")
    for _ in range(MAX_SESSIONS + 5):
        last = credentials.open_session("alice", method="internal")
    assert credentials.session_of(first[1]) is None  # the oldest ended
    assert credentials.session_of(last[1]) is not None
    engine = services_of(api).engine
    with session_scope(engine) as session:
        live = session.scalar(
            select(func.count())
            .select_from(SessionRecord)
            .where(SessionRecord.revoked_at.is_(None))
        )
        assert live == MAX_SESSIONS
        for row in session.scalars(select(SessionRecord)):
            row.expires_at = utcnow() - timedelta(seconds=1)
    credentials.open_session("alice", method="internal")
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(SessionRecord)) == 1


def test_creating_and_revoking_keys_in_a_loop_keeps_a_bounded_number(api: TestClient) -> None:
    from sqlalchemy import func, select

    from stratuslab.accounts import credentials as keys
    from stratuslab.db.models import ApiKeyRecord
    from stratuslab.db.session import session_scope

    add_user(api, "alice")
    alice = Principal.for_user("alice")
    service = services_of(api).credentials
    live = service.create_key(caller=alice, name="kept")
    for _ in range(keys.MAX_KEYS_KEPT - keys.MAX_KEYS + 10):
        made = service.create_key(caller=alice)
        service.revoke_key(made["id"], caller=alice)
    with session_scope(services_of(api).engine) as session:
        count = session.scalar(select(func.count()).select_from(ApiKeyRecord))
    assert count is not None and count <= keys.MAX_KEYS_KEPT
    bearer = {"Authorization": f"Bearer {live['token']}"}
    assert TestClient(api.app).get("/api/runs", headers=bearer).status_code == 200
