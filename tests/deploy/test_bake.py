"""Baking on the fake cloud, with node instances simulated over the real protocol: what a bake
runs, publishes and records, a bake whose recipe fails, the digest hit, baked deployments,
staleness and pruning, and whose baked image is whose."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from stratuslab.cloud.base import ExecResult, Instance
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.services import Services
from tests.api.owners import accounts, client
from tests.deploy.support import complete_all, nodes, wait_for_state, wait_until

BASE = "kind: image\nimages:\n  local: debian-12\n"
WEB = """kind: component
parent: base
recipes:
  pre-install: |
    echo pre-install ran
  packages: [nginx]
  post-install: |
    echo post-install ran
  deployment: |
    echo deployment ran
"""
APP = "kind: application\nnodes:\n  web:\n    component: web\n"
STEPS = ("Provisioning", "Executing", "SendingReports", "Ready")


def modules(folder: str, web: str = WEB) -> list[dict[str, str]]:
    texts = {"base": BASE, "web": web, "app": APP}
    return [
        {"path": f"{folder}/{name}", "file": f"{folder}/{name}.yaml", "text": text}
        for name, text in texts.items()
    ]


@dataclass
class World:
    services: Services
    fake: FakeConnector
    alice: TestClient
    bob: TestClient
    ran: list[tuple[str, Sequence[str]]]  # (instance, command) of every exec


@pytest.fixture
def world(deploy_api: TestClient, fake: FakeConnector) -> Iterator[World]:
    services: Services = deploy_api.app.state.services  # type: ignore[attr-defined]
    keys = accounts(services)
    ran: list[tuple[str, Sequence[str]]] = []

    def inside(instance: Instance, command: Sequence[str]) -> ExecResult:
        ran.append((instance.name, command))
        if "dpkg-query" in command[-1]:
            return ExecResult(0, "nginx\t1.22.1-9\n", "")
        return ExecResult(0, "cleaned\n", "")  # what the clean-up says when it ran whole

    fake.ex_on_exec(inside)
    alice, bob = (client(deploy_api.app, keys[n]["token"]) for n in ("alice", "bob"))
    for name, http in (("alice", alice), ("bob", bob)):
        assert http.post("/api/modules", json={"modules": modules(name)}).status_code == 201
    yield World(services, fake, alice, bob, ran)
    fake.ex_on_exec(None)


def start_bake(http: TestClient, module: str) -> dict[str, Any]:
    answer = http.post("/api/images/bake", json={"module": module})
    assert answer.status_code == 202, answer.text
    return answer.json()  # type: ignore[no-any-return]


def baked_by(world: World, http: TestClient, module: str) -> dict[str, Any]:
    """A bake whose node does its part: the run's answer when it has ended."""
    answer = start_bake(http, module)
    run_id = answer["run"]["id"]
    (node,) = nodes(http, world.fake, run_id, 1).values()
    plan = node.api.get(f"/api/runs/{run_id}/nodes/{node.name}/plan", headers=node.headers)
    answer["plan"] = plan.json()
    complete_all({node.name: node}, "Provisioning")
    for state in STEPS[1:]:
        wait_for_state(http, run_id, state)
        complete_all({node.name: node}, state)
    wait_for_state(http, run_id, "Done")
    return answer


def test_a_bake_runs_the_install_steps_cleans_publishes_records_and_tears_down(
    world: World,
) -> None:
    answer = baked_by(world, world.alice, "alice/web")
    name = answer["image"]["name"]
    assert name == f"alice/bake-{answer['digest'][:16]}"
    recipes = answer["plan"]["recipes"]
    assert recipes["pre-install"] and recipes["post-install"] and not recipes["deployment"]
    assert answer["plan"]["packages"] == ["nginx"]
    run_id = answer["run"]["id"]
    events = world.alice.get(f"/api/runs/{run_id}/events").json()
    (baked,) = [e for e in events if e["kind"] == "baked"]
    assert baked["fields"]["image"] == name
    assert baked["fields"]["packages"] == {"nginx": "1.22.1-9"}
    # The clean-up ran inside the bake's instance, then it was published and destroyed.
    (script,) = [c[-1] for _, c in world.ran if "cleaned" in c[-1]]
    for what in ("/etc/machine-id", "/etc/ssh/ssh_host_*", "/etc/stratus", "/var/lib/apt/lists"):
        assert what in script
    assert world.fake.get_image(name).properties["stratus.bake"] == answer["digest"]
    assert world.fake.list_instances(tags={"run": run_id}) == []
    listed = world.alice.get("/api/images/baked").json()
    assert [(i["name"], i["stale"], i["packages"]) for i in listed] == [
        (name, False, {"nginx": "1.22.1-9"})
    ]

    # Nothing changed: the same image at once, no run.
    again = world.alice.post("/api/images/bake", json={"module": "alice/web"})
    assert again.status_code == 200, again.text
    assert again.json()["cached"] and again.json()["image"]["name"] == name

    # A deployment starts web from it and runs only the deployment recipe.
    run = world.alice.post("/api/runs", json={"module": "alice/app", "keep_running": "never"})
    assert run.status_code == 201, run.text
    assert run.json()["baked"]["web"]["image"] == name
    (node,) = nodes(world.alice, world.fake, run.json()["id"], 1).values()
    plan = node.api.get(f"/api/runs/{run.json()['id']}/nodes/web.1/plan", headers=node.headers)
    assert plan.json()["packages"] == []
    assert not plan.json()["recipes"]["pre-install"] and not plan.json()["recipes"]["post-install"]
    assert plan.json()["recipes"]["deployment"][0]["script"] == "echo deployment ran\n"
    (machine,) = world.fake.list_instances(tags={"run": run.json()["id"]})
    assert machine.image == name
    # --pristine ignores it.
    body = {"module": "alice/app", "keep_running": "never", "pristine": True}
    pristine = world.alice.post("/api/runs", json=body)
    assert pristine.status_code == 201 and pristine.json()["baked"] == {}


