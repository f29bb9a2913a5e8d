"""/api/watches: a user adds, lists, shows, pauses, resumes, wakes and removes their watches of
a repository served by a real git server on loopback; the secret is shown once; another user is
told a watch of alice's does not exist, on every route; an administrator reaches them all.
(Bounds and bad input: test_watch_input.py.)

One world per store (an application, alice, bob and ada an administrator, each with an API
key), shared by the tests of this module, each making watches under names of its own. The
server's verifier runs as it does in production: it polls each new watch once (the repositories
here are empty, so nothing is verified), which the tests wait for before they compare.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from stratuslab.db.models import utcnow
from stratuslab.db.session import session_scope
from stratuslab.db.verify_models import VerificationRecord, WatchBranchRecord
from stratuslab.principal import Principal
from tests.api.watchers import World, add, error, polled, record, world_on
from tests.deploy.support import wait_until
from tests.verify.gitserver import GitServer

STORES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
pytestmark = pytest.mark.spawns  # the git server, and the git the verifier runs


@pytest.fixture(scope="module", params=STORES)
def world(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    git_server: GitServer,
) -> Iterator[World]:
    with world_on(request.param, tmp_path_factory.mktemp("watches"), git_server) as made:
        yield made


# -- adding, reading, changing -----------------------------------------------------------------


def test_a_user_adds_a_watch_and_its_secret_is_shown_only_then(world: World) -> None:
    added = add(world, world.alice, "first", branches=["main", "release/1.x"])
    assert added["owner"] == "alice" and added["name"] == "first"
    assert added["repository"] == world.repo.git_url and added["module"] == "apps/demo"
    assert len(added["id"]) == 32 and int(added["id"], 16) >= 0
    secret = added["secret"]
    assert len(secret) == 40 and int(secret, 16) >= 0  # 160 random bits, in hex
    assert [b["branch"] for b in added["branches"]] == ["main", "release/1.x"]
    assert {b["status"] for b in added["branches"]} == {"not yet verified"}
    polled(world, added["id"])

    answers = [
        world.alice.get("/api/watches/first"),
        world.alice.get("/api/watches"),
        world.alice.get("/api/watches/first/history"),
        world.alice.post("/api/watches/first/pause"),
        world.alice.post("/api/watches/first/resume"),
        world.alice.post("/api/watches/first/notify"),
        world.ada.get("/api/watches"),
        world.ada.get("/api/watches/first", params={"owner": "alice"}),
    ]
    for answer in answers:
        assert answer.status_code < 300, answer.text
        assert secret not in answer.text and "secret" not in answer.text
    shown = answers[0].json()
    assert shown["id"] == added["id"] and shown["polled_at"] is not None
    assert shown["poll_error"] is None  # the empty repository was fetched
    assert {k: v for k, v in added.items() if k != "secret"}.keys() == shown.keys()


def test_a_branch_reads_not_yet_verified_then_its_state(world: World) -> None:
    added = add(world, world.alice, "states", branches=["main", "dev"])
    polled(world, added["id"])
    shown = world.alice.get("/api/watches/states").json()
    # The same fields for a branch polled and one never seen, before and after a verdict.
    assert [b["status"] for b in shown["branches"]] == ["not yet verified"] * 2
    assert {frozenset(b) for b in shown["branches"]} == {frozenset(added["branches"][0])}

    sha = "3f2a9c1" + "0" * 33
    with session_scope(world.services.engine) as session:
        row = session.get(WatchBranchRecord, (added["id"], "main"))
        assert row is not None  # made by the poll
        row.verdict, row.verdict_commit, row.since_commit = "passed", sha, sha
        row.since = utcnow() - timedelta(hours=3, minutes=5)
    main, dev = world.alice.get("/api/watches/states").json()["branches"]
    assert main["status"] == "passing since 3f2a9c1, 3 h" and main["verdict"] == "passed"
    assert dev["status"] == "not yet verified" and main.keys() == dev.keys()


def test_a_user_lists_only_their_own_and_an_administrator_everyones(world: World) -> None:
    mine = add(world, world.alice, "listed")
    his = add(world, world.bob, "listed")  # names are per user
    alices = world.alice.get("/api/watches").json()
    bobs = world.bob.get("/api/watches").json()
    assert mine["id"] in {w["id"] for w in alices} and his["id"] not in {w["id"] for w in alices}
    assert {w["owner"] for w in alices} == {"alice"} and {w["owner"] for w in bobs} == {"bob"}
    assert {w["id"] for w in bobs} == {his["id"]}
    for admin in (world.ada, world.site):
        every = {(w["owner"], w["name"]) for w in admin.get("/api/watches").json()}
        assert {("alice", "listed"), ("bob", "listed")} <= every
        only = admin.get("/api/watches", params={"owner": "bob"}).json()
        assert [w["id"] for w in only] == [his["id"]]
    # A user's own ?owner= is theirs; another's shows nothing of theirs.
    # (by id: the verifier may poll the watch between the two reads, and its head moves)
    own = world.bob.get("/api/watches", params={"owner": "bob"}).json()
    assert [w["id"] for w in own] == [w["id"] for w in bobs]
    assert world.bob.get("/api/watches", params={"owner": "alice"}).json() == []


def test_pause_resume_and_notify(world: World) -> None:
    added = add(world, world.alice, "paused")
    first = polled(world, added["id"])
    paused = world.alice.post("/api/watches/paused/pause")
    assert paused.status_code == 200 and paused.json()["paused"] is True
    assert world.alice.get("/api/watches/paused").json()["paused"] is True
    found = record(world, added["id"])
    assert found is not None and (found.paused, found.wake) == (True, False)

    resumed = world.alice.post("/api/watches/paused/resume")
    assert resumed.status_code == 200 and resumed.json()["paused"] is False
    # Resuming polls at once: the verifier fetches again, though every_s is an hour.
    again = wait_until(
        lambda: (r := record(world, added["id"])) and not r.wake and r.polled_at != first.polled_at
    )
    assert again

    before = polled(world, added["id"]).polled_at
    woken = world.alice.post("/api/watches/paused/notify")
    assert woken.status_code == 202 and woken.json()["name"] == "paused"
    assert wait_until(
        lambda: (r := record(world, added["id"])) and not r.wake and r.polled_at != before,
        what="the poll that notify asks for",
    )


def test_history_lists_each_verification_newest_first(world: World) -> None:
    added = add(world, world.alice, "history", branches=["main", "dev"])
    assert world.alice.get("/api/watches/history/history").json() == []
    now = utcnow()
    with session_scope(world.services.engine) as session:
        for n, (branch, verdict) in enumerate([("main", "passed"), ("dev", "failed")]):
            session.add(
                VerificationRecord(
                    watch_id=added["id"], branch=branch, commit=f"{n:x}" * 40,
                    author="Alice", email="alice@example.org", subject=f"change {n}",
                    why="newest", phase="done", verdict=verdict, reason=None, run_id=None,
                    queued_at=now, started_at=now, ended_at=now + timedelta(seconds=42.5),
                )
            )  # fmt: skip
    rows = world.alice.get("/api/watches/history/history").json()
    assert [(r["branch"], r["verdict"], r["seconds"]) for r in rows] == [
        ("dev", "failed", 42.5),
        ("main", "passed", 42.5),
    ]
    assert rows[0]["subject"] == "change 1" and rows[0]["author"] == "Alice"
    dev = world.alice.get("/api/watches/history/history", params={"branch": "dev"}).json()
    assert [r["branch"] for r in dev] == ["dev"]
    one = world.alice.get("/api/watches/history/history", params={"limit": 1}).json()
    assert len(one) == 1 and one[0]["branch"] == "dev"
    for limit in (0, 1001, "many"):
        bad = world.alice.get("/api/watches/history/history", params={"limit": limit})
        assert bad.status_code == 422 and error(bad).startswith("query.limit:")


def test_removing_a_watch_forgets_it_and_frees_its_name(world: World) -> None:
    added = add(world, world.alice, "removed")
    gone = world.alice.delete("/api/watches/removed")
    assert gone.status_code == 200 and gone.json()["removed"] is True
    assert world.alice.get("/api/watches/removed").status_code == 404
    assert "removed" not in {w["name"] for w in world.alice.get("/api/watches").json()}
    assert record(world, added["id"]) is None
    assert world.alice.delete("/api/watches/removed").status_code == 404
    again = add(world, world.alice, "removed")
    assert again["id"] != added["id"] and again["secret"] != added["secret"]


def test_a_watch_whose_run_is_under_way_is_gone_at_once_and_its_name_waits(
    world: World,
) -> None:
    added = add(world, world.alice, "leaving")
    with session_scope(world.services.engine) as session:
        session.add(
            VerificationRecord(
                watch_id=added["id"], branch="main", commit="c" * 40, why="newest",
                phase="running", started_at=utcnow(),
            )
        )  # fmt: skip
    gone = world.alice.delete("/api/watches/leaving")
    assert gone.status_code == 200
    assert (gone.json()["removed"], gone.json()["pending"]) == (False, "its run is being cancelled")
    assert world.alice.get("/api/watches/leaving").status_code == 404
    assert "leaving" not in {w["name"] for w in world.alice.get("/api/watches").json()}
    assert world.alice.post("/api/watches/leaving/resume").status_code == 404
    again = world.alice.post(
        "/api/watches", json={"repository": world.repo.git_url, "module": "m", "name": "leaving"}
    )
    assert again.status_code == 409
    assert error(again) == "alice's watch 'leaving' is being removed: its run is being cancelled"
    assert "give another --name" in again.json()["error"]["hint"]


# -- another user's watch is not there ---------------------------------------------------------

ROUTES = {
    "show": ("GET", ""),
    "history": ("GET", "/history"),
    "pause": ("POST", "/pause"),
    "resume": ("POST", "/resume"),
    "notify": ("POST", "/notify"),
    "run": ("POST", "/run"),
    "remove": ("DELETE", ""),
}


@pytest.fixture(scope="module")
def alices(world: World) -> dict[str, Any]:
    """A watch of alice's that bob tries to reach, polled once and then still."""
    added = add(world, world.alice, "alices")
    polled(world, added["id"])
    return added


