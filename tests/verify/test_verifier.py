"""Continuous verification end to end, without LXD: the real server (its verifier thread, its
outbox) deploys each commit of a repository served by a real git daemon on the localproc cloud
(real agents as local processes), mails a real SMTP server and posts to a real webhook
receiver, all on loopback. The story of a branch: green, broken by a commit (the mail names
it), fixed (the mail says so), broken again across several untested commits (bisected to the
one that did it), a commit whose modules do not load, a watch removed while its run goes on."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any
from xml.etree import ElementTree

import httpx
import pytest

from tests.deploy.realserver import RealServer
from tests.support import wait_until
from tests.verify.gitserver import GitServer, Repo
from tests.verify.notify.servers import Delivered, Mailbox, Receiver, SmtpServer, smtp_server

pytestmark = pytest.mark.spawns

IMAGE = """kind: image
description: this host, as the localproc cloud runs it
images:
  local: debian-12
"""
APP = """kind: application
description: one web node whose deployment recipe this test breaks and fixes
nodes:
  web:
    component: web
"""
WEB = """kind: component
parent: ../base
recipes:
  deployment: |
    #!/bin/sh
{body}
"""
GOOD = "    echo serving\n    ss-display ready"
MAIL_TO = "alice@example.org"


def web(body: str = GOOD) -> dict[str, str]:
    return {"ci/app/web.yaml": WEB.format(body=body)}


def breaking(why: str) -> str:
    return f'    echo "{why}" >&2\n    exit 1'


@pytest.fixture(scope="module")
def mailbox() -> Iterator[tuple[Mailbox, SmtpServer]]:
    box = Mailbox()
    server = smtp_server(box)
    yield box, server
    server.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.close()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, mailbox: tuple[Mailbox, SmtpServer]
) -> Iterator[RealServer]:
    real = RealServer(
        tmp_path_factory.mktemp("verifier"),
        smtp_host="127.0.0.1",
        smtp_port=mailbox[1].port,
        smtp_from="stratus@127.0.0.1",
        watch_min_every_s=1,
    )
    real.start()
    yield real
    real.stop()


@pytest.fixture(scope="module")
def http(server: RealServer) -> Iterator[httpx.Client]:
    api = server.api()
    yield api.http
    api.close()


@pytest.fixture
def repo(git_server: GitServer) -> Repo:
    made = git_server.create()
    made.commit("the application", {"ci/base.yaml": IMAGE, "ci/app/module.yaml": APP, **web()})
    made.push()
    return made


def add_watch(http: httpx.Client, repo: Repo, receiver: Receiver, **extra: Any) -> dict[str, Any]:
    body = {
        "repository": repo.git_url,
        "module": "ci/app",
        "every_s": 3600,  # only hooks and `watch notify` wake it in these tests
        "notify": [f"mailto:{MAIL_TO}", f"{receiver.url}/hook"],
        **extra,
    }
    answer = http.post("/api/watches", json=body)
    assert answer.status_code == 201, answer.text
    watch: dict[str, Any] = answer.json()
    receiver.webhook_secret = watch["secret"]
    return watch


def history(http: httpx.Client, name: str) -> list[dict[str, Any]]:
    answer = http.get(f"/api/watches/{name}/history")
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def verdict_of(http: httpx.Client, name: str, sha: str, timeout: float = 90) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        for row in history(http, name):
            if row["commit"] == sha and row["phase"] == "done":
                return row
        return None

    return wait_until(done, timeout, f"the verdict of {sha[:7]}", interval=0.3)  # type: ignore[no-any-return]


def mail_about(box: Mailbox, sha: str, timeout: float = 60) -> Delivered:
    def arrived() -> Delivered | None:
        return next((m for m in box.delivered if sha[:7] in str(m.message["Subject"])), None)

    return wait_until(arrived, timeout, f"a mail about {sha[:7]}", interval=0.2)  # type: ignore[no-any-return]


def push_hook(http: httpx.Client, watch: dict[str, Any], repo: Repo, before: str) -> None:
    """What GitHub sends on a push, signed with the watch's secret."""
    after = repo.rev()
    body = json.dumps(
        {
            "ref": "refs/heads/main",
            "before": before,
            "after": after,
            "forced": False,
            "deleted": False,
            "created": False,
            "commits": [{"id": after}],
        }
    ).encode()
    signature = hmac.new(watch["secret"].encode(), body, hashlib.sha256).hexdigest()
    answer = http.post(
        f"/api/hooks/{watch['id']}",
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-Hub-Signature-256": f"sha256={signature}",
        },
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["accepted"] is True


