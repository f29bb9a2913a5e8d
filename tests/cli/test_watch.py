"""`stratus watch`, in-process against the API, with repositories on a real git server on
loopback: add prints the push hook's URL and secret once; list, show and history are tables
and lines for people and JSON with ``-o json``; pause, resume, notify and remove say what they
did; errors are one line with the exit code `stratus --help` documents.

The site's own user is root, so that alice (the ``stratus`` fixture acts as her) and bob are
users like any other; ``admin`` is root, the site's administrator.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from stratuslab import config
from stratuslab.api.client import ApiClient
from stratuslab.cli.main import main
from stratuslab.cli.runtime import Runtime
from stratuslab.config import Settings
from stratuslab.db.models import utcnow
from stratuslab.db.session import session_scope
from stratuslab.db.verify_models import VerificationRecord, WatchBranchRecord
from stratuslab.principal import SERVER
from stratuslab.services import Services
from tests.deploy.support import wait_until
from tests.support import CliResult, InProcessTransport, environment
from tests.verify.gitserver import GitServer, Repo

Stratus = Callable[..., CliResult]
pytestmark = pytest.mark.spawns  # the git server, and the git the verifier runs


@pytest.fixture
def settings(tmp_path: Path, store: str) -> Settings:
    return config.load(environment(tmp_path, STRATUS_DATABASE_URL=store, STRATUS_USER="root"))


def cli_as(
    api: TestClient, settings: Settings, capsys: pytest.CaptureFixture[str], user: str
) -> Stratus:
    def run(*args: str) -> CliResult:
        runtime = Runtime()
        runtime.__dict__["settings"] = settings
        runtime.__dict__["client"] = ApiClient(
            "http://testserver", token="test-token", user=user, transport=InProcessTransport(api)
        )
        code = main(list(args), runtime=runtime)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def services(api: TestClient) -> Services:
    found: Services = api.app.state.services  # type: ignore[attr-defined]
    for name in ("alice", "bob"):
        found.accounts.add_user(name, caller=SERVER, password="correct horse")
    return found


@pytest.fixture
def bob(api: TestClient, settings: Settings, capsys: pytest.CaptureFixture[str]) -> Stratus:
    return cli_as(api, settings, capsys, "bob")


@pytest.fixture
def admin(api: TestClient, settings: Settings, capsys: pytest.CaptureFixture[str]) -> Stratus:
    return cli_as(api, settings, capsys, "root")


@pytest.fixture
def repo(git_server: GitServer) -> Repo:
    return git_server.create()  # empty: the verifier polls it and finds nothing to verify


def ok(result: CliResult) -> CliResult:
    assert result.code == 0, result.err
    return result


def added(stratus: Stratus, repo: Repo, name: str, *more: str) -> dict[str, Any]:
    result = ok(stratus("watch", "add", repo.git_url, "--module", "apps/demo", "--name", name,
                        "--every", "3600", *more, "-o", "json"))  # fmt: skip
    found: dict[str, Any] = json.loads(result.out)
    return found


def polled(services: Services, watch_id: str, branches: int = 1) -> None:
    """Wait for the verifier's first poll of a new watch to end (the branches it took)."""

    def done() -> bool:
        with session_scope(services.engine) as session:
            found = session.scalars(
                select(WatchBranchRecord.branch).where(WatchBranchRecord.watch_id == watch_id)
            ).all()
        return len(found) >= branches

    wait_until(done, what="the verifier's first poll")


def one_line(result: CliResult) -> str:
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and result.out == "", result
    return lines[0]


# -- for people ------------------------------------------------------------------------------


def test_add_prints_the_hook_url_and_the_secret_once(
    stratus: Stratus, services: Services, repo: Repo
) -> None:
    result = ok(stratus("watch", "add", repo.git_url, "--module", "apps/demo", "--name", "app",
                        "--branch", "main", "--branch", "dev", "--notify",
                        "mailto:alice@example.org"))  # fmt: skip
    assert result.out.strip() == f"Watching {repo.git_url} as 'app' (main, dev, every 300 s)."
    (watch,) = services.watches.list_watches(caller=SERVER)
    hook = f"{services.settings.links_url}/api/hooks/{watch['id']}"
    assert f"Push hook (GitHub, GitLab, Gitea or Forgejo): {hook}" in result.err
    secret = result.err.split("secret ", 1)[1].split()[0]
    assert len(secret) == 40 and "shown only now" in result.err
    for later in (
        stratus("watch", "show", "app"),
        stratus("watch", "list"),
        stratus("watch", "show", "app", "-o", "json"),
        stratus("watch", "list", "-o", "json"),
        stratus("watch", "pause", "app"),
    ):
        assert later.code == 0 and secret not in later.out + later.err