def alices_state(world: World) -> dict[str, Any]:
    alice = Principal.for_user("alice")
    row = record(world, world.alice.get("/api/watches/alices").json()["id"])
    assert row is not None
    return {
        "show": world.services.watches.show("alices", caller=alice),
        "history": world.services.watches.history("alices", caller=alice),
        "flags": (row.paused, row.wake, row.removed, row.polled_at),
    }


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("owner", [None, "alice"], ids=["by-name", "owner=alice"])
def test_bob_is_told_alices_watch_does_not_exist(
    world: World, alices: dict[str, Any], route: str, owner: str | None
) -> None:
    method, tail = ROUTES[route]
    params = {"owner": owner} if owner else {}
    body = {} if route == "run" else None
    before = alices_state(world)
    answer = world.bob.request(method, f"/api/watches/alices{tail}", params=params, json=body)
    nobodys = world.bob.request(method, f"/api/watches/nobodys{tail}", params=params, json=body)
    assert answer.status_code == 404, answer.text
    assert "no watch" in error(answer)
    # Word for word what a watch nobody has gets.
    assert answer.text.replace("alices", "nobodys") == nobodys.text
    assert nobodys.status_code == 404
    assert alices_state(world) == before


def test_an_administrator_reaches_every_watch_by_its_owner(world: World) -> None:
    added = add(world, world.alice, "managed")
    mine = world.ada.get("/api/watches/managed")  # ada's own namespace: she has none
    assert mine.status_code == 404
    at = {"owner": "alice"}
    shown = world.ada.get("/api/watches/managed", params=at)
    assert shown.status_code == 200 and shown.json()["id"] == added["id"]
    assert world.ada.get("/api/watches/managed/history", params=at).json() == []
    assert world.ada.post("/api/watches/managed/pause", params=at).json()["paused"] is True
    assert world.site.post("/api/watches/managed/resume", params=at).json()["paused"] is False
    assert world.ada.post("/api/watches/managed/notify", params=at).status_code == 202
    # The repository is empty: there is no head to verify, and it says so.
    run = world.ada.post("/api/watches/managed/run", params=at, json={})
    assert run.status_code == 404 and "no branch 'main'" in error(run)
    assert world.ada.delete("/api/watches/managed", params=at).json()["removed"] is True
    assert world.alice.get("/api/watches/managed").status_code == 404


