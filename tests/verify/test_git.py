"""The clone cache and the queries on a mirror, against a real git server on loopback
(git daemon and smart HTTP) serving repositories with real commits."""

from __future__ import annotations

import fcntl
import os
import socket
import stat
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from stratuslab.errors import BackendError, Invalid, NotFound, TooLarge
from stratuslab.verify.git import Mirror
from stratuslab.verify.gitcache import Repositories, check_url
from tests.verify.gitserver import GitServer, Repo, free_port

pytestmark = pytest.mark.spawns


@pytest.fixture
def repos(tmp_path: Path) -> Repositories:
    return Repositories(tmp_path / "cache", timeout_s=30)


def linear(repo: Repo, count: int) -> list[str]:
    """A base commit and ``count`` more on main, pushed: their shas, the base first."""
    shas = [repo.commit("base", {"n.txt": "0"})]
    shas += [repo.commit(f"change {i}", {"n.txt": str(i)}) for i in range(1, count + 1)]
    repo.push()
    return shas


# Fetching.


def test_the_first_fetch_clones_and_the_next_one_sees_a_push(
    git_server: GitServer, repos: Repositories
) -> None:
    repo = git_server.create()
    when = datetime(2024, 3, 1, 12, 30, tzinfo=UTC)
    first = repo.commit("add the web node", {"app.yaml": "x"}, author="Alice Martin", when=when)
    repo.push()

    mirror = repos.fetch(repo.git_url)
    assert mirror.path.parent == repos.cache_dir
    assert mirror.heads(["main"]) == {"main": first}
    commit = mirror.commit(first)
    assert (commit.author, commit.email, commit.subject) == (
        "Alice Martin",
        "alice@example.org",
        "add the web node",
    )
    assert commit.when == when and commit.when.tzinfo is not None

    second = repo.commit("switch db driver", {"db.yaml": "y"}, author="Bob")
    assert repos.fetch(repo.git_url).heads(["main"]) == {"main": first}  # not pushed yet
    repo.push()
    again = repos.fetch(repo.git_url)
    assert again.path == mirror.path
    assert again.heads(["main"]) == {"main": second}
    assert [c.sha for c in again.between(first, second)] == [second]
    assert again.is_ancestor(first, second) and not again.is_ancestor(second, first)


def test_smart_http_serves_several_branches(git_server: GitServer, repos: Repositories) -> None:
    repo = git_server.create()
    main = repo.commit("one", {"a": "1"})
    repo.checkout("feature", new=True)
    feature = repo.commit("two", {"b": "2"})
    repo.push("main", "feature")

    mirror = repos.fetch(repo.http_url)
    assert mirror.heads(["main", "feature", "nope"]) == {
        "main": main,
        "feature": feature,
        "nope": None,
    }
    assert mirror.resolve("feature") == feature
    assert [c.subject for c in mirror.between(None, feature)] == ["two", "one"]


def test_a_forced_push_moves_the_head_and_cuts_the_old_commits_off(
    git_server: GitServer, repos: Repositories
) -> None:
    repo = git_server.create()
    base, old, older = linear(repo, 2)
    repos.fetch(repo.git_url)
    repo.reset(base)
    rewritten = repo.commit("the same change, redone", {"n.txt": "redone"})
    repo.push(force=True)

    mirror = repos.fetch(repo.git_url)
    assert mirror.heads(["main"]) == {"main": rewritten}
    assert not mirror.is_ancestor(older, rewritten)
    assert mirror.is_ancestor(base, rewritten)
    assert mirror.commit(older).subject == "change 2"  # kept in the mirror, off any branch
    assert [c.sha for c in mirror.between(older, rewritten)] == [rewritten]
    assert [c.sha for c in mirror.between(base, rewritten)] == [rewritten]
    assert not mirror.is_ancestor("ab" * 20, rewritten)  # unknown: False, not an error
    assert old != rewritten


