"""A small application, and node instances simulated over the real /run protocol.

Nodes here are the test's own HTTP calls: the fake cloud runs no agent. Each simulated node
uses the token that the server handed its instance through user-data, as a real agent does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from stratuslab.cloud.connectors.fake import FakeConnector

BASE = "kind: image\nimages:\n  local: debian-12\n"
DB = """kind: component
parent: base
outputs:
  password: {description: the database password}
  ready: {}
recipes:
  deployment: |
    #!/bin/sh
    ss-set password secret
"""
WEB = """kind: component
parent: base
inputs:
  db_password: {}
  greeting: {default: hello}
outputs:
  ready: {}
recipes:
  packages: [nginx]
  deployment: |
    #!/bin/sh
    ss-get db_password
"""
APP = """kind: application
nodes:
  db:
    component: apps/db
  web:
    component: apps/web
    multiplicity: 2
    parameters:
      db_password: db:password
"""


def push_app(api: TestClient, *, app: str = APP, path: str = "apps/demo") -> dict[str, Any]:
    modules = [
        {"path": "apps/base", "file": "apps/base.yaml", "text": BASE},
        {"path": "apps/db", "file": "apps/db.yaml", "text": DB},
        {"path": "apps/web", "file": "apps/web.yaml", "text": WEB},
        {"path": path, "file": f"{path}/module.yaml", "text": app},
    ]
    answer = api.post("/api/modules", json={"modules": modules})
    assert answer.status_code == 201, answer.text
    return answer.json()[-1]  # type: ignore[no-any-return]


def start_run(api: TestClient, **body: Any) -> dict[str, Any]:
    answer = api.post("/api/runs", json={"module": "apps/demo", "keep_running": "never", **body})
    assert answer.status_code == 201, answer.text
    return answer.json()  # type: ignore[no-any-return]


def wait_until(condition: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def state(api: TestClient, run_id: str) -> str:
    return str(api.get(f"/api/runs/{run_id}").json()["state"])


def wait_for_state(api: TestClient, run_id: str, wanted: str, timeout: float = 15.0) -> None:
    wait_until(lambda: state(api, run_id) == wanted, timeout, f"run {run_id} to reach {wanted}")


class Node:
    """One node instance, speaking the node side of the protocol with its own token."""

    def __init__(self, api: TestClient, run_id: str, name: str, token: str) -> None:
        self.api, self.run_id, self.name = api, run_id, name
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, key: str, **params: Any) -> Any:
        return self.api.get(f"/run/{self.run_id}/{key}", params=params, headers=self.headers)

    def set(self, key: str, value: str, **params: Any) -> Any:
        return self.api.put(
            f"/run/{self.run_id}/{key}", content=value, params=params, headers=self.headers
        )

    def complete(self, state: str | None = None) -> Any:
        params = {"state": state} if state else {}
        return self.api.post(
            f"/run/{self.run_id}/{self.name}:complete", params=params, headers=self.headers
        )


def nodes(api: TestClient, fake: FakeConnector, run_id: str, count: int) -> dict[str, Node]:
    """The run's node instances, once ``count`` of them run, with the tokens their user-data
    carries."""

    def provisioned() -> list[Any]:
        found = fake.list_instances(tags={"run": run_id})
        return found if len(found) == count else []

    found: dict[str, Node] = {}
    for instance in wait_until(provisioned, what=f"{count} instances of run {run_id}"):
        user_data = instance.extra["user_data"]
        config = json.loads(user_data.split("'STRATUS_AGENT_CONF'\n", 1)[1].split("\n", 1)[0])
        found[config["node_instance"]] = Node(api, run_id, config["node_instance"], config["token"])
    wait_until(
        lambda: all(
            n["provisioning"] == "ready" for n in api.get(f"/api/runs/{run_id}").json()["nodes"]
        ),
        what="every node instance provisioned",
    )
    return found


def complete_all(all_nodes: dict[str, Node], state: str) -> None:
    for node in all_nodes.values():
        answer = node.complete(state)
        assert answer.status_code == 200, (node.name, answer.text)