def test_an_administrator_adds_a_watch_of_their_own(world: World) -> None:
    added = add(world, world.ada, "adas")
    assert added["owner"] == "ada"
    assert world.ada.get("/api/watches/adas").json()["id"] == added["id"]
    assert world.alice.get("/api/watches/adas", params={"owner": "ada"}).status_code == 404


# -- where a repository may be -----------------------------------------------------------------


@pytest.mark.parametrize("where", ["path", "file-url"])
def test_a_repository_on_the_servers_disk_is_for_administrators_only(
    world: World, where: str
) -> None:
    url = str(world.repo.bare) if where == "path" else f"file://{world.repo.bare}"
    refused = world.alice.post(
        "/api/watches", json={"repository": url, "module": "apps/demo", "name": f"local-{where}"}
    )
    assert refused.status_code == 422
    assert "only a site administrator may watch one" in error(refused)
    assert f"local-{where}" not in {w["name"] for w in world.alice.get("/api/watches").json()}

    added = add(world, world.ada, f"local-{where}", repository=url)
    assert added["repository"] == url
    if where == "file-url":
        assert polled(world, added["id"]).poll_error is None  # git read it from the disk


def test_a_watch_id_is_128_random_bits(world: World) -> None:
    """The id is what badges, feeds and hooks are reached by: all of it is random. (A uuid4
    fixes 6 of its bits, version 4 and variant 10; eight random ids all looking like uuid4s
    is a chance of 1 in 2**48.)"""
    ids = {add(world, world.bob, f"id{n}")["id"] for n in range(8)}
    assert len(ids) == 8 and all(len(i) == 32 and i == i.lower() for i in ids)
    assert any(i[12] != "4" or i[16] not in "89ab" for i in ids)
