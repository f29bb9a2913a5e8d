"""Volumes in runs, on the fake cloud through the API: fresh volumes made for each node
instance before its machine and deleted at teardown, bound ones attached and kept, refusals
when the run is created (naming the node, nothing recorded) or when a node is provisioned (the
conflict's words), what run show lists, and scaling."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from stratuslab.api.app import create_app
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.cloud.quotas import Limits
from stratuslab.cloud.volume_values import GiB
from stratuslab.cloud.volumes import VolumeService
from stratuslab.config import Settings
from stratuslab.db.session import session_scope
from stratuslab.db.volume_models import VolumeRecord
from stratuslab.deploy.plan import NodePlan, Plan
from stratuslab.deploy.plan_volumes import NodeVolume
from stratuslab.deploy.run_volumes import Member
from stratuslab.errors import BackendError
from stratuslab.principal import SERVER, Principal
from stratuslab.services import build
from tests.api.test_quotas import runs_recorded, user_client
from tests.api.test_session import services_of
from tests.deploy.support import BASE, Node, complete_all, nodes, wait_for_state, wait_until
from tests.support import CliResult, cli_on

REPOSITORY = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("fake")
ROUND = ("Provisioning", "Executing", "SendingReports", "Ready")
DB = """kind: component
parent: base
volumes:
  data: {size: 1GiB, path: /var/lib/postgresql, description: the cluster}
"""
WEB = """kind: component
parent: base
volumes:
  cache: {size: 100MiB, path: /srv/cache}
"""
FRESH = """kind: application
nodes:
  db:
    component: db
  web:
    component: web
    multiplicity: 2
"""
BOUND = FRESH.replace("component: db\n", "component: db\n    volume: pgdata\n")


def push(http: TestClient, app: str, *, folder: str = "apps") -> None:
    texts = {"base": BASE, "db": DB, "web": WEB, "app": app}
    modules = [
        {"path": f"{folder}/{name}", "file": f"{folder}/{name}.yaml", "text": text}
        for name, text in texts.items()
    ]
    answer = http.post("/api/modules", json={"modules": modules})
    assert answer.status_code == 201, answer.text


def start(http: TestClient, *, folder: str = "apps", **body: Any) -> Any:
    return http.post("/api/runs", json={"module": f"{folder}/app", "keep_running": "never", **body})


def run_of(http: TestClient, app: str, **body: Any) -> str:
    push(http, app)
    answer = start(http, **body)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def to(http: TestClient, run_id: str, members: dict[str, Node], last: str) -> None:
    for state in ROUND[: ROUND.index(last) + 1]:
        wait_for_state(http, run_id, state)
        complete_all(members, state)


def volumes_of(api: TestClient, owner: str) -> VolumeService:
    return services_of(api).volumes(Principal.for_user(owner))


def mounts(fake: FakeConnector, run_id: str) -> dict[str, dict[str, tuple[str, bool]]]:
    """Each node instance's mounts as its machine has them: path -> (backend volume, ro)."""
    return {
        i.tags["node-instance"]: {
            m.path: (m.volume, m.read_only) for m in fake.ex_mounts(i.name).values()
        }
        for i in fake.list_instances(tags={"run": run_id})
    }


def shown(http: TestClient, run_id: str) -> dict[str, list[dict[str, Any]]]:
    return {n["name"]: n["volumes"] for n in http.get(f"/api/runs/{run_id}").json()["nodes"]}