def test_bob_never_deploys_or_starts_alices_baked_image(world: World) -> None:
    answer = baked_by(world, world.alice, "alice/web")
    name = answer["image"]["name"]
    # Bob's component holds the very same steps: the same digest, but not his image.
    run = world.bob.post("/api/runs", json={"module": "bob/app", "keep_running": "never"})
    assert run.status_code == 201, run.text
    assert run.json()["baked"] == {}
    (machine,) = wait_until(lambda: world.fake.list_instances(tags={"run": run.json()["id"]}))
    assert machine.image == "debian-12"
    started = world.bob.post("/api/instances", json={"image": name})
    assert started.status_code == 404, started.text
    assert name not in [i["name"] for i in world.bob.get("/api/images").json()]
    assert world.bob.get("/api/images/baked").json() == []
    assert world.bob.get("/api/images/baked", params={"all": True}).status_code == 403


def test_a_bake_whose_recipe_fails_publishes_nothing_and_says_why(world: World) -> None:
    answer = start_bake(world.alice, "alice/web")
    run_id = answer["run"]["id"]
    (node,) = nodes(world.alice, world.fake, run_id, 1).values()
    complete_all({node.name: node}, "Provisioning")
    wait_for_state(world.alice, run_id, "Executing")
    reason = "web.1: post-install recipe of alice/web exited with 100: E: broken"
    assert node.set("web.1:abort", reason).status_code == 200
    wait_until(lambda: world.alice.get(f"/api/runs/{run_id}").json()["state"] == "SendingReports")
    complete_all({node.name: node}, "SendingReports")
    wait_for_state(world.alice, run_id, "Aborted")
    assert world.alice.get(f"/api/runs/{run_id}").json()["abort_reason"] == reason
    assert world.fake.list_instances(tags={"run": run_id}) == []
    assert not [i for i in world.fake.list_images() if i.name.startswith("alice/")]
    assert world.alice.get("/api/images/baked").json() == []
    assert not [c for _, c in world.ran if "cleaned" in c[-1]]  # nothing was cleaned either


def test_a_changed_recipe_makes_the_old_image_stale_and_prune_deletes_it(world: World) -> None:
    old = baked_by(world, world.alice, "alice/web")["image"]["name"]
    changed = modules("alice", WEB.replace("echo post-install ran", "echo changed"))
    assert world.alice.post("/api/modules", json={"modules": changed}).status_code == 201
    (row,) = world.alice.get("/api/images/baked").json()
    assert row["name"] == old and row["stale"] and "alice/web changed" in row["why"]
    run = world.alice.post("/api/runs", json={"module": "alice/app", "keep_running": "never"})
    assert run.json()["baked"] == {}  # the old image is not used any more
    dry = world.alice.post("/api/images/prune", json={"dry_run": True}).json()
    assert [i["name"] for i in dry["deleted"]] == [old]
    assert world.fake.get_image(old)
    done = world.alice.post("/api/images/prune", json={}).json()
    assert [i["name"] for i in done["deleted"]] == [old]
    assert old not in [i.name for i in world.fake.list_images()]
    assert world.alice.get("/api/images/baked").json() == []


def test_a_component_without_install_steps_and_an_application_are_refused(
    world: World,
) -> None:
    bare = "kind: component\nparent: base\nrecipes:\n  deployment: echo hi\n"
    pushed = {"path": "alice/bare", "file": "alice/bare.yaml", "text": bare}
    assert world.alice.post("/api/modules", json={"modules": [pushed]}).status_code == 201
    answer = world.alice.post("/api/images/bake", json={"module": "alice/bare"})
    assert answer.status_code == 422 or answer.status_code == 400, answer.text
    assert "nothing to bake" in answer.text
    answer = world.alice.post("/api/images/bake", json={"module": "alice/app"})
    assert "bake a component" in answer.text
    assert world.bob.post("/api/images/bake", json={"module": "alice/web"}).status_code == 404


def test_slipstream_run_type_machine_bakes(world: World) -> None:
    form = {"refqname": "module/alice/web", "type": "Machine"}
    answer = world.alice.post("/run", data=form, follow_redirects=False)
    assert answer.status_code == 201, answer.text
    run_id = answer.headers["location"].rsplit("/", 1)[-1]
    assert answer.headers["x-stratus-image"].startswith("alice/bake-")
    assert "bake" in world.alice.get(f"/api/runs/{run_id}").json()["tags"]