def test_list_is_a_table_of_each_branch(stratus: Stratus, services: Services, repo: Repo) -> None:
    empty = ok(stratus("watch", "list"))
    assert empty.out == "" and "No watches" in empty.err
    first = added(stratus, repo, "one", "--branch", "main", "--branch", "dev")
    added(stratus, repo, "two")
    polled(services, first["id"], branches=2)
    lines = ok(stratus("watch", "list")).out.splitlines()
    assert lines[0].split() == ["NAME", "OWNER", "REPOSITORY", "BRANCH", "STATUS", "PAUSED"]
    rows = [line.split(None, 4) for line in lines[1:]]
    assert [r[:4] for r in rows] == [
        ["one", "alice", repo.git_url, "main"],
        ["one", "alice", repo.git_url, "dev"],
        ["two", "alice", repo.git_url, "main"],
    ]
    assert all(r[4].split() == ["not", "yet", "verified", "False"] for r in rows)


def test_show_says_where_each_branch_stands(
    stratus: Stratus, services: Services, repo: Repo
) -> None:
    watch = added(stratus, repo, "app", "--branch", "main", "--branch", "dev")
    polled(services, watch["id"], branches=2)
    shown = ok(stratus("watch", "show", "app")).out.splitlines()
    assert shown[0] == "watch alice/app"
    assert shown[1].split() == ["repository", repo.git_url]
    assert shown[3].startswith("  every       3600 s; last poll ") and shown[3].endswith(" ago")
    assert shown[5].split() == ["push", "hook", watch["hook_url"]]
    assert shown[-2:] == ["  main: not yet verified", "  dev: not yet verified"]

    good, bad = "8e01d44" + "0" * 33, "3f2a9c1" + "1" * 33
    with session_scope(services.engine) as session:
        main_ = session.get(WatchBranchRecord, (watch["id"], "main"))
        dev = session.get(WatchBranchRecord, (watch["id"], "dev"))
        assert main_ is not None and dev is not None
        main_.verdict, main_.verdict_commit, main_.since_commit = "passed", good, good
        main_.since = utcnow() - timedelta(hours=3, minutes=1)
        dev.verdict, dev.verdict_commit, dev.broken_by, dev.last_good = "failed", bad, bad, good
        dev.since = utcnow() - timedelta(minutes=12)
    ok(stratus("watch", "pause", "app"))
    shown = ok(stratus("watch", "show", "app")).out.splitlines()
    assert shown[0] == "watch alice/app (paused)"
    assert shown[-2:] == [
        "  main: passing since 8e01d44, 3 h",
        "  dev: broken by 3f2a9c1, 12 min, last good 8e01d44",
    ]


def test_history_is_a_table_of_verified_commits(
    stratus: Stratus, services: Services, repo: Repo
) -> None:
    watch = added(stratus, repo, "app", "--branch", "main", "--branch", "dev")
    now = utcnow()
    with session_scope(services.engine) as session:
        for n, (branch, verdict, subject) in enumerate(
            [("main", "passed", "add a cache"), ("dev", "failed", "[red]db[/red] down")]
        ):
            session.add(
                VerificationRecord(
                    watch_id=watch["id"], branch=branch, commit=f"{n + 1:x}" * 40,
                    author="Alice", subject=subject, why="newest", phase="done",
                    verdict=verdict, run_id=f"{n + 1:08x}-0000-4000-8000-000000000000",
                    queued_at=now, started_at=now, ended_at=now + timedelta(seconds=312),
                )
            )  # fmt: skip
    lines = ok(stratus("watch", "history", "app")).out.splitlines()
    header = ["COMMIT", "BRANCH", "AUTHOR", "MESSAGE", "VERDICT", "SECONDS", "RUN", "WHY"]
    assert lines[0].split() == header
    # A commit's subject is printed as written, never read as markup.
    assert lines[1].split() == ["2222222", "dev", "Alice", "[red]db[/red]", "down",
                                "failed", "312.0", "00000002", "newest"]  # fmt: skip
    assert lines[2].split() == ["1111111", "main", "Alice", "add", "a", "cache", "passed",
                                "312.0", "00000001", "newest"]  # fmt: skip
    dev = ok(stratus("watch", "history", "app", "--branch", "dev")).out.splitlines()
    assert len(dev) == 2 and dev[1].startswith("2222222")
    rows = json.loads(ok(stratus("watch", "history", "app", "--limit", "1", "-o", "json")).out)
    assert [(r["commit"][:7], r["verdict"], r["seconds"]) for r in rows] == [
        ("2222222", "failed", 312.0)
    ]


def test_pause_resume_notify_and_remove_say_what_they_did(
    stratus: Stratus, services: Services, repo: Repo
) -> None:
    added(stratus, repo, "app")
    assert ok(stratus("watch", "pause", "app")).out == "pause: alice/app\n"
    assert services.watches.show("alice/app", caller=SERVER)["paused"] is True
    assert ok(stratus("watch", "resume", "app")).out == "resume: alice/app\n"
    assert services.watches.show("alice/app", caller=SERVER)["paused"] is False
    assert ok(stratus("watch", "notify", "app")).out == "notify: alice/app\n"
    assert ok(stratus("watch", "remove", "app")).out == "remove: alice/app\n"
    assert services.watches.list_watches(caller=SERVER) == []


