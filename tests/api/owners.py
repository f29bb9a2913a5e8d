"""Users with things of their own, for the tests of who may reach what.

Real accounts (``services.accounts``) with API keys presented as ``Authorization: Bearer``, each
owning an instance and a live run of the small application of ``tests/deploy/support.py``,
pushed under a folder of their own, whose nodes have set a password, printed a line and sent a
report. ``snapshot`` is everything of one owner's, as the server itself sees it, so that a test
can show that another user's requests changed nothing (their login session still open too).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from typing import Any

from fastapi.testclient import TestClient

from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.principal import SERVER, Principal
from stratuslab.services import Services
from tests.deploy.support import APP, BASE, DB, WEB, Node, nodes, wait_until

PASSWORD = "correct horse battery"
USERS = {"alice": False, "bob": False, "ada": True}  # name -> administrator


def accounts(services: Services) -> dict[str, dict[str, Any]]:
    """Alice and bob, and ada an administrator: name -> an API key of theirs (with its
    ``token``, the bearer form)."""
    keys = {}
    for name, admin in USERS.items():
        services.accounts.add_user(name, caller=SERVER, admin=admin, password=PASSWORD)
        keys[name] = services.credentials.create_key(caller=Principal.for_user(name))
    return keys


def client(app: Any, token: str) -> TestClient:
    return TestClient(app, headers={"Authorization": f"Bearer {token}"})


def modules(folder: str) -> list[dict[str, str]]:
    """The small application of ``tests/deploy/support.py``, under ``folder``."""
    texts = {"base": BASE, "db": DB, "web": WEB, "demo": APP}
    return [
        {
            "path": f"{folder}/{name}",
            "file": f"{folder}/{name}.yaml",
            "text": text.replace("apps/", f"{folder}/"),
        }
        for name, text in texts.items()
    ]


@dataclass
class Owner:
    name: str
    http: TestClient  # with the owner's API key
    run_id: str  # mutable, in Provisioning, every machine running, nobody completed
    members: dict[str, Node]  # its node instances, with their tokens
    ref: str  # an instance of the owner's own, by id
    box: str  # ... by name
    machine: str  # the instance of the run's db.1
    session: str  # a login session of theirs, by id (without its ``session/`` prefix)


def settled(name: str, http: TestClient, fake: FakeConnector) -> Owner:
    """``name``'s instance and run, with a password set, a line printed and a report sent."""
    box = f"{name}-box"
    accepted = http.post("/api/instances", json={"image": "debian-12", "name": box})
    assert accepted.status_code == 202, accepted.text
    ref: str = accepted.json()["instances"][0]["id"]
    wait_until(lambda: http.get(f"/api/instances/{ref}").json()["state"] == "running")

    pushed = http.post("/api/modules", json={"modules": modules(name)})
    assert pushed.status_code == 201, pushed.text
    body = {"module": f"{name}/demo", "keep_running": "never", "mutable": True}
    started = http.post("/api/runs", json=body)
    assert started.status_code == 201, started.text
    run_id: str = started.json()["id"]
    members = nodes(http, fake, run_id, 3)

    db = members["db.1"]
    assert db.set("db.1:password", f"{name}'s secret").status_code == 200
    assert members["web.1"].set("statecustom", "installing").status_code == 200
    line = {"node_instance": "db.1", "lines": [{"text": f"{name}'s recipe says hello"}]}
    assert http.post(f"/api/runs/{run_id}/logs", json=line, headers=db.headers).status_code == 204
    report = gzip.compress(f"{name}'s report".encode())
    sent = http.put(f"/api/runs/{run_id}/reports/db.1", content=report, headers=db.headers)
    assert sent.status_code == 201, sent.text
    machine = next(
        v["id"]
        for v in http.get("/api/instances").json()
        if v["run_id"] == run_id and v["node_instance"] == "db.1"
    )
    services: Services = http.app.state.services  # type: ignore[attr-defined]
    session = services.credentials.open_session(name, method="internal")[0]
    session = session.removeprefix("session/")
    return Owner(name, http, run_id, members, ref, box, machine, session)


def snapshot(services: Services, fake: FakeConnector, owner: Owner) -> dict[str, Any]:
    """Everything of ``owner``'s, as the server itself sees it."""
    run = owner.run_id
    listed = services.instances(SERVER).list_instances(all_owners=True, include_gone=True)
    machines = {v.id for v in listed if v.owner == owner.name}
    return {
        "run": services.runs.view(run, caller=SERVER),
        "params": services.params.all(run, caller=SERVER),
        "events": services.runs.events(run, caller=SERVER, after=0),
        "logs": services.logs.read(run, caller=SERVER),
        "reports": services.reports.of_run(run, caller=SERVER),
        "session": services.credentials.show_session(owner.session, caller=SERVER),
        "instances": sorted((v.id, v.state) for v in listed if v.owner == owner.name),
        "machines": sorted(
            (i.tags.get("id", ""), str(i.state))
            for i in fake.list_instances()
            if i.tags.get("id") in machines
        ),
    }
