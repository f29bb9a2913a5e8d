"""What reaches a watch by its id: forges' push hooks (signed with the secret shown when the
watch was added, as each forge documents it), the badge of a branch and the feeds of verdicts.

One world per store, whose verifier is stopped, so that a hook's wake and the verdicts the
tests write stay as they are left (tests/api/test_watches.py shows the verifier polling when
woken). Signatures are computed here with ``hmac``, as GitHub and Gitea document them, not with
the module under test.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest

from stratuslab.db.models import utcnow
from stratuslab.db.session import session_scope
from stratuslab.db.verify_models import VerificationRecord, WatchBranchRecord, WatchRecord
from tests.api.watchers import World, add, error, record, world_on
from tests.verify.gitserver import GitServer

STORES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
PAYLOADS = Path(__file__).parent.parent / "verify" / "payloads"
AFTER = "a5db12685c3c40ba4fbb4f8284e36919269dee0d"  # the samples' pushed commit
NOBODY = "0123456789abcdef" * 2  # a watch id nobody has
ATOM = {"a": "http://www.w3.org/2005/Atom"}
pytestmark = pytest.mark.spawns  # the git server
NAMES = itertools.count(1)


@pytest.fixture(scope="module", params=STORES)
def world(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    git_server: GitServer,
) -> Iterator[World]:
    root = tmp_path_factory.mktemp("hooks")
    with world_on(request.param, root, git_server, verifier=False) as made:
        yield made


def payload(name: str, **changes: Any) -> bytes:
    document = json.loads((PAYLOADS / f"{name}.json").read_text())
    return json.dumps(document | changes).encode()


def github(secret: str, body: bytes, event: str = "push") -> dict[str, str]:
    """The headers GitHub sends: X-Hub-Signature-256 is ``sha256=`` and the hex HMAC-SHA256
    of the raw body, keyed with the webhook's secret."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/7a3b1f0",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": "f6266f16-1bf3-46a5-9ea4-602e06ead473",
        "X-Hub-Signature-256": f"sha256={digest}",
    }


def woken(world: World, watch_id: str) -> bool:
    found = record(world, watch_id)
    assert found is not None
    return found.wake


@pytest.fixture
def watch(world: World) -> dict[str, Any]:
    """A new watch of alice's (main and release/1.x), not woken: the verifier would have
    polled it."""
    added = add(world, world.alice, f"hooked{next(NAMES)}", branches=["main", "release/1.x"])
    with session_scope(world.services.engine) as session:
        row = session.get(WatchRecord, added["id"])
        assert row is not None
        row.wake, row.polled_at = False, utcnow()
    return added


def hook(world: World, watch_id: str, body: bytes, headers: dict[str, str]) -> Any:
    return world.anybody.post(f"/api/hooks/{watch_id}", content=body, headers=headers)


# -- push hooks ------------------------------------------------------------------------------


def test_a_signed_github_push_wakes_the_watch(world: World, watch: dict[str, Any]) -> None:
    body = payload("github_push")
    answer = hook(world, watch["id"], body, github(watch["secret"], body))
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"accepted": True, "forge": "github", "branch": "main", "after": AFTER}
    assert woken(world, watch["id"])


def test_a_push_to_a_branch_with_a_slash(world: World, watch: dict[str, Any]) -> None:
    body = payload("github_push", ref="refs/heads/release/1.x")
    answer = hook(world, watch["id"], body, github(watch["secret"], body))
    assert answer.status_code == 202 and answer.json()["branch"] == "release/1.x"
    assert woken(world, watch["id"])


@pytest.mark.parametrize(
    "forged",
    ["another secret", "another body", "sha1", "no signature", "an empty signature"],
)
def test_a_push_not_signed_with_the_secret_is_refused(
    world: World, watch: dict[str, Any], forged: str
) -> None:
    body = payload("github_push")
    headers = github("another secret" if forged == "another secret" else watch["secret"], body)
    if forged == "another body":
        body = payload("github_push", after="b" * 40)
    elif forged == "sha1":
        del headers["X-Hub-Signature-256"]
        digest = hmac.new(watch["secret"].encode(), body, hashlib.sha1).hexdigest()
        headers["X-Hub-Signature"] = f"sha1={digest}"
    elif forged == "no signature":
        del headers["X-Hub-Signature-256"]
    elif forged == "an empty signature":
        headers["X-Hub-Signature-256"] = ""
    answer = hook(world, watch["id"], body, headers)
    assert answer.status_code == 401, answer.text
    assert "X-Hub-Signature-256" in error(answer)
    assert watch["secret"] not in answer.text
    assert not woken(world, watch["id"])