def text_of(mail: Delivered) -> str:
    part = mail.message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def test_a_branch_goes_red_with_the_commit_that_broke_it_then_green_again(
    http: httpx.Client,
    repo: Repo,
    receiver: Receiver,
    mailbox: tuple[Mailbox, SmtpServer],
    server: RealServer,
) -> None:
    box = mailbox[0]
    first = repo.rev()
    watch = add_watch(http, repo, receiver, name="story")
    passed = verdict_of(http, "story", first)
    assert passed["verdict"] == "passed" and passed["run_id"]
    run = http.get(f"/api/runs/{passed['run_id']}").json()
    assert run["state"] == "Done" and f"commit:{first[:12]}" in run["tags"]

    broken = repo.commit(
        "switch db driver", web(breaking("no driver for postgresql")), author="Bob"
    )
    repo.push()
    push_hook(http, watch, repo, before=first)
    failed = verdict_of(http, "story", broken)
    assert failed["verdict"] == "failed"
    assert failed["node"] == "web.1" and "no driver for postgresql" in failed["reason"]
    mail = mail_about(box, broken)
    assert mail.recipients == [MAIL_TO]
    subject, body = str(mail.message["Subject"]), text_of(mail)
    assert "FAILED" in subject and "main" in subject
    assert "no driver for postgresql" in body and "web.1" in body
    assert f"broken by {broken[:7]} (bob: 'switch db driver')" in body.lower()
    assert f"/api/runs/{failed['run_id']}" in body
    # The watched run's JUnit XML, linked from the mail: the failing case says why.
    assert f"/api/runs/{failed['run_id']}/junit" in body
    answer = http.get(f"/api/runs/{failed['run_id']}/junit")
    assert answer.status_code == 200, answer.text
    junit = ElementTree.fromstring(answer.content)
    failures = [f.get("message") or "" for f in junit.iter("failure")]
    assert any("no driver for postgresql" in message for message in failures)

    fixed = repo.commit("put the driver back", web(), author="Carol")
    repo.push()
    answer = http.post("/api/watches/story/notify")  # what a post-receive hook calls
    assert answer.status_code == 202, answer.text
    assert verdict_of(http, "story", fixed)["verdict"] == "passed"
    mail = mail_about(box, fixed)
    assert "PASSED" in str(mail.message["Subject"])

    shown = http.get("/api/watches/story").json()
    (main,) = shown["branches"]
    assert main["verdict"] == "passed" and main["status"].startswith(f"passing since {fixed[:7]}")
    verdicts = [(r["commit"], r["verdict"]) for r in history(http, "story")]
    assert verdicts == [(fixed, "passed"), (broken, "failed"), (first, "passed")]

    # Every verdict reached the webhook, signed as the receiver checks.
    def told() -> list[str] | None:  # the outbox delivers in its own time
        hooks = [seen for seen in receiver.seen if seen.path == "/hook"]
        verdicts = [seen.json()["stratus"]["verdict"] for seen in hooks if seen.answered == 200]
        return verdicts if len(verdicts) >= 3 else None

    assert wait_until(told, 30, "three webhooks") == ["passed", "failed", "passed"]
    hooks = [seen for seen in receiver.seen if seen.path == "/hook"]
    assert all(not seen.complaint for seen in hooks)

    badge = http.get(f"/api/badges/{watch['id']}/main.svg")
    assert badge.status_code == 200 and "passing" in badge.text


def test_a_break_across_untested_commits_is_bisected_and_the_mail_names_it(
    http: httpx.Client, repo: Repo, receiver: Receiver, mailbox: tuple[Mailbox, SmtpServer]
) -> None:
    box = mailbox[0]
    good = repo.rev()
    watch = add_watch(http, repo, receiver, name="bisect")
    assert verdict_of(http, "bisect", good)["verdict"] == "passed"
    commits = [repo.commit(f"harmless {i}", {f"ci/notes/{i}.txt": "x"}) for i in range(2)]
    culprit = repo.commit("tune the web tier", web(breaking("bad tuning")), author="Dave")
    commits += [culprit]
    commits += [repo.commit(f"after {i}", {f"ci/notes/after{i}.txt": "y"}) for i in range(2)]
    repo.push()
    push_hook(http, watch, repo, before=good)
    assert verdict_of(http, "bisect", commits[-1])["verdict"] == "failed"

    def named() -> Delivered | None:
        wanted = f"broken by {culprit[:7]}"
        return next((m for m in box.delivered if wanted in str(m.message["Subject"])), None)

    mail = wait_until(named, 120, f"the mail naming {culprit[:7]}", interval=0.3)
    assert "Dave" in text_of(mail)
    rows = history(http, "bisect")
    runs = [r for r in rows if r["phase"] == "done"]
    assert len(runs) <= 1 + 1 + 3  # the first commit, the newest, at most log2(5) rounded up
    state = http.get("/api/watches/bisect").json()["branches"][0]
    assert state["broken_by"] == culprit
    assert state["status"].startswith(f"broken by {culprit[:7]}")


