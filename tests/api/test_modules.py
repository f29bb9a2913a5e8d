"""/api/modules: every push is a new immutable version."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.deploy.support import BASE, push_app


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