def test_an_unknown_or_removed_watch_is_a_404(world: World, watch: dict[str, Any]) -> None:
    body = payload("github_push")
    unknown = hook(world, NOBODY, body, github(watch["secret"], body))
    assert unknown.status_code == 404 and error(unknown) == "no such watch"
    malformed = hook(world, "not-an-id", body, github(watch["secret"], body))
    assert malformed.status_code == 422
    assert world.alice.delete(f"/api/watches/{watch['name']}").json()["removed"] is True
    removed = hook(world, watch["id"], body, github(watch["secret"], body))
    assert removed.status_code == 404 and removed.text == unknown.text


def test_a_body_over_one_mib_is_a_413(world: World, watch: dict[str, Any]) -> None:
    body = payload("github_push", padding="x" * (1 << 20))
    answer = hook(world, watch["id"], body, github(watch["secret"], body))
    assert answer.status_code == 413, answer.text
    assert "over 1048576 bytes" in error(answer)
    assert not woken(world, watch["id"])
    # Streamed, without a length: refused as it arrives, the same.
    chunks = iter([body[: 1 << 19], body[1 << 19 :]])
    streamed = world.anybody.post(
        f"/api/hooks/{watch['id']}", content=chunks, headers=github(watch["secret"], body)
    )
    assert streamed.status_code == 413


def test_a_ping_is_accepted_and_wakes_nothing(world: World, watch: dict[str, Any]) -> None:
    body = payload("github_ping")
    answer = hook(world, watch["id"], body, github(watch["secret"], body, event="ping"))
    assert answer.status_code == 202
    assert answer.json() == {"accepted": False, "why": "not a push event"}
    assert not woken(world, watch["id"])


@pytest.mark.parametrize("ref", ["refs/heads/feature", "refs/tags/v1.4.0", "refs/heads/mainly"])
def test_a_push_to_a_ref_the_watch_does_not_follow_wakes_nothing(
    world: World, watch: dict[str, Any], ref: str
) -> None:
    body = payload("github_push", ref=ref)
    answer = hook(world, watch["id"], body, github(watch["secret"], body))
    assert answer.status_code == 202
    assert answer.json() == {"accepted": False, "why": "not a watched branch"}
    assert not woken(world, watch["id"])


def test_a_paused_watch_is_not_woken(world: World, watch: dict[str, Any]) -> None:
    assert world.alice.post(f"/api/watches/{watch['name']}/pause").status_code == 200
    body = payload("github_push")
    answer = hook(world, watch["id"], body, github(watch["secret"], body))
    assert answer.status_code == 202
    assert answer.json() == {"accepted": False, "why": "the watch is paused"}
    assert not woken(world, watch["id"])
    world.alice.post(f"/api/watches/{watch['name']}/resume")
    assert woken(world, watch["id"])  # resuming polls at once: nothing pushed meanwhile is lost


@pytest.mark.parametrize(
    "body",
    [b"{", b"[]", b'{"ref": 1}', payload("github_push", after="not a sha"), b"\xff\xfe"],
    ids=["truncated", "a list", "a number for a ref", "a bad sha", "not utf-8"],
)
def test_a_signed_malformed_push_is_a_422(world: World, watch: dict[str, Any], body: bytes) -> None:
    answer = hook(world, watch["id"], body, github(watch["secret"], body))
    assert answer.status_code == 422, answer.text
    assert not woken(world, watch["id"])


def test_a_gitlab_push_proves_itself_with_the_token(world: World, watch: dict[str, Any]) -> None:
    body = payload("gitlab_push")
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitLab/17.3.0",
        "X-Gitlab-Event": "Push Hook",
        "X-Gitlab-Instance": "https://gitlab.example.org",
        "X-Gitlab-Token": watch["secret"],
    }
    wrong = hook(world, watch["id"], body, headers | {"X-Gitlab-Token": "guess"})
    assert wrong.status_code == 401 and "X-Gitlab-Token" in error(wrong)
    assert not woken(world, watch["id"])
    answer = hook(world, watch["id"], body, headers)
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"accepted": True, "forge": "gitlab", "branch": "main", "after": AFTER}
    assert woken(world, watch["id"])


