"""/api/modules: every push is a new immutable version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from stratuslab import config
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.config import Settings
from stratuslab.principal import SERVER
from tests.deploy.support import APP, BASE, DB, WEB, nodes, push_app
from tests.support import environment


def test_every_push_is_a_new_version_addressed_by_path_or_path_n(deploy_api: TestClient) -> None:
    assert push_app(deploy_api)["version"] == 1
    assert push_app(deploy_api)["version"] == 2
    newest = deploy_api.get("/api/modules/apps/demo").json()
    assert (
        newest["version"] == 2 and newest["versions"] == [1, 2] and newest["kind"] == "application"
    )
    assert deploy_api.get("/api/modules/apps/demo/1").json()["version"] == 1
    listed = {m["path"]: m for m in deploy_api.get("/api/modules").json()}
    assert listed["apps/demo"]["versions"] == 2 and listed["apps/base"]["kind"] == "image"


def test_only_changed_keeps_the_newest_version_of_what_did_not_change(
    deploy_api: TestClient,
) -> None:
    first = {"path": "x/base", "file": "x/base.yaml", "text": BASE}
    deploy_api.post("/api/modules", json={"modules": [first]})
    again = deploy_api.post("/api/modules", json={"modules": [first], "only_changed": True}).json()
    assert again[0]["version"] == 1
    changed = {**first, "text": BASE + "description: changed\n"}
    assert (
        deploy_api.post("/api/modules", json={"modules": [changed], "only_changed": True}).json()[
            0
        ]["version"]
        == 2
    )


def test_a_malformed_module_is_refused_with_file_line_and_key(deploy_api: TestClient) -> None:
    bad = {
        "path": "x/app",
        "file": "x/app/module.yaml",
        "text": "kind: application\nnodes:\n  web:\n    componnt: x\n",
    }
    answer = deploy_api.post("/api/modules", json={"modules": [bad]})
    assert answer.status_code == 422
    message = answer.json()["error"]["message"]
    assert message.startswith("x/app/module.yaml:4: unknown key 'componnt'")
    assert deploy_api.get("/api/modules").json() == []  # nothing stored


def test_unknown_modules_and_versions_are_not_found(deploy_api: TestClient) -> None:
    assert deploy_api.get("/api/modules/nothing/here").status_code == 404
    push_app(deploy_api)
    assert (
        deploy_api.get("/api/modules/apps/demo/7").json()["error"]["message"]
        == "no version 7 of module 'apps/demo'"
    )


HUGE = "kind: component\nparent: base\ndescription: " + "x" * 10 * 1024 * 1024 + "\n"
DEEP = "kind: component\nparent: base\ndescription: " + "[" * 400 + "]" * 400 + "\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (HUGE, f"x/m.yaml: is {len(HUGE)} bytes; a module is at most 262144 bytes (256 KiB)"),
        (DEEP, "x/m.yaml:3: nested more than 32 levels deep"),
    ],
    ids=["10-MB", "400-deep"],
)
def test_a_huge_or_deeply_nested_module_is_refused_before_it_is_read(
    deploy_api: TestClient, text: str, message: str
) -> None:
    module = {"path": "x/m", "file": "x/m.yaml", "text": text}
    answer = deploy_api.post("/api/modules", json={"modules": [module]})
    assert answer.status_code == 422
    assert answer.json()["error"]["message"] == message
    assert deploy_api.get("/api/modules").json() == []  # nothing stored


# -- rights: who may read, push and run a module path (deploy/rights.py) ------------------


@pytest.fixture
def settings(tmp_path: Path, store: str) -> Settings:
    """The site's own user is root here, so that alice and bob are users like any other."""
    return config.load(environment(tmp_path, STRATUS_DATABASE_URL=store, STRATUS_USER="root"))


def as_user(api: TestClient, name: str) -> TestClient:
    """Requests as ``name``: the site token acting as that user, who is no administrator."""
    return TestClient(
        api.app, headers={"Authorization": "Bearer test-token", "X-Stratus-User": name}
    )