def test_a_deleted_branch_is_gone_after_the_next_fetch(
    git_server: GitServer, repos: Repositories
) -> None:
    repo = git_server.create()
    repo.commit("one")
    repo.checkout("topic", new=True)
    topic = repo.commit("two")
    repo.push("main", "topic")
    assert repos.fetch(repo.git_url).heads(["topic"]) == {"topic": topic}

    repo.delete("topic")
    assert repos.fetch(repo.git_url).heads(["topic"]) == {"topic": None}


@pytest.mark.parametrize("kind", ["git", "http"])
def test_a_repository_that_does_not_exist_says_what_git_said(
    git_server: GitServer, repos: Repositories, kind: str
) -> None:
    url = git_server.git_url("nope") if kind == "git" else git_server.http_url("nope")
    with pytest.raises(BackendError) as caught:
        repos.fetch(url)
    words = "no such repository" if kind == "git" else "not found"
    assert words in str(caught.value) and url in str(caught.value)
    assert not repos.path_for(url).exists()
    assert not [p for p in repos.cache_dir.iterdir() if p.name.startswith(".new-")]


def test_a_port_nothing_listens_on_is_a_backend_error(repos: Repositories) -> None:
    url = f"git://127.0.0.1:{free_port()}/app.git"
    with pytest.raises(BackendError, match="Connection refused") as caught:
        repos.fetch(url)
    assert url in str(caught.value)


def test_a_server_that_never_answers_is_given_up_on(tmp_path: Path) -> None:
    repos = Repositories(tmp_path / "cache", timeout_s=1)
    with socket.create_server(("127.0.0.1", 0)) as silent:  # connects, never replies
        url = f"git://127.0.0.1:{silent.getsockname()[1]}/app.git"
        started = time.monotonic()
        with pytest.raises(BackendError, match="git fetch timed out after 1 s") as caught:
            repos.fetch(url)
    assert time.monotonic() - started < 10
    assert url in str(caught.value) and not repos.path_for(url).exists()


def test_a_failed_fetch_leaves_the_mirror_as_it_was(
    git_server: GitServer, repos: Repositories
) -> None:
    repo = git_server.create()
    head = repo.commit("one")
    repo.push()
    repos.fetch(repo.http_url)
    repo.bare.rename(repo.bare.with_name("gone.git"))
    with pytest.raises(BackendError, match="not found"):
        repos.fetch(repo.http_url)
    mirror = repos.mirror(repo.http_url)
    assert mirror is not None and mirror.heads(["main"]) == {"main": head}


def test_a_password_in_the_url_is_never_shown(git_server: GitServer, repos: Repositories) -> None:
    url = f"http://robot:s3cret-token@127.0.0.1:{git_server.http_port}/nope.git"
    with pytest.raises(BackendError) as caught:
        repos.fetch(url)
    assert "s3cret-token" not in str(caught.value)
    assert "robot:***@127.0.0.1" in str(caught.value)


def test_a_local_path_is_fetched_with_the_file_transport(
    git_server: GitServer, repos: Repositories
) -> None:
    repo = git_server.create()
    head = repo.commit("one")
    repo.push()
    assert repos.fetch(str(repo.bare)).heads(["main"]) == {"main": head}
    assert repos.fetch(f"file://{repo.bare}").heads(["main"]) == {"main": head}


def test_a_mirror_over_the_bound_is_refused_and_removed(
    git_server: GitServer, tmp_path: Path
) -> None:
    repos = Repositories(tmp_path / "cache", max_mib=1)
    repo = git_server.create()
    repo.commit("big", {"blob": os.urandom(2 * 1024 * 1024)})  # random: packs as large
    repo.push()
    with pytest.raises(BackendError, match="over the bound of 1 MiB"):
        repos.fetch(repo.git_url)  # cut short while it arrives
    assert not repos.path_for(repo.git_url).exists()

    grows = git_server.create()
    grows.commit("part 1", {"a": os.urandom(600 * 1024)})
    grows.push()
    repos.fetch(grows.git_url)
    grows.commit("part 2", {"b": os.urandom(600 * 1024)})
    grows.push()
    with pytest.raises(BackendError, match=r"over the bound of 1 MiB: its clone is removed"):
        repos.fetch(grows.git_url)  # each pack under the bound, the two over it
    assert repos.mirror(grows.git_url) is None


