"""Accounts through the JSON API, on both stores: administrators manage users and groups; a
user sees their own account, changes their own password, and makes, lists and revokes their
own API keys; anybody else's is a 404; /api/whoami says who a request is and how it proved it.

The ``api`` client carries the site token: the host-local administrator, named alice.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from stratuslab.accounts import COOKIE
from stratuslab.principal import SERVER, Principal
from tests.api.test_session import login, services_of

PASSWORD = "correct horse"


def user(api: TestClient, name: str, *, admin: bool = False) -> TestClient:
    """A client acting as a new user ``name``, with an API key of theirs."""
    services = services_of(api)
    services.accounts.add_user(name, caller=SERVER, admin=admin, password=PASSWORD)
    key = services.credentials.create_key(caller=Principal.for_user(name, admin=admin))
    return TestClient(api.app, headers={"Authorization": f"Bearer {key['token']}"})


def message(answer: object) -> str:
    return str(answer.json()["error"]["message"])  # type: ignore[attr-defined]


def test_an_administrator_adds_lists_shows_disables_and_enables_users(api: TestClient) -> None:
    added = api.post(
        "/api/users",
        json={"name": "bob", "email": "bob@lab.example", "password": PASSWORD},
    )
    assert added.status_code == 201
    assert added.json() | {"created_at": ""} == {
        "name": "bob",
        "email": "bob@lab.example",
        "admin": False,
        "disabled": False,
        "has_password": True,
        "groups": [],
        "created_at": "",
    }
    assert PASSWORD not in added.text
    assert api.post("/api/users", json={"name": "carol", "admin": True}).json()["admin"]
    assert [u["name"] for u in api.get("/api/users").json()] == ["bob", "carol"]
    assert api.get("/api/users/bob").json()["email"] == "bob@lab.example"

    bob, opened = login(api, username="bob", password=PASSWORD)
    assert opened.status_code == 201 and bob.get("/api/whoami").status_code == 200
    disabled = api.post("/api/users/bob/disable")
    assert disabled.status_code == 200 and disabled.json()["disabled"]
    refused = bob.get("/api/whoami")
    assert refused.status_code == 401 and message(refused) == "the session has ended"
    _, again = login(api, username="bob", password=PASSWORD)
    assert again.status_code == 401 and message(again) == "the account bob is disabled"

    assert not api.post("/api/users/bob/enable").json()["disabled"]
    assert bob.get("/api/whoami").status_code == 401  # disabling ended the session for good
    _, back = login(api, username="bob", password=PASSWORD)
    assert back.status_code == 201


def test_only_administrators_manage_users_and_another_account_is_not_found(
    api: TestClient,
) -> None:
    bob = user(api, "bob")
    user(api, "carol")
    for method, path, body in [
        ("POST", "/api/users", {"name": "mallory", "admin": True}),
        ("GET", "/api/users", None),
        ("POST", "/api/users/carol/disable", None),
        ("POST", "/api/users/bob/enable", None),
    ]:
        answer = bob.request(method, path, json=body)
        assert answer.status_code == 403, (method, path)
        assert message(answer).startswith("only an administrator may")
    assert bob.get("/api/users/bob").json()["name"] == "bob"
    hidden, missing = bob.get("/api/users/carol"), bob.get("/api/users/nobody")
    assert hidden.status_code == missing.status_code == 404
    assert message(hidden) == "no user 'carol'"
    assert "mallory" not in [u["name"] for u in api.get("/api/users").json()]


def test_an_administrator_does_not_disable_their_own_account(api: TestClient) -> None:
    root = user(api, "root", admin=True)
    answer = root.post("/api/users/root/disable")
    assert answer.status_code == 409 and "their own account" in message(answer)


def test_a_user_changes_their_own_password_and_no_one_elses(api: TestClient) -> None:
    bob = user(api, "bob")
    user(api, "carol")
    basic = TestClient(api.app)
    assert basic.get("/api/whoami", auth=("bob", PASSWORD)).status_code == 200  # remembered
    changed = bob.put("/api/users/bob/password", json={"password": "battery staple"})
    assert changed.status_code == 200 and changed.json()["has_password"]
    assert basic.get("/api/whoami", auth=("bob", PASSWORD)).status_code == 401
    assert basic.get("/api/whoami", auth=("bob", "battery staple")).status_code == 200

    other = bob.put("/api/users/carol/password", json={"password": "battery staple"})
    assert other.status_code == 404
    _, still = login(api, username="carol", password=PASSWORD)
    assert still.status_code == 201
    assert api.put("/api/users/carol/password", json={"password": "new carol pw"}).is_success
    _, reset = login(api, username="carol", password="new carol pw")
    assert reset.status_code == 201


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        ({"name": "Bob"}, 422, "user name 'Bob': a lowercase letter"),
        ({"name": "1bob"}, 422, "user name '1bob'"),
        ({"name": "bo b"}, 422, "user name 'bo b'"),
        ({"name": "b" * 65}, 422, "up to 63"),
        ({"name": "b" * 201}, 422, "at most 200 characters"),
        ({"name": "bob\x00"}, 422, "NUL"),
        ({"name": "bob", "password": ""}, 422, "at least 8 characters"),
        ({"name": "bob", "password": "short"}, 422, "at least 8 characters"),
        ({"name": "bob", "password": "p" * 1025}, 413, "at most 1024 characters"),
        ({"name": "bob", "email": "not an address"}, 422, "is not an address"),
        ({"name": "bob", "role": "admin"}, 422, "role: Extra inputs are not permitted"),
    ],
)
def test_bad_users_are_refused_saying_why(
    api: TestClient, body: dict[str, object], status: int, text: str
) -> None:
    answer = api.post("/api/users", json=body)
    assert answer.status_code == status, answer.text
    assert text in message(answer)
    assert api.get("/api/users").json() == []


def test_a_duplicate_user_and_bad_passwords_on_change(api: TestClient) -> None:
    assert api.post("/api/users", json={"name": "bob"}).status_code == 201
    duplicate = api.post("/api/users", json={"name": "bob", "admin": True})
    assert duplicate.status_code == 409 and message(duplicate) == "user bob exists already"
    assert not api.get("/api/users/bob").json()["admin"]
    too_long = api.put("/api/users/bob/password", json={"password": "x" * 2000})
    assert too_long.status_code == 413
    empty = api.put("/api/users/bob/password", json={"password": ""})
    assert empty.status_code == 422 and "at least 8" in message(empty)
    assert not api.get("/api/users/bob").json()["has_password"]
    assert api.get(f"/api/users/{'x' * 300}").status_code == 422


def test_groups_are_managed_by_administrators_and_seen_by_their_members(
    api: TestClient,
) -> None:
    bob, carol = user(api, "bob"), user(api, "carol")
    made = api.post("/api/groups", json={"name": "physics", "description": "the physicists"})
    assert made.status_code == 201 and made.json()["members"] == []
    joined = api.post("/api/groups/physics/members", json={"user": "bob"})
    assert joined.json()["members"] == ["bob"]
    assert api.post("/api/groups/physics/members", json={"user": "bob"}).json()["members"] == [
        "bob"
    ]
    assert bob.get("/api/whoami").json()["groups"] == ["physics"]
    assert [g["name"] for g in bob.get("/api/groups").json()] == ["physics"]
    assert bob.get("/api/groups/physics").json()["description"] == "the physicists"
    assert carol.get("/api/groups").json() == []
    assert carol.get("/api/groups/physics").status_code == 404
    assert api.get("/api/users/bob").json()["groups"] == ["physics"]

    refused = bob.post("/api/groups", json={"name": "bobs"})
    assert refused.status_code == 403
    assert bob.post("/api/groups/physics/members", json={"user": "carol"}).status_code == 403
    left = api.delete("/api/groups/physics/members/bob")
    assert left.status_code == 200 and left.json()["members"] == []
    assert bob.get("/api/groups/physics").status_code == 404


def test_bad_group_requests_say_what_is_wrong(api: TestClient) -> None:
    user(api, "bob")
    api.post("/api/groups", json={"name": "physics"})
    cases = [
        ("POST", "/api/groups", {"name": "physics"}, 409, "group physics exists already"),
        ("POST", "/api/groups", {"name": "Physics!"}, 422, "group name 'Physics!'"),
        ("POST", "/api/groups", {"name": "chem", "description": "d" * 600}, 422, "at most 512"),
        ("GET", "/api/groups/chemistry", None, 404, "no group 'chemistry'"),
        ("POST", "/api/groups/chemistry/members", {"user": "bob"}, 404, "no group 'chemistry'"),
        ("POST", "/api/groups/physics/members", {"user": "nobody"}, 404, "no user 'nobody'"),
        ("DELETE", "/api/groups/physics/members/bob", None, 404, "bob is not a member"),
    ]
    for method, path, body, status, text in cases:
        answer = api.request(method, path, json=body)
        assert answer.status_code == status, (method, path, answer.text)
        assert text in message(answer)


def test_api_keys_are_shown_once_listed_and_revoked_by_their_owner_only(
    api: TestClient,
) -> None:
    bob, carol = user(api, "bob"), user(api, "carol")
    made = bob.post("/api/apikeys", json={"name": "ci", "expires_days": 30})
    assert made.status_code == 201
    key = made.json()
    assert key["id"].startswith("credential/") and key["state"] == "live"
    assert key["token"] == f"{key['id'].removeprefix('credential/')}.{key['secret']}"
    assert key["expires_at"] is not None

    listed = bob.get("/api/apikeys").json()
    assert key["id"] in [k["id"] for k in listed]
    assert key["secret"] not in bob.get("/api/apikeys").text
    assert key["id"] not in [k["id"] for k in carol.get("/api/apikeys").json()]
    assert key["id"] not in [k["id"] for k in api.get("/api/apikeys").json()]
    assert key["id"] in [k["id"] for k in api.get("/api/apikeys?all=true").json()]
    assert key["id"] not in [k["id"] for k in carol.get("/api/apikeys?all=true").json()]

    with_key = TestClient(api.app, headers={"Authorization": f"Bearer {key['token']}"})
    assert with_key.get("/api/whoami").json()["user"] == "bob"
    hex_id = key["id"].removeprefix("credential/")
    stolen = carol.delete(f"/api/apikeys/{hex_id}")
    assert stolen.status_code == 404 and message(stolen) == f"no API key {hex_id!r}"
    assert with_key.get("/api/whoami").status_code == 200

    revoked = bob.delete(f"/api/apikeys/{key['id']}")  # credential/<hex> works as well
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    assert with_key.get("/api/whoami").status_code == 401
    assert bob.delete(f"/api/apikeys/{hex_id}").json()["state"] == "revoked"  # again: no change


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ({"expires_days": 0}, "between 1 and 3650 days"),
        ({"expires_days": 3651}, "between 1 and 3650 days"),
        ({"expires_days": 10**19}, "expires_days"),
        ({"name": "n" * 129}, "at most 128 characters"),
    ],
)
def test_bad_api_key_requests_are_refused(
    api: TestClient, body: dict[str, object], text: str
) -> None:
    bob = user(api, "bob")
    answer = bob.post("/api/apikeys", json=body)
    assert answer.status_code == 422 and text in message(answer)


def test_a_caller_without_an_account_makes_no_api_key(api: TestClient) -> None:
    answer = api.post("/api/apikeys", json={"name": "ci"})  # the site token's alice has none
    assert answer.status_code == 403 and "alice has no account" in message(answer)


def test_whoami_says_who_and_how(api: TestClient) -> None:
    site = api.get("/api/whoami").json()
    assert site == {
        "user": "alice",
        "admin": True,
        "groups": [],
        "authenticated_by": "site-token",
        "authenticated_as": "alice",
        "session": None,
        "acting_as": False,
    }
    bob = user(api, "bob")
    assert bob.get("/api/whoami").json()["authenticated_by"] == "api-key"
    basic = TestClient(api.app).get("/api/whoami", auth=("bob", PASSWORD)).json()
    assert (basic["user"], basic["authenticated_by"]) == ("bob", "password")
    client, opened = login(api, username="bob", password=PASSWORD)
    assert client.cookies.get(COOKIE)
    seen = client.get("/api/whoami").json()
    assert (seen["authenticated_by"], seen["session"]) == ("session", opened.json()["resource-id"])
    empty_bearer = client.get("/api/whoami", headers={"Authorization": "Bearer "}).json()
    assert empty_bearer["authenticated_by"] == "session"  # as the credentials were read

    acting = api.get("/api/whoami", headers={"X-Stratus-User": "bob"}).json()
    assert (acting["user"], acting["admin"], acting["acting_as"]) == ("bob", False, True)
    assert acting["authenticated_as"] == "alice"
    posing = bob.get("/api/whoami", headers={"X-Stratus-User": "carol"})
    assert posing.status_code == 403 and "only an administrator acts as" in message(posing)
    anonymous = TestClient(api.app).get("/api/whoami")
    assert anonymous.status_code == 401 and "log in first" in message(anonymous)
