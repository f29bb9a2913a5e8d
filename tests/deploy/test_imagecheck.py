"""The site's trust policy on a run's nodes: decided for every node's image before the run is
recorded, and again for every node instance's machine as it starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.cloud.marketplace.policy import Decision
from stratuslab.cloud.marketplace.signing import Verified
from stratuslab.config import Settings
from stratuslab.db.models import RunRecord
from stratuslab.db.session import engine_for, session_scope
from stratuslab.deploy.imagecheck import check_plan
from stratuslab.deploy.model import ApplicationModule, parse_module
from stratuslab.deploy.plan import Plan, resolve
from stratuslab.errors import BackendUnavailable, NotFound, Untrusted
from tests.api.policies import JANE, TODAY, imported, policy_api
from tests.cloud.marketplace.support import Shelf, endorse
from tests.deploy.support import APP, DB, WEB, push_app, wait_until

# db runs on an image of its own (webapp-base), web on debian-12.
MODULES = {
    "apps/base": "kind: image\nimages:\n  local: debian-12\n",
    "apps/baked": "kind: image\nimages:\n  local: webapp-base\n",
    "apps/db": DB.replace("parent: base", "parent: baked"),
    "apps/web": WEB,
    "apps/demo": APP,
}


def push(api: TestClient, modules: dict[str, str] = MODULES) -> None:
    body = [{"path": p, "file": f"{p}.yaml", "text": t} for p, t in modules.items()]
    answer = api.post("/api/modules", json={"modules": body})
    assert answer.status_code == 201, answer.text


def start(api: TestClient) -> Any:
    return api.post("/api/runs", json={"module": "apps/demo", "keep_running": "never"})


def test_a_run_whose_nodes_image_is_refused_is_not_recorded_and_names_the_nodes(
    settings: Settings, fake: FakeConnector
) -> None:
    with policy_api(settings, Shelf(), policy_unsigned="refuse") as api:
        push_app(api)
        answer = start(api)
        assert answer.status_code == 403, answer.text
        fingerprint = fake.get_image("debian-12").fingerprint
        assert answer.json()["error"] == {
            "type": "Untrusted",
            "message": "nodes db, web: image debian-12 on local refused by the site's policy"
            " (rule unsigned): no Marketplace entry endorses it"
            f" (sha256 {fingerprint[:8]}...)",
            "hint": None,
        }
        assert api.get("/api/runs").json() == []
        assert fake.list_instances() == []


def test_only_the_node_whose_image_is_refused_is_named(
    settings: Settings, fake: FakeConnector, tmp_path: Path
) -> None:
    _, sums = imported(fake, tmp_path)
    with policy_api(
        settings, Shelf(endorse(sums, JANE, now=TODAY)[1]), policy_unsigned="refuse"
    ) as api:
        push(api)
        answer = start(api)
        assert answer.status_code == 403
        assert answer.json()["error"]["message"].startswith(
            "node web: image debian-12 on local refused by the site's policy (rule unsigned)"
        )
        assert api.get("/api/runs").json() == []


def test_a_run_of_allowed_images_is_created_and_its_machines_start(
    settings: Settings, fake: FakeConnector, tmp_path: Path
) -> None:
    _, sums = imported(fake, tmp_path)
    debian = fake.get_image("debian-12").fingerprint
    shelf = Shelf(endorse(sums, JANE, now=TODAY)[1])
    with policy_api(
        settings, shelf, policy_unsigned="refuse", policy_checksums_allow=(debian,)
    ) as api:
        push(api)
        answer = start(api)
        assert answer.status_code == 201, answer.text
        run_id = answer.json()["id"]
        wait_until(lambda: len(fake.list_instances(tags={"run": run_id})) == 3, what="3 machines")
        api.delete(f"/api/runs/{run_id}")


class DeprecatedOnceTheRunIsRecorded(Shelf):
    """An endorsement deprecated between the run's creation and its machines' start: whatever
    looks before the run is recorded (the plan's check, placement) sees it endorsed."""

    def __init__(self, first: Verified, then: Verified, engine: Engine) -> None:
        super().__init__(first)
        self.then = then
        self.engine = engine

    def endorsements(self, sha256: str) -> list[Verified]:
        with session_scope(self.engine) as session:
            if session.scalar(select(func.count()).select_from(RunRecord)):
                self.held = [self.then]
        return super().endorsements(sha256)


def test_a_node_instance_whose_image_is_refused_when_it_starts_fails_provisioning(
    settings: Settings, fake: FakeConnector, tmp_path: Path
) -> None:
    _, sums = imported(fake, tmp_path)
    shelf = DeprecatedOnceTheRunIsRecorded(
        endorse(sums, JANE, now=TODAY)[1],
        endorse(sums, JANE, now=TODAY, deprecated="a hole in its openssh")[1],
        engine_for(settings.database_url),
    )
    debian = fake.get_image("debian-12").fingerprint
    with policy_api(
        settings, shelf, policy_unsigned="refuse", policy_checksums_allow=(debian,)
    ) as api:
        push(api)
        answer = start(api)
        assert answer.status_code == 201, answer.text
        run_id = answer.json()["id"]

        def refused() -> str:
            events = api.get(f"/api/runs/{run_id}/events").json()
            return next((e["message"] for e in events if "rule deprecated" in e["message"]), "")

        reason = wait_until(refused, what="the refusal of db.1")
        assert "image webapp-base on local refused by the site's policy (rule deprecated)" in reason
        assert "a hole in its openssh" in reason
        db_machines = [i for i in fake.list_instances(tags={"run": run_id}) if "db" in i.name]
        assert db_machines == []
        api.delete(f"/api/runs/{run_id}")


def plan() -> Plan:
    modules = {
        path: parse_module(text, path=path, file=f"{path}.yaml") for path, text in MODULES.items()
    }
    app = modules["apps/demo"]
    assert isinstance(app, ApplicationModule)
    return resolve(app, 1, lambda path, _version: (modules[path], 1))


def test_each_image_is_decided_once_and_one_that_cannot_be_found_is_left_to_provisioning() -> None:
    asked: list[tuple[str, str]] = []

    def decide(cloud: str, image: str) -> Decision:
        asked.append((cloud, image))
        if image == "webapp-base":
            raise NotFound("no image called 'webapp-base'")
        raise BackendUnavailable("LXD is not running")

    check_plan(plan(), decide)
    assert sorted(asked) == [("local", "debian-12"), ("local", "webapp-base")]

    with pytest.raises(Untrusted, match=r"^node db: image webapp-base on local refused"):
        check_plan(plan(), lambda _c, image: Decision(image != "webapp-base", "size", ("x",)))
