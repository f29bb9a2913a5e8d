"""An application whose db declares a password that web reads, and the users who run it: the
secrets tests of the API and of the CLI share it."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.principal import SERVER, Principal
from stratuslab.services import Services
from tests.deploy.support import BASE, Node, nodes

SECRET = "s3cr3t-Pa55word"  # what db sets as its password
TOKEN = "tok-0123456789"  # what db sets, then marks secret itself (ss-random --secret)
DB = """kind: component
parent: base
outputs:
  password: {type: password, description: the database password}
  token: {}
  ready: {}
"""
WEB = """kind: component
parent: base
inputs:
  db_password: {}
  db_token: {}
  greeting: {default: hello}
"""
APP = """kind: application
nodes:
  db:
    component: db
  web:
    component: web
    multiplicity: 2
    parameters:
      db_password: db:password
      db_token: db:token
"""


def services_of(api: TestClient) -> Services:
    found: Services = api.app.state.services  # type: ignore[attr-defined]
    return found


def user_client(api: TestClient, name: str) -> TestClient:
    """A client holding an API key of a new user ``name`` (no administrator)."""
    services = services_of(api)
    services.accounts.add_user(name, caller=SERVER, password="correct horse")
    key = services.credentials.create_key(caller=Principal.for_user(name), name="test")
    return TestClient(api.app, headers={"Authorization": f"Bearer {key['token']}"})


def push(api: TestClient) -> None:
    modules = [
        {"path": "sec/base", "file": "sec/base.yaml", "text": BASE},
        {"path": "sec/db", "file": "sec/db.yaml", "text": DB},
        {"path": "sec/web", "file": "sec/web.yaml", "text": WEB},
        {
            "path": "sec/app",
            "file": "sec/app/module.yaml",
            "text": APP.replace("component: ", "component: ../"),
        },
    ]
    answer = api.post("/api/modules", json={"modules": modules})
    assert answer.status_code == 201, answer.text


def started(
    api: TestClient, owner: TestClient, fake: FakeConnector, **body: Any
) -> tuple[str, dict[str, Node]]:
    push(owner)  # modules are their pusher's: the owner runs what they pushed
    answer = owner.post("/api/runs", json={"module": "sec/app", "keep_running": "never", **body})
    assert answer.status_code == 201, answer.text
    run_id = answer.json()["id"]
    return run_id, nodes(api, fake, run_id, 3)
