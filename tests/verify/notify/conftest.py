"""Fixtures of the notification tests: outcomes to tell, and real servers on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from stratuslab.verify.notify.mail import SmtpSettings
from stratuslab.verify.values import Commit, Outcome, Verdict
from tests.verify.notify.servers import (
    Certs,
    Mailbox,
    Receiver,
    SmtpServer,
    make_certs,
    smtp_server,
)

BAD = Commit(
    sha="3f2a9c1" + "0" * 33,
    author="Alice",
    email="alice@example.org",
    subject="switch db driver",
    when=datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
)
GOOD_SHA = "8e01d44" + "1" * 33
HEAD = Commit(
    sha="c0ffee0" + "2" * 33,
    author="Bob",
    email="bob@example.org",
    subject="tune the web tier",
    when=datetime(2026, 3, 1, 13, 0, tzinfo=UTC),
)


@pytest.fixture
def outcome() -> Callable[..., Outcome]:
    """A failed outcome of branch main, bisected to Alice's commit; keywords override."""

    def make(**changes: Any) -> Outcome:
        base = Outcome(
            watch="webapp",
            owner="alice",
            repository="https://git.example.org/alice/webapp.git",
            branch="main",
            commit=HEAD,
            verdict=Verdict.FAILED,
            previous=Verdict.PASSED,
            run_id="0b6c7d1e-0000-4000-8000-000000000001",
            run_url="http://127.0.0.1:8421/runs/0b6c7d1e",
            report_urls=("http://127.0.0.1:8421/runs/0b6c7d1e/reports/test.1",),
            reason="test.1: curl http://web/ answered 500",
            node="test.1",
            seconds=252.4,
            broken_by=BAD,
            last_good=GOOD_SHA,
            links={"watch": "http://127.0.0.1:8421/watches/webapp"},
        )
        return replace(base, **changes)

    return make


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path)


@pytest.fixture
def mailbox() -> Mailbox:
    return Mailbox()


@pytest.fixture
def smtp(mailbox: Mailbox) -> Iterator[SmtpServer]:
    """A plain SMTP server on loopback that keeps what it accepts in ``mailbox``."""
    server = smtp_server(mailbox)
    yield server
    server.stop()


@pytest.fixture
def smtp_settings(smtp: SmtpServer) -> SmtpSettings:
    return SmtpSettings(
        host="127.0.0.1",
        port=smtp.port,
        starttls=False,
        user="",
        password="",
        sender="stratus@ci.example.org",
        timeout_s=5,
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(
        webhook_secret="s3cret-of-the-watch",
        tokens={"github": "ghp_token1", "gitlab": "glpat-token2", "gitea": "gitea-token3"},
    )
    yield server
    server.close()