def test_a_repository_with_a_crafted_tree_is_refused_as_it_arrives(
    git_server: GitServer, repos: Repositories
) -> None:
    repo = git_server.create()
    bare = ("--git-dir", str(repo.bare))
    blob = git_server.git(*bare, "hash-object", "-w", "--stdin", input="x\n").strip()
    tree = git_server.git(*bare, "mktree", input=f"100644 blob {blob}\t..\n").strip()
    env = {"GIT_AUTHOR_NAME": "Mallory", "GIT_AUTHOR_EMAIL": "m@example.org"}
    env |= {"GIT_COMMITTER_NAME": "Mallory", "GIT_COMMITTER_EMAIL": "m@example.org"}
    commit = git_server.git(*bare, "commit-tree", "-m", "up", tree, env=env).strip()
    git_server.git(*bare, "update-ref", "refs/heads/main", commit)
    with pytest.raises(BackendError, match="hasDotdot"):
        repos.fetch(repo.git_url)
    assert repos.mirror(repo.git_url) is None


def test_two_threads_fetching_one_url_take_turns(
    git_server: GitServer, repos: Repositories
) -> None:
    repo = git_server.create()
    head = linear(repo, 3)[-1]
    start = threading.Barrier(2)
    results: list[object] = []

    def fetch() -> None:
        start.wait()
        try:
            results.append(repos.fetch(repo.http_url).heads(["main"]))
        except Exception as exc:  # reported below
            results.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == [{"main": head}, {"main": head}]
    assert sorted(p.name for p in repos.cache_dir.iterdir() if not p.name.endswith(".lock")) == [
        ".home",
        ".keys",
        repos.path_for(repo.http_url).name,
    ]


