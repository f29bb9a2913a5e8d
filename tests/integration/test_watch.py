"""Continuous verification of examples/webapp on real LXD: a watched repository on a real git
daemon, the real `stratus` CLI and server, mail through a real SMTP server on loopback.

A commit that breaks the test node turns the branch red and a mail arrives naming that
commit; the commit that fixes it turns the branch green, and says so.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Stratus, cli, delete_instances
from tests.support import environment, wait_until
from tests.verify.gitserver import GitServer, Repo, free_port
from tests.verify.notify.servers import Delivered, Mailbox, SmtpServer, smtp_server

pytestmark = [pytest.mark.lxd, pytest.mark.spawns]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "webapp"
DEPLOY_S = 900.0  # one verification of examples/webapp, packages from the mirror included
BROKEN_CHECK = '"$url/items" | grep -q'


@pytest.fixture(scope="module")
def mailbox() -> Iterator[tuple[Mailbox, SmtpServer]]:
    box = Mailbox()
    server = smtp_server(box)
    yield box, server
    server.stop()


@pytest.fixture(scope="module")
def watcher(
    tmp_path_factory: pytest.TempPathFactory, mailbox: tuple[Mailbox, SmtpServer]
) -> Iterator[Stratus]:
    """The CLI of an installation of its own whose server mails the SMTP server above."""
    root = tmp_path_factory.mktemp("watch-live")
    prefix = f"test-{secrets.token_hex(3)}"
    env = {
        **os.environ,
        **environment(
            root,
            STRATUS_INSTANCE_PREFIX=prefix,
            STRATUS_SERVER_PORT=str(free_port()),
            STRATUS_SMTP_HOST="127.0.0.1",
            STRATUS_SMTP_PORT=str(mailbox[1].port),
            STRATUS_WATCH_MIN_EVERY_S="1",
        ),
    }
    env.pop("STRATUS_SERVER_URL", None)

    run = cli(env)
    try:
        yield run
    finally:
        run("server", "stop", timeout=120)
        delete_instances(prefix)


def _example() -> dict[str, str]:
    return {
        f"examples/webapp/{path.name}": path.read_text() for path in sorted(EXAMPLE.glob("*.yaml"))
    }


def _json(stratus: Stratus, *args: str) -> Any:
    done = stratus(*args, "-o", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _verdict(stratus: Stratus, sha: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        for row in _json(stratus, "watch", "history", "webapp"):
            if row["commit"] == sha and row["phase"] == "done":
                return row  # type: ignore[no-any-return]
        return None

    return wait_until(done, DEPLOY_S, f"the verdict of {sha[:7]}", interval=2)  # type: ignore[no-any-return]


def _mail(box: Mailbox, sha: str) -> Delivered:
    def arrived() -> Delivered | None:
        return next((m for m in box.delivered if sha[:7] in str(m.message["Subject"])), None)

    return wait_until(arrived, 60, f"a mail about {sha[:7]}", interval=0.5)  # type: ignore[no-any-return]


def test_a_commit_that_breaks_the_test_node_is_named_in_a_mail_and_its_fix_too(
    watcher: Stratus, git_server: GitServer, mailbox: tuple[Mailbox, SmtpServer]
) -> None:
    box = mailbox[0]
    repo: Repo = git_server.create()
    first = repo.commit("the web application", _example())
    repo.push()
    added = _json(
        watcher,
        "watch", "add", repo.git_url, "--module", "examples/webapp", "--name", "webapp",
        "--every", "3600", "--notify", "mailto:dev@example.org",
    )  # fmt: skip
    assert added["secret"] and added["branches"][0]["branch"] == "main"
    assert _verdict(watcher, first)["verdict"] == "passed"

    test = _example()["examples/webapp/test.yaml"]
    assert BROKEN_CHECK in test
    broken = repo.commit(
        "ask the service for /itemz",
        {"examples/webapp/test.yaml": test.replace(BROKEN_CHECK, '"$url/itemz" | grep -q')},
        author="Bob",
    )
    repo.push()
    assert watcher("watch", "notify", "webapp").returncode == 0  # as a post-receive hook would
    failed = _verdict(watcher, broken)
    assert failed["verdict"] == "failed" and failed["node"] == "test.1", failed
    assert "did not come back" in failed["reason"]
    mail = _mail(box, broken)
    assert "FAILED" in str(mail.message["Subject"])
    body = mail.message.get_body(("plain",))
    assert body is not None and f"broken by {broken[:7]}" in str(body.get_content()).lower()

    fixed = repo.commit("back to /items", {"examples/webapp/test.yaml": test}, author="Carol")
    repo.push()
    assert watcher("watch", "notify", "webapp").returncode == 0
    assert _verdict(watcher, fixed)["verdict"] == "passed"
    assert "PASSED" in str(_mail(box, fixed).message["Subject"])

    shown = watcher("watch", "show", "webapp")
    assert shown.returncode == 0 and f"passing since {fixed[:7]}" in shown.stdout
    assert watcher("watch", "remove", "webapp").returncode == 0
    shutil.rmtree(repo.work, ignore_errors=True)