def test_a_commit_whose_modules_do_not_load_is_invalid_and_provisions_nothing(
    http: httpx.Client, repo: Repo, receiver: Receiver
) -> None:
    add_watch(http, repo, receiver, name="invalid")
    verdict_of(http, "invalid", repo.rev())
    bad = repo.commit("typo", {"ci/app/module.yaml": APP + "  oops: [\n"})
    repo.push()
    assert http.post("/api/watches/invalid/notify").status_code == 202
    found = verdict_of(http, "invalid", bad)
    assert found["verdict"] == "invalid" and found["run_id"] is None
    assert "ci/app/module.yaml:" in found["reason"]


def test_a_watch_removed_while_its_run_goes_on_cancels_the_run_and_goes(
    http: httpx.Client, repo: Repo, receiver: Receiver, server: RealServer
) -> None:
    slow = repo.commit("slow", web("    sleep 60"))
    repo.push()
    add_watch(http, repo, receiver, name="removed")

    def running() -> str | None:
        rows = [r for r in history(http, "removed") if r["commit"] == slow]
        return rows[0]["run_id"] if rows and rows[0]["phase"] == "running" else None

    run_id = wait_until(running, 60, "the slow commit's run", interval=0.3)
    answer = http.delete("/api/watches/removed")
    assert answer.status_code == 200 and answer.json()["removed"] is False
    assert http.get("/api/watches/removed").status_code == 404
    api = server.api()
    try:
        assert api.wait_for_state(run_id, "Cancelled", "Done", "Aborted", timeout=60) == "Cancelled"
    finally:
        api.close()
    wait_until(
        lambda: all(w["name"] != "removed" for w in http.get("/api/watches").json()),
        30,
        "the watch to go",
    )
    assert not [i for i in server.connector.list_instances(addresses=False) if run_id in str(i)]


def test_a_repository_that_cannot_be_fetched_says_why(
    http: httpx.Client, receiver: Receiver, git_server: GitServer
) -> None:
    body = {"repository": git_server.git_url("nowhere"), "module": "ci/app", "name": "nowhere"}
    assert http.post("/api/watches", json=body).status_code == 201

    def said() -> str | None:
        return http.get("/api/watches/nowhere").json()["poll_error"]  # type: ignore[no-any-return]

    error = wait_until(said, 30, "the fetch to fail", interval=0.3)
    assert "nowhere" in error
    assert history(http, "nowhere") == []


def test_commits_asked_for_are_bounded_per_watch(
    http: httpx.Client, repo: Repo, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stratuslab.verify import verifier

    monkeypatch.setattr(verifier, "MAX_QUEUED", 2)
    add_watch(http, repo, receiver, name="asked")
    verdict_of(http, "asked", repo.rev())
    assert http.post("/api/watches/asked/pause").status_code == 200
    for _ in range(2):
        answer = http.post("/api/watches/asked/run", json={"commit": repo.rev()})
        assert answer.status_code == 202, answer.text
    refused = http.post("/api/watches/asked/run", json={"commit": repo.rev()})
    assert (
        refused.status_code == 409 and "wait to be verified" in refused.json()["error"]["message"]
    )
    assert http.delete("/api/watches/asked").status_code == 200


def test_a_verdict_is_told_even_when_the_repository_is_gone_meanwhile(
    http: httpx.Client, repo: Repo, receiver: Receiver, mailbox: tuple[Mailbox, SmtpServer]
) -> None:
    add_watch(http, repo, receiver, name="vanish")
    verdict_of(http, "vanish", repo.rev())
    broken = repo.commit("slow, then broken", web("    sleep 3\n" + breaking("gone wrong")))
    repo.push()
    assert http.post("/api/watches/vanish/notify").status_code == 202

    def running() -> bool:
        return any(
            r["commit"] == broken and r["phase"] == "running" for r in history(http, "vanish")
        )

    wait_until(running, 30, "the slow commit's run", interval=0.2)
    hidden = repo.bare.with_name(repo.bare.name + ".away")
    repo.bare.rename(hidden)  # the git server no longer has it
    try:
        assert verdict_of(http, "vanish", broken)["verdict"] == "failed"
        assert "FAILED" in str(mail_about(mailbox[0], broken).message["Subject"])
        state = http.get("/api/watches/vanish").json()["branches"][0]
        assert state["verdict"] == "failed" and state["verdict_commit"] == broken
    finally:
        hidden.rename(repo.bare)


def test_a_verdict_is_kept_when_what_it_sets_in_motion_fails(
    http: httpx.Client, repo: Repo, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stratuslab.verify import schedule

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug in the schedule")

    monkeypatch.setattr(schedule, "settle", broken)
    add_watch(http, repo, receiver, name="bug")
    row = verdict_of(http, "bug", repo.rev())  # recorded once, not judged again every round
    assert row["verdict"] == "passed" and row["phase"] == "done"
    assert http.delete("/api/watches/bug").status_code == 200