def test_each_command_answers_json(stratus: Stratus, services: Services, repo: Repo) -> None:
    watch = added(stratus, repo, "app")
    assert watch["name"] == "app" and len(watch["secret"]) == 40
    assert watch["hook_url"].endswith(f"/api/hooks/{watch['id']}")
    polled(services, watch["id"])
    for args, check in [
        (("list",), lambda v: [w["id"] for w in v] == [watch["id"]]),
        (("show", "app"), lambda v: v["id"] == watch["id"] and "secret" not in v),
        (("history", "app"), lambda v: v == []),
        (("pause", "app"), lambda v: v["paused"] is True),
        (("resume", "app"), lambda v: v["paused"] is False),
        (("notify", "app"), lambda v: v["name"] == "app"),
        (("remove", "app"), lambda v: v["removed"] is True),
    ]:
        result = ok(stratus("watch", *args, "-o", "json"))
        assert check(json.loads(result.out)), (args, result.out)


def test_run_queues_the_head_of_a_branch(
    stratus: Stratus, services: Services, git_server: GitServer
) -> None:
    repo = git_server.create()
    head = repo.commit("first", {"README": "hello\n"})
    repo.push()
    added(stratus, repo, "app")
    result = ok(stratus("watch", "run", "app"))
    assert result.out == f"Queued {head[:12]} of main.\n"
    queued = json.loads(ok(stratus("watch", "run", "app", "--commit", head[:7], "-o", "json")).out)
    assert (queued["commit"], queued["branch"]) == (head, "main")


# -- errors ----------------------------------------------------------------------------------


def test_errors_are_one_line_with_their_exit_code(
    stratus: Stratus, services: Services, repo: Repo
) -> None:
    added(stratus, repo, "app")
    cases = [
        (66, ("show", "nobodys"), "error: no watch 'nobodys'; see `stratus watch list`"),
        (66, ("run", "app"), f"error: no branch 'main' in {repo.git_url}"),
        (66, ("run", "app", "--branch", "dev"), "error: the watch does not follow branch 'dev'"),
        (67, ("add", repo.git_url, "--module", "m", "--name", "app"),
         "error: alice already has a watch named 'app'; give another --name"),
        (65, ("add", repo.git_url, "--module", "m", "--every", "5"),
         "error: --every 5: between 10 and 604800 seconds; a push hook wakes"),
        (65, ("add", str(repo.bare), "--module", "m"),
         "is a local path: only a site administrator may watch one"),
        (65, ("add", repo.git_url, "--module", "m", "--notify", "ftp://x"),
         "error: --notify 'ftp://x': mailto:ADDRESS or an http(s):// URL"),
        (65, ("add", repo.git_url, "--module", "m", "--param", "port=81"),
         "error: --param 'port=81': write NODE:NAME=VALUE"),
        (65, ("add", repo.git_url, "--module", "m", "--name", "Bad Name"),
         "error: watch name 'Bad Name': lowercase letters"),
        (65, ("history", "app", "--branch", "b" * 300), "error: query.branch: String should"),
    ]  # fmt: skip
    for code, args, says in cases:
        result = stratus("watch", *args)
        assert result.code == code, (args, result)
        line = one_line(result)
        assert says in line, (args, line)
    usage = stratus("watch", "add", repo.git_url)  # no --module
    assert usage.code == 64 and "Missing option '--module'" in usage.err


@pytest.mark.parametrize(
    "args",
    [
        ("show", "app"),
        ("history", "app"),
        ("pause", "app"),
        ("resume", "app"),
        ("notify", "app"),
        ("run", "app"),
        ("remove", "app"),
        ("show", "alice/app"),
        ("remove", "alice/app"),
    ],
)
def test_another_users_watch_is_not_found(
    stratus: Stratus, bob: Stratus, services: Services, repo: Repo, args: tuple[str, ...]
) -> None:
    watch = added(stratus, repo, "app")
    result = bob("watch", *args)
    assert result.code == 66
    assert one_line(result) == f"error: no watch {args[1]!r}; see `stratus watch list`"
    assert services.watches.show("alice/app", caller=SERVER)["id"] == watch["id"]
    assert services.watches.show("alice/app", caller=SERVER)["paused"] is False


def test_an_administrator_names_a_watch_as_owner_slash_name(
    stratus: Stratus, admin: Stratus, services: Services, repo: Repo
) -> None:
    added(stratus, repo, "app")
    assert admin("watch", "show", "app").code == 66  # their own namespace has none
    shown = ok(admin("watch", "show", "alice/app")).out
    assert shown.startswith("watch alice/app\n")
    listed = ok(admin("watch", "list")).out
    assert "alice" in listed and "app" in listed
    assert ok(admin("watch", "pause", "alice/app")).out == "pause: alice/app\n"
    assert ok(admin("watch", "remove", "alice/app")).out == "remove: alice/app\n"
    assert stratus("watch", "show", "app").code == 66
    local = ok(admin("watch", "add", str(repo.bare), "--module", "m", "--name", "local"))
    assert "as 'local'" in local.out