def test_fresh_volumes_are_made_for_each_instance_and_deleted_at_teardown(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    alice = user_client(deploy_api, "alice")
    run_id = run_of(alice, FRESH)
    members = nodes(alice, fake, run_id, 3)
    made = {v.name: v for v in volumes_of(deploy_api, "alice").for_run(run_id)}
    short = run_id[:8]
    assert sorted(made) == [f"{short}-db-1-data", f"{short}-web-1-cache", f"{short}-web-2-cache"]
    assert {(v.owner, v.state, v.run_id) for v in made.values()} == {("alice", "ready", run_id)}
    assert made[f"{short}-db-1-data"].size_bytes == GiB
    backend = {v.name: _backend(deploy_api, v.id) for v in made.values()}
    assert mounts(fake, run_id) == {
        "db.1": {"/var/lib/postgresql": (backend[f"{short}-db-1-data"], False)},
        "web.1": {"/srv/cache": (backend[f"{short}-web-1-cache"], False)},
        "web.2": {"/srv/cache": (backend[f"{short}-web-2-cache"], False)},
    }  # each instance has its own, mounted when its machine was made
    assert shown(alice, run_id)["web.2"] == [
        {
            "name": "cache",
            "ref": f"alice/{short}-web-2-cache",
            "path": "/srv/cache",
            "read_only": False,
            "fresh": True,
            "state": "ready",
        }
    ]

    to(alice, run_id, members, "Ready")
    wait_for_state(alice, run_id, "Done")
    assert fake.list_volumes(tags={"run": run_id}) == []
    assert {v.state for v in volumes_of(deploy_api, "alice").for_run(run_id)} == {"gone"}
    assert {v[0]["state"] for v in shown(alice, run_id).values()} == {"gone"}


def test_a_bound_volume_is_attached_kept_at_teardown_and_attached_again_by_the_next_run(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    alice = user_client(deploy_api, "alice")
    pgdata = volumes_of(deploy_api, "alice").create("pgdata", size_bytes=GiB)
    backend = _backend(deploy_api, pgdata.id)
    for attempt in (1, 2):
        run_id = run_of(alice, BOUND)
        members = nodes(alice, fake, run_id, 3)
        assert mounts(fake, run_id)["db.1"] == {"/var/lib/postgresql": (backend, False)}
        assert shown(alice, run_id)["db.1"] == [
            {
                "name": "data",
                "ref": "alice/pgdata",
                "path": "/var/lib/postgresql",
                "read_only": False,
                "fresh": False,
                "state": "ready",
            }
        ]
        plan = alice.get(f"/api/runs/{run_id}").json()
        assert plan["nodes"][0]["instance_id"] in {
            a.instance for a in volumes_of(deploy_api, "alice").get("pgdata").attachments
        }
        to(alice, run_id, members, "Ready")
        wait_for_state(alice, run_id, "Done")
        kept = volumes_of(deploy_api, "alice").get("pgdata")
        assert (kept.id, kept.state, kept.attachments) == (pgdata.id, "ready", ()), attempt
        assert fake.get_volume(backend).used_by == ()
        # The fresh volumes of the same run are gone.
        assert {v.state for v in volumes_of(deploy_api, "alice").for_run(run_id)} == {"gone"}


def test_a_bound_volume_attached_read_write_elsewhere_fails_the_node_with_the_conflict(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    alice = user_client(deploy_api, "alice")
    volumes = volumes_of(deploy_api, "alice")
    volumes.create("pgdata", size_bytes=GiB)
    accepted = alice.post("/api/instances", json={"image": "debian-12", "name": "box"})
    box = accepted.json()["instances"][0]["id"]
    wait_until(lambda: alice.get(f"/api/instances/{box}").json()["state"] == "running")
    volumes.attach("pgdata", box, path="/srv/pg")

    run_id = run_of(alice, BOUND)
    wait_for_state(alice, run_id, "Aborted", timeout=20)
    run = alice.get(f"/api/runs/{run_id}").json()
    assert run["abort_reason"].startswith("node db: 1 instance(s) failed to start (0 allowed): ")
    assert (
        f"volume alice/pgdata is attached to {box} at /srv/pg "
        "(read-write): a volume attached read-write is attached nowhere else"
    ) in run["abort_reason"]
    failed = [
        e
        for e in alice.get(f"/api/runs/{run_id}/events").json()
        if e["kind"] == "provisioning-failed"
    ]
    assert [e["node_instance"] for e in failed] == ["db.1"]
    assert [a.instance for a in volumes.get("pgdata").attachments] == [box]  # untouched
    assert not [i for i in fake.list_instances(tags={"run": run_id})]


def test_a_volume_that_cannot_be_made_fails_its_node_and_teardown_leaves_nothing(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    alice = user_client(deploy_api, "alice")
    push(alice, FRESH)
    fake.ex_fail_next("create_volume", BackendError("LXD: the pool is full"))
    run_id = start(alice).json()["id"]
    wait_for_state(alice, run_id, "Aborted", timeout=20)
    reason = alice.get(f"/api/runs/{run_id}").json()["abort_reason"]
    assert "fresh, " in reason and reason.endswith("LXD: the pool is full")
    assert fake.list_volumes(tags={"run": run_id}) == []
    assert {v.state for v in volumes_of(deploy_api, "alice").for_run(run_id)} == {"gone"}


def test_a_fresh_volume_teardown_cannot_delete_is_retried_as_the_rest_of_teardown(
    settings: Settings, fake: FakeConnector
) -> None:
    overrides = settings.with_overrides(token="test-token", report_grace_s=1)
    services = build(overrides, token="test-token")
    services.orchestrator.config = replace(
        services.orchestrator.config, teardown_attempts=3, teardown_backoff=0.2
    )
    with TestClient(create_app(overrides, services=services)) as api:
        alice = user_client(api, "alice")
        run_id = run_of(alice, FRESH)
        members = nodes(alice, fake, run_id, 3)
        fake.ex_fail_next("delete_volume", BackendError("LXD: the volume is busy"))
        to(alice, run_id, members, "Ready")
        wait_for_state(alice, run_id, "Done")
        failed = [
            e for e in alice.get(f"/api/runs/{run_id}/events").json()
            if e["kind"] == "teardown-failed"
        ]  # fmt: skip
        assert len(failed) == 1 and "LXD: the volume is busy" in failed[0]["message"]
        assert fake.list_volumes(tags={"run": run_id}) == []
        assert {v.state for v in volumes_of(api, "alice").for_run(run_id)} == {"gone"}


def test_bound_volumes_are_checked_when_the_run_is_created_naming_the_node(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    alice, bob = user_client(deploy_api, "alice"), user_client(deploy_api, "bob")
    volumes_of(deploy_api, "alice").create("pgdata", size_bytes=GiB)
    volumes_of(deploy_api, "alice").create("refs", size_bytes=GiB, public=True)
    for who in (alice, bob):
        push(who, BOUND, folder=f"x{uuid.uuid4().hex[:6]}")

    def refusal(who: TestClient, app: str) -> Any:
        folder = f"x{uuid.uuid4().hex[:6]}"
        push(who, app, folder=folder)
        answer = start(who, folder=folder)
        assert answer.status_code >= 400, answer.text
        return answer.status_code, answer.json()["error"]["message"]

    missing = refusal(bob, BOUND)  # bob has no pgdata of his own
    assert missing[0] == 404 and missing[1].startswith("node db: volume data: ")
    private = refusal(bob, BOUND.replace("volume: pgdata", "volume: alice/pgdata"))
    nothing = refusal(bob, BOUND.replace("volume: pgdata", "volume: alice/nothing"))
    assert private[0] == nothing[0] == 404
    assert private[1] == nothing[1].replace("nothing", "pgdata")  # the same words
    public_rw = refusal(bob, BOUND.replace("volume: pgdata", "volume: alice/refs"))
    assert public_rw[0] == 403 and public_rw[1].startswith("node db: volume data: ")
    many = refusal(alice, BOUND.replace("multiplicity: 2", "multiplicity: 2\n    volume: pgdata"))
    assert many[0] == 422 and "bound read-write" in many[1]
    assert runs_recorded(deploy_api) == 0
    assert fake.list_instances() == []

    read_only = BOUND.replace(
        "volume: pgdata", "volumes:\n      data: {volume: alice/refs, read_only: true}"
    )
    push(bob, read_only, folder="ro")
    answer = start(bob, folder="ro")
    assert answer.status_code == 201, answer.text  # a public volume, read-only: anybody's
    members = nodes(bob, fake, answer.json()["id"], 3)
    assert shown(bob, answer.json()["id"])["db.1"][0]["read_only"] is True
    assert mounts(fake, answer.json()["id"])["db.1"]["/var/lib/postgresql"][1] is True
    assert members


def test_fresh_volumes_are_checked_against_the_storage_quota_when_the_run_is_created(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    alice = user_client(deploy_api, "alice")
    services_of(deploy_api).quotas.set("user:alice", limits=Limits(storage_gib=2), caller=SERVER)
    push(alice, FRESH)  # 1 GiB + 2 x 100 MiB, each counted in whole GiB: 3 GiB
    answer = start(alice)
    assert answer.status_code == 409, answer.text
    assert answer.json()["error"]["type"] == "CapacityExceeded"
    assert "storage" in answer.json()["error"]["message"]
    assert runs_recorded(deploy_api) == 0 and fake.list_volumes() == []
    bound = start(alice, multiplicity={"web": 0})  # 1 GiB fits
    assert bound.status_code == 201, bound.text


def test_scaling_makes_fresh_volumes_for_new_instances_and_deletes_the_removed_ones(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    alice = user_client(deploy_api, "alice")
    run_id = run_of(alice, FRESH, mutable=True)
    members = nodes(alice, fake, run_id, 3)
    to(alice, run_id, members, "Ready")
    wait_until(lambda: alice.get(f"/api/runs/{run_id}").json()["waiting"] == 0, what="Ready")
    short = run_id[:8]

    added = alice.post(f"/api/runs/{run_id}/nodes/web/instances", json={"count": 1})
    assert added.json() == {"added": ["web.3"]}
    members = nodes(alice, fake, run_id, 4)
    assert list(mounts(fake, run_id)["web.3"]) == ["/srv/cache"]
    assert shown(alice, run_id)["web.3"][0]["ref"] == f"alice/{short}-web-3-cache"
    to(alice, run_id, members, "Ready")
    wait_until(lambda: alice.get(f"/api/runs/{run_id}").json()["scaling"] is None, what="round")

    removed = alice.delete(f"/api/runs/{run_id}/nodes/web/instances", params={"ids": "1"})
    assert removed.json() == {"removed": ["web.1"]}

    def states() -> dict[str, str]:
        return {v.name: v.state for v in volumes_of(deploy_api, "alice").for_run(run_id)}

    wait_until(lambda: states()[f"{short}-web-1-cache"] == "gone", what="web.1's volume deleted")
    assert states() == {
        f"{short}-db-1-data": "ready",
        f"{short}-web-1-cache": "gone",
        f"{short}-web-2-cache": "ready",
        f"{short}-web-3-cache": "ready",
    }
    del members["web.1"]
    to(alice, run_id, members, "Ready")
    wait_until(lambda: alice.get(f"/api/runs/{run_id}").json()["scaling"] is None, what="round")
    assert alice.delete(f"/api/runs/{run_id}").status_code == 200
    wait_for_state(alice, run_id, "Done")
    assert set(states().values()) == {"gone"} and fake.list_volumes(tags={"run": run_id}) == []


def test_a_node_with_a_volume_bound_read_write_is_not_scaled_up(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    alice = user_client(deploy_api, "alice")
    volumes_of(deploy_api, "alice").create("pgdata", size_bytes=GiB)
    run_id = run_of(alice, BOUND, mutable=True)
    members = nodes(alice, fake, run_id, 3)
    to(alice, run_id, members, "Ready")
    wait_until(lambda: alice.get(f"/api/runs/{run_id}").json()["waiting"] == 0, what="Ready")
    refused = alice.post(f"/api/runs/{run_id}/nodes/db/instances", json={"count": 1})
    assert refused.status_code == 409
    assert refused.json()["error"]["message"] == (
        "node db mounts volume alice/pgdata read-write: a volume attached read-write goes to "
        "one instance"
    )
    assert (
        alice.post(f"/api/runs/{run_id}/nodes/web/instances", json={"count": 1}).status_code == 200
    )


def test_run_show_lists_each_node_instance_s_volumes(
    deploy_api: TestClient,
    fake: FakeConnector,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stratus: Callable[..., CliResult] = cli_on(deploy_api, settings, capsys)
    owner = settings.user
    services_of(deploy_api).volumes(Principal.for_user(owner)).create("pgdata", size_bytes=GiB)
    run_id = run_of(deploy_api, BOUND)
    nodes(deploy_api, fake, run_id, 3)
    table = stratus("run", "show", run_id[:8])
    assert table.code == 0, table.err
    lines = [" ".join(line.split()) for line in table.out.splitlines()]
    assert "NODE VOLUME REF PATH MODE KIND STATE" in lines
    assert f"db.1 data {owner}/pgdata /var/lib/postgresql rw bound ready" in lines
    # A narrow terminal folds the long references: the row starts on one line.
    assert any(line.startswith(f"web.2 cache {owner}/{run_id[:8]}-web") for line in lines)
    assert [line.split()[-3:] for line in lines if line.startswith("web.") and "cache" in line] == [
        ["rw", "fresh", "ready"], ["rw", "fresh", "ready"]
    ]  # fmt: skip
    as_json = stratus("run", "show", run_id[:8], "-o", "json")
    (db,) = [n for n in json.loads(as_json.out)["nodes"] if n["name"] == "db.1"]
    assert db["volumes"][0]["ref"] == f"{owner}/pgdata"


def test_claims_take_up_a_fresh_volume_an_earlier_attempt_made(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    """What a server killed between making a node instance's volume and its machine leaves:
    the next attempt takes the recorded volume up (never a second one), and one left broken
    is made again; teardown deletes whatever was made."""
    services = services_of(deploy_api)
    volumes = services.run_volumes
    run_id = str(uuid.uuid4())
    node = NodePlan(
        "db", "apps/db", 1, 1, "local", 0, "debian-12", {}, {}, {}, (), {},
        volumes=(NodeVolume("data", "/srv/data", False, "", GiB),),
    )  # fmt: skip
    plan = Plan("apps/app", 1, {"db": node}, {})
    member = [Member("db.1", "db", 1)]
    first = volumes.claims(run_id, "alice", plan, member, proceed=lambda: True)["db.1"]
    again = volumes.claims(run_id, "alice", plan, member, proceed=lambda: True)["db.1"]
    assert not isinstance(first, Exception) and not isinstance(again, Exception)
    assert [c.volume_id for c in first] == [c.volume_id for c in again]
    assert len(volumes_of(deploy_api, "alice").for_run(run_id)) == 1
    assert volumes.claims(run_id, "alice", plan, member, proceed=lambda: False) == {}

    fake.ex_vanish_volume(first[0].mount.volume)  # behind our back: the record is left broken
    broken = volumes_of(deploy_api, "alice").get(first[0].volume_id)
    assert broken.state == "gone"
    remade = volumes.claims(run_id, "alice", plan, member, proceed=lambda: True)["db.1"]
    assert not isinstance(remade, Exception) and remade[0].volume_id != first[0].volume_id
    assert volumes.delete_for_run(run_id, "alice") == [remade[0].volume_id]
    assert fake.list_volumes(tags={"run": run_id}) == []


def _backend(api: TestClient, volume_id: str) -> str:
    with session_scope(services_of(api).engine) as session:
        return session.get_one(VolumeRecord, volume_id).backend_name


def test_the_persistent_example_round_trips_and_needs_its_owner_s_pgdata(
    deploy_api: TestClient,
    fake: FakeConnector,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(REPOSITORY)
    stratus: Callable[..., CliResult] = cli_on(deploy_api, settings, capsys)
    assert stratus("module", "push", "examples/webapp-persistent").code == 0
    found = stratus("module", "show", "examples/webapp-persistent/db", "-o", "json")
    written = (REPOSITORY / "examples/webapp-persistent/db.yaml").read_text()
    assert json.loads(found.out)["text"] == written  # stored and shown as pushed
    assert (
        "    path: /var/lib/postgresql\n"
        in stratus("module", "show", "examples/webapp-persistent/db").out
    )

    body = {"module": "examples/webapp-persistent", "keep_running": "never"}
    refused = deploy_api.post("/api/runs", json=body)
    assert refused.status_code == 404, refused.text
    assert refused.json()["error"]["message"].startswith("node db: volume data: ")
    volumes_of(deploy_api, settings.user).create("pgdata", size_bytes=GiB)
    started = deploy_api.post("/api/runs", json=body)
    assert started.status_code == 201, started.text
    nodes(deploy_api, fake, started.json()["id"], 5)
    assert shown(deploy_api, started.json()["id"])["db.1"][0]["ref"] == f"{settings.user}/pgdata"