def users(api: TestClient, *names: str, group: str | None = None) -> list[TestClient]:
    accounts = api.app.state.services.accounts  # type: ignore[attr-defined]
    if group is not None:
        accounts.add_group(group, caller=SERVER)
    for name in names:
        accounts.add_user(name, caller=SERVER, password="correct horse")
        if group is not None:
            accounts.add_member(group, name, caller=SERVER)
    return [as_user(api, name) for name in names]


def set_rights(client: TestClient, path: str, **body: str) -> Any:
    return client.put(f"/api/module-rights/{path}", json=body)


DEMO = ("apps/base", "apps/db", "apps/web", "apps/demo")


def push_demo(client: TestClient) -> Any:
    """The demo application and its modules, pushed by ``client``: the answer, whatever it is."""
    texts = {"apps/base": BASE, "apps/db": DB, "apps/web": WEB, "apps/demo": APP}
    files = {"apps/demo": "apps/demo/module.yaml"}
    modules = [
        {"path": path, "file": files.get(path, f"{path}.yaml"), "text": text}
        for path, text in texts.items()
    ]
    return client.post("/api/modules", json={"modules": modules})


def test_bob_cannot_push_or_read_alices_module_until_she_lets_him(deploy_api: TestClient) -> None:
    alice, bob = users(deploy_api, "alice", "bob")
    assert push_app(alice)["owner"] == "alice"
    pushed = push_demo(bob)  # refused: alice holds it, privately
    assert pushed.status_code == 404 and "another user holds it" in pushed.text
    assert bob.get("/api/modules/apps/demo").status_code == 404
    assert bob.get("/api/modules/apps/demo").json()["error"]["message"] == (
        deploy_api.get("/api/modules/nothing/here")
        .json()["error"]["message"]
        .replace("nothing/here", "apps/demo")
    )  # the same answer as for a module nobody pushed
    assert bob.get("/api/modules").json() == []
    assert bob.get("/api/module-rights/apps/demo").status_code == 404

    assert set_rights(alice, "apps/demo", public_rights="r").status_code == 200
    for path in DEMO[:3]:
        set_rights(alice, path, public_rights="r")
    pushed = push_demo(bob)
    assert pushed.status_code == 403, pushed.text
    assert pushed.json()["error"]["message"].startswith("you may not push 'apps/base'")
    shown = bob.get("/api/modules/apps/demo").json()
    assert (shown["owner"], shown["rights"]["public"], shown["allowed"]) == ("alice", "r--", "r--")
    assert [m["path"] for m in bob.get("/api/modules").json()] == sorted(DEMO)
    assert alice.get("/api/modules/apps/demo").json()["versions"] == [1]  # nothing of bob's


def test_a_public_module_runs_as_its_runner(deploy_api: TestClient, fake: FakeConnector) -> None:
    alice, bob = users(deploy_api, "alice", "bob")
    push_app(alice)
    run = bob.post("/api/runs", json={"module": "apps/demo", "keep_running": "never"})
    assert run.status_code == 404  # he may not even read it
    for path in DEMO[:3]:
        assert set_rights(alice, path, public_rights="r").status_code == 200
    assert set_rights(alice, "apps/demo", public_rights="r").status_code == 200
    run = bob.post("/api/runs", json={"module": "apps/demo", "keep_running": "never"})
    assert run.status_code == 403 and "you may not run 'apps/demo'" in run.text
    assert set_rights(alice, "apps/demo", public_rights="rx").status_code == 200

    run = bob.post("/api/runs", json={"module": "apps/demo", "keep_running": "never"})
    assert run.status_code == 201, run.text
    run_id = run.json()["id"]
    assert run.json()["owner"] == "bob"
    assert [r["id"] for r in bob.get("/api/runs").json()] == [run_id]
    assert alice.get("/api/runs").json() == []
    assert alice.get(f"/api/runs/{run_id}").status_code == 404
    # Its machines are bob's: his instances, counted against his quota, none of alice's.
    nodes(deploy_api, fake, run_id, 3)
    mine = bob.get("/api/instances").json()
    assert len(mine) == 3 and {i["owner"] for i in mine} == {"bob"}
    assert alice.get("/api/instances").json() == []