def test_a_gitea_push_is_signed_without_a_prefix(world: World, watch: dict[str, Any]) -> None:
    body = payload("gitea_push")
    digest = hmac.new(watch["secret"].encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-Gitea-Event": "push",
        "X-Gitea-Delivery": "4f5a3c1e-2b7d-4e8f-9a0b-1c2d3e4f5a6b",
        "X-Gitea-Signature": digest,
        # Gitea sends GitHub's headers too; its own are the ones read.
        "X-GitHub-Event": "push",
        "X-Hub-Signature-256": f"sha256={digest}",
    }
    wrong = hook(world, watch["id"], body, headers | {"X-Gitea-Signature": "0" * 64})
    assert wrong.status_code == 401 and "X-Gitea-Signature" in error(wrong)
    answer = hook(world, watch["id"], body, headers)
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"accepted": True, "forge": "gitea", "branch": "main", "after": AFTER}
    assert woken(world, watch["id"])


# -- badges ----------------------------------------------------------------------------------


def set_verdict(world: World, watch_id: str, branch: str, verdict: str | None) -> None:
    with session_scope(world.services.engine) as session:
        row = session.get(WatchBranchRecord, (watch_id, branch))
        if row is None:
            row = WatchBranchRecord(watch_id=watch_id, branch=branch)
            session.add(row)
        row.verdict, row.verdict_commit = verdict, AFTER


def verification(world: World, watch_id: str, n: int, **fields: Any) -> None:
    now = utcnow()
    values: dict[str, Any] = {
        "branch": "main", "commit": f"{n:x}" * 40, "author": "Alice",
        "email": "alice@example.org", "subject": f"change {n}", "why": "newest",
        "phase": "done", "verdict": "passed", "run_id": f"{n:08x}-0000-4000-8000-000000000000",
        "queued_at": now, "started_at": now, "ended_at": now + timedelta(minutes=n),
    } | fields  # fmt: skip
    with session_scope(world.services.engine) as session:
        session.add(VerificationRecord(watch_id=watch_id, **values))


def badge(world: World, watch_id: str, branch: str) -> tuple[Any, str]:
    answer = world.anybody.get(f"/api/badges/{watch_id}/{branch}.svg")
    if answer.status_code != 200:
        return answer, ""
    root = ET.fromstring(answer.content)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    words = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    return answer, words


@pytest.mark.parametrize(
    ("verdict", "word"),
    [("passed", "passing"), ("failed", "failing"), ("error", "error"), ("invalid", "invalid")],
)
def test_a_badge_says_the_branchs_verdict(
    world: World, watch: dict[str, Any], verdict: str, word: str
) -> None:
    set_verdict(world, watch["id"], "main", verdict)
    answer, words = badge(world, watch["id"], "main")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "image/svg+xml"
    assert "no-cache" in answer.headers["cache-control"]
    assert word in words and f"{watch['name']} main" in words
    other, words = badge(world, watch["id"], "release/1.x")  # a branch with a '/'
    assert other.status_code == 200 and "unknown" in words and "release/1.x" in words


def test_a_badge_before_the_first_verdict(world: World, watch: dict[str, Any]) -> None:
    assert "unknown" in badge(world, watch["id"], "main")[1]
    verification(world, watch["id"], 1, phase="running", verdict=None, ended_at=None)
    assert "pending" in badge(world, watch["id"], "main")[1]


def test_a_badge_of_an_unknown_watch_or_branch_is_a_404(
    world: World, watch: dict[str, Any]
) -> None:
    for watch_id, branch in [(NOBODY, "main"), (watch["id"], "feature"), ("x", "main")]:
        answer, _ = badge(world, watch_id, branch)
        assert answer.status_code in (404, 422), answer.text
        assert answer.headers["content-type"] == "application/json"
    assert badge(world, NOBODY, "main")[0].status_code == 404
    world.alice.delete(f"/api/watches/{watch['name']}")
    assert badge(world, watch["id"], "main")[0].status_code == 404