def test_a_fetch_waits_for_the_lock_a_bounded_time(git_server: GitServer, tmp_path: Path) -> None:
    repos = Repositories(tmp_path / "cache", timeout_s=0.3)
    repo = git_server.create()
    repo.commit("one")
    repo.push()
    path = repos.path_for(repo.git_url)
    with path.with_name(path.name + ".lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another process fetching it
        with pytest.raises(BackendError, match=r"another fetch of .* has held it"):
            repos.fetch(repo.git_url)
    assert repos.fetch(repo.git_url).heads(["main"]) == {"main": repo.rev()}


def test_a_deploy_key_is_handed_to_ssh_in_a_private_file_and_removed(
    repos: Repositories, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An ssh that records what it was given (no sshd here): the key's file, its mode and text.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "ssh-called"
    (bin_dir / "ssh").write_text(
        "#!/bin/sh\n"
        f'echo "$@" > {record}\n'
        'while [ $# -gt 0 ]; do [ "$1" = -i ] && { stat -c %a "$2"; cat "$2"; } '
        f">> {record}; shift; done\n"
        "echo 'ssh: connect to host 127.0.0.1 port 22: Connection refused' >&2; exit 255\n"
    )
    (bin_dir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----"

    with pytest.raises(BackendError, match="Connection refused"):
        repos.fetch("git@127.0.0.1:team/app.git", deploy_key=key)
    args, mode, *text = record.read_text().splitlines()
    assert mode == "600" and "\n".join(text) == key
    for option in ("IdentitiesOnly=yes", "BatchMode=yes", "StrictHostKeyChecking=accept-new"):
        assert option in args
    assert f"UserKnownHostsFile={repos.cache_dir / 'known_hosts'}" in args
    assert list((repos.cache_dir / ".keys").iterdir()) == []
    with pytest.raises(Invalid, match="not an ssh private key"):
        repos.fetch("git@127.0.0.1:team/app.git", deploy_key="hunter2")


# URLs.


@pytest.mark.parametrize(
    "url",
    [
        "git://git.example.org/app.git",
        "https://github.com/team/app.git",
        "http://user:token@forge.example.org:8080/app",
        "ssh://git@forge.example.org:2222/team/app.git",
        "git@github.com:team/app.git",
        "forge.example.org:app.git",
        "git@[::1]:app.git",
    ],
)
def test_check_url_accepts_what_git_fetches_over_a_network(url: str) -> None:
    assert check_url(f"  {url}\n", local_allowed=False) == url


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("", "empty"),
        ("ext::sh -c touch% /tmp/pwned", "ext:: is a transport"),
        ("fd::3", "fd:: is a transport"),
        ("-uhelp", "cannot start with '-'"),
        ("--upload-pack=touch /tmp/x", "cannot start with '-'"),
        ("ssh://-oProxyCommand=touch%20x/app", "no valid host"),
        ("ssh://-user@host/app", "no valid host"),
        ("-oProxyCommand=x:app", "cannot start with '-'"),
        ("git@-oProxyCommand=x:app", "not a valid user@host:path"),
        ("git@host:-app", "not a valid user@host:path"),
        ("https://host/app\n.git", "control character"),
        ("https://host/\x00app", "control character"),
        ("ftp://host/app.git", "ftp:// is not a transport"),
        ("git+ssh://host/app.git", "is not a transport"),
        ("https://host:port/app", "not a valid URL"),
        ("https://" + "a" * 2050, "over 2048 characters"),
        ("/srv/git/app.git", "only a site administrator"),
        ("file:///srv/git/app.git", "only a site administrator"),
        ("relative/path", "only a site administrator"),
    ],
)
def test_check_url_refuses_the_rest(url: str, words: str) -> None:
    with pytest.raises(Invalid, match=words.replace("+", r"\+")) as caught:
        check_url(url, local_allowed=False)
    assert caught.value.hint


def test_check_url_lets_an_administrator_name_a_local_repository() -> None:
    assert check_url("/srv/git/app.git", local_allowed=True) == "/srv/git/app.git"
    assert check_url("file:///srv/app", local_allowed=True) == "file:///srv/app"
    for url in ("relative/path", "~/app", "file://other-host/srv/app", "ext::sh"):
        with pytest.raises(Invalid):
            check_url(url, local_allowed=True)


# Commits.


def test_resolve_takes_a_sha_a_prefix_or_a_branch(
    git_server: GitServer, repos: Repositories
) -> None:
    repo = git_server.create()
    base, head = linear(repo, 1)
    mirror = repos.fetch(repo.git_url)
    assert mirror.resolve(head) == head
    assert mirror.resolve(base[:7]) == base
    assert mirror.resolve("main") == head
    with pytest.raises(NotFound):
        mirror.resolve("no-such-branch")
    with pytest.raises(NotFound):
        mirror.resolve("ab" * 20)
    for bad in ("-all", "--output=/tmp/x", "main..other", "HEAD@{1}", "main^", ""):
        with pytest.raises((Invalid, NotFound)):
            mirror.resolve(bad)
    with pytest.raises(Invalid):
        mirror.resolve("-all")


def test_a_prefix_several_commits_share_is_refused(tmp_path: Path, repos: Repositories) -> None:
    # 1,500 commits made at once (git fast-import): two surely share 4 hex digits.
    server = GitServer(tmp_path / "local", http=False)
    repo = server.create("many")
    stream = "".join(
        f"commit refs/heads/main\ncommitter A <a@b> {1700000000 + i} +0000\ndata 2\n{i % 10}\n\n"
        for i in range(1500)
    )
    server.git("--git-dir", str(repo.bare), "fast-import", "--quiet", input=stream)
    mirror = repos.fetch(str(repo.bare))
    shas = [c.sha for c in mirror.between(None, mirror.resolve("main"), limit=1500)]
    assert len(shas) == 1500
    prefixes = [sha[:4] for sha in shas]
    shared = next(p for i, p in enumerate(prefixes) if p in prefixes[:i])
    with pytest.raises(Invalid, match="names several commits"):
        mirror.resolve(shared)


def test_a_commit_that_is_not_utf8_is_read_not_fatal(
    git_server: GitServer, repos: Repositories, tmp_path: Path
) -> None:
    # Old repositories hold Latin-1 names and messages with no encoding header (git commit
    # would convert them today): written here as raw bytes.
    repo = git_server.create()
    tree = repo.git("hash-object", "-t", "tree", "-w", "/dev/null").strip()  # the empty tree
    raw = tmp_path / "commit"
    raw.write_bytes(
        f"tree {tree}\n".encode()
        + b"author Zo\xe9 Martin <zoe@example.org> 1700000000 +0100\n"
        + b"committer Zo\xe9 Martin <zoe@example.org> 1700000000 +0100\n\ncaf\xe9 cr\xe8me\n"
    )
    sha = repo.git("hash-object", "-t", "commit", "-w", str(raw)).strip()
    repo.git("update-ref", "refs/heads/main", sha)
    repo.push()
    commit = repos.fetch(repo.git_url).commit(sha)
    assert (commit.author, commit.subject) == ("Zo\ufffd Martin", "caf\ufffd cr\ufffdme")
    assert commit.when == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


def test_commits_come_in_one_call_in_the_order_asked(
    git_server: GitServer, repos: Repositories
) -> None:
    repo = git_server.create()
    shas = linear(repo, 4)
    mirror = repos.fetch(repo.git_url)
    asked = [shas[3], shas[0], "ab" * 20, shas[2][:8]]
    assert [c.sha for c in mirror.commits(asked)] == [shas[3], shas[0], shas[2]]
    assert [c.sha for c in mirror.between(None, shas[-1], limit=2)] == [shas[4], shas[3]]
    assert [c.sha for c in mirror.between(shas[1], shas[4])] == shas[:1:-1]
    with pytest.raises(NotFound):
        mirror.commit("ab" * 20)
    with pytest.raises(NotFound):
        mirror.between("ab" * 20, shas[-1])
    with pytest.raises(Invalid):
        mirror.commits(["--all"])


# Bisection.


def run_bisect(
    mirror: Mirror, good: str, bad: str, bad_from: set[str], errors: set[str]
) -> tuple[list[str], list[str], list[str]]:
    """Drive ``bisect_next`` as the verifier will: each pick is verified (bad if in
    ``bad_from``, an error if in ``errors``) until none is left. The picks, the suspects
    then, the skipped."""
    goods, skipped, picks = [good], list[str](), list[str]()
    while (pick := mirror.bisect_next(goods, bad, skip=skipped)) is not None:
        assert pick not in picks, "a commit was picked twice"
        picks.append(pick)
        if pick in errors:
            skipped.append(pick)
        elif pick in bad_from:
            bad = pick
        else:
            goods.append(pick)
        assert len(picks) <= 10
    return picks, mirror.suspects(goods, bad, skip=skipped), skipped


def test_bisect_finds_the_first_bad_of_8_commits_in_3_runs(
    git_server: GitServer, repos: Repositories
) -> None:
    repo = git_server.create()
    shas = linear(repo, 8)  # base (passed), then 8 untested, the newest failed
    mirror = repos.fetch(repo.git_url)
    for first_bad in range(1, 9):
        picks, suspects, _ = run_bisect(mirror, shas[0], shas[8], set(shas[first_bad:]), set())
        assert suspects == [shas[first_bad]], f"first bad: change {first_bad}"
        assert len(picks) <= 3
        assert picks[0] == shas[4]  # the middle, whatever the verdicts to come
        assert shas[8] not in picks


def test_bisect_through_a_merge(git_server: GitServer, repos: Repositories) -> None:
    repo = git_server.create()
    base = repo.commit("base", {"a": "0"})
    repo.checkout("side", new=True)
    side = [repo.commit(f"side {i}", {"s": str(i)}) for i in range(1, 4)]
    repo.checkout("main")
    main = [repo.commit(f"main {i}", {"m": str(i)}) for i in range(1, 3)]
    merge = repo.merge("side", "merge side")
    repo.push("main", "side")
    mirror = repos.fetch(repo.git_url)
    # "side 2" broke it: it, "side 3" and the merge are bad; main's own commits are good.
    bad_from = {side[1], side[2], merge}
    picks, suspects, _ = run_bisect(mirror, base, merge, bad_from, set())
    assert suspects == [side[1]]
    assert len(picks) <= 3
    assert set(picks) <= {*side, *main}


def test_bisect_skips_commits_whose_verdict_was_an_error(
    git_server: GitServer, repos: Repositories
) -> None:
    repo = git_server.create()
    shas = linear(repo, 8)
    mirror = repos.fetch(repo.git_url)
    # An error far from the culprit changes nothing but the path.
    first = mirror.bisect_next([shas[0]], shas[8])
    assert first is not None
    picks, suspects, skipped = run_bisect(mirror, shas[0], shas[8], set(shas[7:]), {first})
    assert suspects == [shas[7]] and skipped == [first] and first == shas[4]
    # An error just before the culprit: either may be the first bad one.
    picks, suspects, skipped = run_bisect(mirror, shas[0], shas[8], set(shas[5:]), {shas[4]})
    assert shas[4] in skipped
    assert suspects == [shas[4], shas[5]]
    # Everything in between an error: nothing to verify, any may be it.
    errors = set(shas[1:8])
    picks, suspects, skipped = run_bisect(mirror, shas[0], shas[8], set(shas[5:]), errors)
    assert sorted(picks) == sorted(errors) and set(suspects) == {*errors, shas[8]}
    assert suspects[-1] == shas[8]
    assert mirror.bisect_next([shas[0]], shas[8], skip=shas[1:8]) is None
    with pytest.raises(NotFound):
        mirror.bisect_next(["ab" * 20], shas[8])


# Export.


def test_export_writes_the_tree_with_its_links_and_subdirectories(
    git_server: GitServer, repos: Repositories, tmp_path: Path
) -> None:
    repo = git_server.create()
    sha = repo.commit(
        "modules",
        {
            "modules/webapp.yaml": "kind: application\n",
            "modules/scripts/deploy.sh": "#!/bin/sh\necho deployed\n",
            "version.txt": "$Format:%H$\n",
            "ignored.txt": "still here\n",
            ".gitattributes": "version.txt export-subst\nignored.txt export-ignore\n",
        },
        executable=["modules/scripts/deploy.sh"],
        links={"current": "modules/webapp.yaml", "outside": "/etc/passwd", "up": "../.."},
    )
    repo.push()
    dest = tmp_path / "tree"
    dest.mkdir()
    repos.fetch(repo.git_url).export(sha, dest)

    assert (dest / "modules" / "webapp.yaml").read_text() == "kind: application\n"
    script = dest / "modules" / "scripts" / "deploy.sh"
    assert stat.S_IMODE(script.stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "modules" / "webapp.yaml").stat().st_mode) == 0o644
    assert os.readlink(dest / "current") == "modules/webapp.yaml"
    assert os.readlink(dest / "outside") == "/etc/passwd"  # kept, never followed
    assert os.readlink(dest / "up") == "../.."
    # The tree as stored, whatever its .gitattributes ask of git archive.
    assert (dest / "version.txt").read_text() == "$Format:%H$\n"
    assert (dest / "ignored.txt").read_text() == "still here\n"
    assert sorted(os.listdir(dest)) == [
        ".gitattributes",
        "current",
        "ignored.txt",
        "modules",
        "outside",
        "up",
        "version.txt",
    ]


def test_export_refuses_a_tree_over_the_bound_and_writes_nothing(
    git_server: GitServer, repos: Repositories, tmp_path: Path
) -> None:
    repo = git_server.create()
    sha = repo.commit("large", {"a.bin": b"\0" * (700 * 1024), "b.bin": b"\1" * (700 * 1024)})
    few = repo.commit("many files", {f"f{i}": "x" for i in range(20)})
    repo.push()
    mirror = repos.fetch(repo.git_url)
    dest = tmp_path / "tree"
    dest.mkdir()
    with pytest.raises(TooLarge, match="over the bound of 1 MiB"):
        mirror.export(sha, dest, max_mib=1)
    with pytest.raises(TooLarge, match="over the bound of 10"):
        mirror.export(few, dest, max_files=10)
    assert list(dest.iterdir()) == []
    with pytest.raises(NotFound):
        mirror.export("ab" * 20, dest)
    (dest / "x").write_text("")
    with pytest.raises(Invalid, match="not an empty directory"):
        mirror.export(sha, dest)