def test_a_run_that_reaches_a_module_bob_cannot_read_is_refused_and_nothing_recorded(
    deploy_api: TestClient,
) -> None:
    alice, bob = users(deploy_api, "alice", "bob")
    push_app(alice)
    set_rights(alice, "apps/demo", public_rights="rx")
    set_rights(alice, "apps/db", public_rights="r")
    set_rights(alice, "apps/base", public_rights="r")  # apps/web stays hers alone
    run = bob.post("/api/runs", json={"module": "apps/demo", "keep_running": "never"})
    assert run.status_code == 422
    message = run.json()["error"]["message"]
    # The answer for a component nobody pushed: nothing says that apps/web exists.
    assert (
        message == "apps/demo/module.yaml (version 1):6: nodes.web.component: no module 'apps/web'"
    )
    assert deploy_api.get("/api/runs", params={"all": "true"}).json() == []
    legacy = bob.post("/run", data={"refqname": "module/apps/demo"})  # SlipStream's form
    assert legacy.status_code == 409 and "no module 'apps/web'" in legacy.text
    assert deploy_api.get("/api/runs", params={"all": "true"}).json() == []


def test_group_rights_reach_the_group_s_members_only(deploy_api: TestClient) -> None:
    alice, carol = users(deploy_api, "alice", "carol", group="team")
    (dave,) = users(deploy_api, "dave")
    push_app(alice)
    for path in DEMO:
        answer = set_rights(alice, path, group="team", group_rights="rx")
        assert answer.status_code == 200
        assert (answer.json()["group"], answer.json()["rights"]["group"]) == ("team", "r-x")
    assert carol.get("/api/modules/apps/demo").status_code == 200
    assert carol.post("/api/runs", json={"module": "apps/demo"}).json()["owner"] == "carol"
    assert push_demo(carol).status_code == 403  # read and run, not edit
    assert dave.get("/api/modules/apps/demo").status_code == 404
    assert dave.post("/api/runs", json={"module": "apps/demo"}).status_code == 404
    assert set_rights(dave, "apps/demo", group_rights="rwx").status_code == 404
    assert set_rights(carol, "apps/demo", group_rights="rwx").status_code == 403
    # A group of which the owner is no member cannot be named.
    deploy_api.app.state.services.accounts.add_group("others", caller=SERVER)  # type: ignore[attr-defined]
    assert set_rights(alice, "apps/demo", group="others").status_code == 404


def test_an_administrator_reads_pushes_runs_and_changes_everything(
    deploy_api: TestClient,
) -> None:
    (alice,) = users(deploy_api, "alice")
    push_app(alice)
    admin = deploy_api  # the site token, as root
    assert [m["owner"] for m in admin.get("/api/modules").json()] == ["alice"] * 4
    again = push_app(admin)
    assert (again["version"], again["owner"], again["pushed_by"]) == (2, "alice", "root")
    assert admin.post("/api/runs", json={"module": "apps/demo"}).json()["owner"] == "root"
    changed = set_rights(admin, "apps/demo", public_rights="r").json()
    assert (changed["owner"], changed["rights"]["public"]) == ("alice", "r--")


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("apps/demo", {"public_rights": "rq"}, 422),
        ("apps/demo", {"public_rights": "r" * 9}, 422),
        ("apps/demo", {"owner": "bob"}, 422),
        ("apps/demo", {"group": "nosuch"}, 404),
        ("apps/3", {"public_rights": "r"}, 422),
        ("a/" + "b" * 300, {"public_rights": "r"}, 422),
        ("a//b", {"public_rights": "r"}, 422),
    ],
    ids=["letters", "long-rights", "unknown-key", "no-group", "version", "long-path", "empty"],
)
def test_bad_rights_are_refused_with_a_clear_error(
    deploy_api: TestClient, path: str, body: dict[str, str], status: int
) -> None:
    push_app(deploy_api)
    answer = set_rights(deploy_api, path, **body)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["message"]