# -- feeds -----------------------------------------------------------------------------------


def test_the_atom_feed_lists_the_done_verifications(world: World, watch: dict[str, Any]) -> None:
    verification(world, watch["id"], 1)
    verification(world, watch["id"], 2, verdict="failed", reason="db.1: exit 3", node="db.1")
    verification(world, watch["id"], 3, branch="release/1.x", subject="bell \x07 and \x1b[31m")
    verification(world, watch["id"], 4, phase="queued", verdict=None, ended_at=None)
    answer = world.anybody.get(f"/api/feeds/{watch['id']}.atom")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/atom+xml"
    feed = ET.fromstring(answer.content)
    assert feed.tag == "{http://www.w3.org/2005/Atom}feed"
    assert feed.findtext("a:title", namespaces=ATOM) == f"alice/{watch['name']}: verdicts"
    entries = feed.findall("a:entry", ATOM)
    titles = [e.findtext("a:title", namespaces=ATOM) or "" for e in entries]
    assert len(entries) == 3  # the queued one is not a verdict yet
    assert titles[0].startswith("PASSED release/1.x 3333333 (Alice: bell")
    assert titles[1].startswith("FAILED main 2222222 (Alice: change 2)")
    assert titles[2].startswith("PASSED main 1111111")
    assert entries[1].findtext("a:summary", namespaces=ATOM) == "db.1: exit 3"
    link = entries[1].find("a:link", ATOM)
    assert link is not None and link.get("href", "").endswith(
        "/api/runs/00000002-0000-4000-8000-000000000000"
    )
    ids = [e.findtext("a:id", namespaces=ATOM) or "" for e in entries]
    # Tag URIs (RFC 4151): the same ids if the server's port or scheme changes.
    host = world.links_url.split("//")[1].split(":")[0]
    assert all(i.startswith(f"tag:{host},2026:watch/{watch['id']}/verification/") for i in ids)
    assert feed.findtext("a:id", namespaces=ATOM) == f"tag:{host},2026:watch/{watch['id']}"
    assert "alice@example.org" not in answer.text and world.repo.git_url not in answer.text
    assert watch["secret"] not in answer.text


def test_the_json_feed(world: World, watch: dict[str, Any]) -> None:
    verification(world, watch["id"], 1)
    verification(world, watch["id"], 2, verdict="failed", reason="web.1: 502")
    answer = world.anybody.get(f"/api/feeds/{watch['id']}.json")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/feed+json")
    document = answer.json()
    assert document["version"] == "https://jsonfeed.org/version/1.1"
    assert {"title", "home_page_url", "feed_url", "items"} <= document.keys()
    assert document["feed_url"] == f"{world.links_url}/api/feeds/{watch['id']}.json"
    first, second = document["items"]
    assert {"id", "url", "title", "summary", "date_published", "authors"} <= first.keys()
    assert first["title"].startswith("FAILED main 2222222") and first["summary"] == "web.1: 502"
    assert first["authors"] == [{"name": "Alice"}]
    assert first["id"].endswith(
        f"watch/{watch['id']}/verification/{int(first['id'].rsplit('/', 1)[1])}"
    )
    atom = ET.fromstring(world.anybody.get(f"/api/feeds/{watch['id']}.atom").content)
    assert [e.findtext("a:id", namespaces=ATOM) for e in atom.findall("a:entry", ATOM)] == [
        first["id"],
        second["id"],
    ]  # the same entries, the same ids


def test_a_feed_of_an_unknown_watch_is_a_404(world: World) -> None:
    for suffix in ("atom", "json"):
        answer = world.anybody.get(f"/api/feeds/{NOBODY}.{suffix}")
        assert answer.status_code == 404 and error(answer) == "no such watch"


def test_an_empty_feed_is_still_a_feed(world: World, watch: dict[str, Any]) -> None:
    feed = ET.fromstring(world.anybody.get(f"/api/feeds/{watch['id']}.atom").content)
    assert feed.findall("a:entry", ATOM) == [] and feed.findtext("a:updated", namespaces=ATOM)
    assert world.anybody.get(f"/api/feeds/{watch['id']}.json").json()["items"] == []
