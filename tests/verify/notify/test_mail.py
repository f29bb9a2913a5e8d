"""Mail: what a person reads, and its delivery over a real SMTP server on loopback (plain, and
STARTTLS with AUTH), including the servers that refuse or are not there."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from email import message_from_string, policy
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from stratuslab.config import load
from stratuslab.errors import BackendError, BackendUnavailable, Invalid
from stratuslab.verify.notify.mail import SmtpSettings, compose, send
from stratuslab.verify.values import Outcome, Verdict
from tests.support import environment
from tests.verify.notify.conftest import BAD
from tests.verify.notify.servers import Certs, Mailbox, free_port, smtp_server

Make = Callable[..., Outcome]


def test_a_failure_tells_what_broke_where_and_who(outcome: Make) -> None:
    message = compose(outcome(), to=["team@example.org"], sender="stratus@ci.example.org")

    assert message["Subject"] == outcome().headline()
    assert "FAILED main c0ffee0" in message["Subject"]
    assert message["To"] == "team@example.org"
    assert message["From"] == "stratus@ci.example.org"
    assert message["Message-ID"].endswith("@ci.example.org>")
    assert parsedate_to_datetime(message["Date"]).tzinfo is not None
    assert message["Auto-Submitted"] == "auto-generated"
    text = message.get_content()
    assert "Broken: commit c0ffee0 on branch main of webapp failed" in text
    assert "c0ffee0" + "2" * 33 in text  # the full sha
    assert "Bob <bob@example.org>" in text
    assert "tune the web tier" in text
    assert "test.1: curl http://web/ answered 500" in text  # the abort reason
    assert "Node:       test.1" in text
    assert "Broken by 3f2a9c1 (Alice: 'switch db driver'), last good 8e01d44." in text
    assert "Before:     passed" in text
    assert "Duration:   4 min 12 s" in text
    assert "Run:        http://127.0.0.1:8421/runs/0b6c7d1e" in text
    assert "Report:     http://127.0.0.1:8421/runs/0b6c7d1e/reports/test.1" in text
    assert "Watch:      http://127.0.0.1:8421/watches/webapp" in text


def test_a_fix_says_the_branch_is_green_again(outcome: Make) -> None:
    fixed = outcome(
        verdict=Verdict.PASSED, previous=Verdict.FAILED, reason=None, node=None, broken_by=None
    )
    message = compose(fixed, to=["team@example.org"], sender="stratus@ci.example.org")

    assert "PASSED main c0ffee0" in message["Subject"]
    text = message.get_content()
    assert text.startswith("Fixed: commit c0ffee0 on branch main of webapp deployed")
    assert "Before:     failed" in text
    assert "Broken by" not in text and "Abort reason" not in text


def test_the_first_verdict_says_there_was_none_before(outcome: Make) -> None:
    text = compose(
        outcome(previous=None, broken_by=None), to=["a@example.org"], sender="s@example.org"
    ).get_content()

    assert "Before:     none (the first verdict)" in text


def test_user_text_cannot_add_headers(outcome: Make) -> None:
    """Watch, branch, author and subject come from people and repositories: a line break in
    any of them must not start a header of its own."""
    evil = replace(
        BAD,
        author="Mallory\r\nBcc: victim@example.org",
        subject="innocent\nX-Injected: yes\r\n\r\nbody",
    )
    message = compose(
        outcome(commit=evil, watch="web\r\nBcc: a@example.org", branch="main\nX-B: 1"),
        to=["team@example.org"],
        sender="stratus@ci.example.org",
    )

    wire = message.as_string()
    parsed = message_from_string(wire, policy=policy.default)
    assert parsed["Bcc"] is None and parsed["X-Injected"] is None and parsed["X-B"] is None
    assert "\n" not in parsed["Subject"] and "innocent X-Injected: yes" in parsed["Subject"]
    assert "Bcc: victim" not in wire.split("\n\n", 1)[0]


@pytest.mark.parametrize(
    "bad",
    ["team@example.org\r\nBcc: victim@example.org", "Team <team@example.org>", "nobody", "a@", ""],
)
def test_an_address_that_is_not_plain_is_refused(outcome: Make, bad: str) -> None:
    with pytest.raises(Invalid, match="not a mail address"):
        compose(outcome(), to=[bad], sender="stratus@ci.example.org")


def test_the_sender_may_have_a_name(outcome: Make) -> None:
    message = compose(outcome(), to=["a@example.org"], sender="StratusLab CI <ci@example.org>")

    assert message["From"] == "StratusLab CI <ci@example.org>"
    assert message["Message-ID"].endswith("@example.org>")
    with pytest.raises(Invalid, match="not a mail address"):
        compose(outcome(), to=["a@example.org"], sender="StratusLab CI")


def test_settings_come_from_the_site_configuration(tmp_path: Path) -> None:
    settings = load(
        environment(
            tmp_path,
            STRATUS_SMTP_HOST="mail.example.org",
            STRATUS_SMTP_PORT="587",
            STRATUS_SMTP_STARTTLS="true",
            STRATUS_SMTP_USER="ci",
            STRATUS_SMTP_PASSWORD="hunter2",
            STRATUS_SMTP_FROM="ci@example.org",
        )
    )
    smtp = SmtpSettings.from_settings(settings)

    assert (smtp.host, smtp.port, smtp.starttls, smtp.user, smtp.sender) == (
        "mail.example.org",
        587,
        True,
        "ci",
        "ci@example.org",
    )
    assert smtp.password == "hunter2" and "hunter2" not in repr(smtp)


def test_a_mail_arrives_as_composed(
    outcome: Make, smtp_settings: SmtpSettings, mailbox: Mailbox
) -> None:
    message = compose(outcome(), to=["team@example.org"], sender=smtp_settings.sender)

    send(smtp_settings, message)

    [got] = mailbox.delivered
    assert got.sender == "stratus@ci.example.org" and got.recipients == ["team@example.org"]
    assert got.message["Subject"] == outcome().headline()
    assert got.message["Message-ID"] == message["Message-ID"]
    assert "Broken by 3f2a9c1 (Alice: 'switch db driver')" in got.message.get_content()


def test_starttls_and_login(outcome: Make, certs: Certs, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server insists on STARTTLS and AUTH; the client checks its certificate against the
    CA the site trusts (SSL_CERT_FILE), then logs in."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certs.ca))
    box = Mailbox()
    server = smtp_server(box, certs=certs, login=("ci", "correct horse"))
    try:
        settings = SmtpSettings(
            "127.0.0.1", server.port, True, "ci", "correct horse", "s@ci.org", timeout_s=5
        )
        send(settings, compose(outcome(), to=["team@example.org"], sender="s@ci.org"))
        [got] = box.delivered
        assert got.tls and got.authenticated_as == "ci"

        wrong = replace(settings, password="wrong")
        with pytest.raises(BackendError, match=rf"127\.0\.0\.1:{server.port} answered 535"):
            send(wrong, compose(outcome(), to=["team@example.org"], sender="s@ci.org"))

        plain = replace(settings, starttls=False)
        with pytest.raises(BackendError, match=rf"127\.0\.0\.1:{server.port}"):
            send(plain, compose(outcome(), to=["team@example.org"], sender="s@ci.org"))
        assert len(box.delivered) == 1
    finally:
        server.stop()


def test_a_certificate_the_site_does_not_trust_is_refused(
    outcome: Make, certs: Certs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.verify.notify.servers import make_certs

    (tmp_path / "other").mkdir()
    other = make_certs(tmp_path / "other")
    monkeypatch.setenv("SSL_CERT_FILE", str(other.ca))
    box = Mailbox()
    server = smtp_server(box, certs=certs)
    try:
        settings = SmtpSettings("127.0.0.1", server.port, True, "", "", "s@ci.org", timeout_s=5)
        with pytest.raises(BackendError, match=r"TLS with the SMTP server .* failed"):
            send(settings, compose(outcome(), to=["team@example.org"], sender="s@ci.org"))
        assert box.delivered == []
    finally:
        server.stop()


def test_a_refusal_says_what_the_server_said(
    outcome: Make, smtp_settings: SmtpSettings, mailbox: Mailbox
) -> None:
    mailbox.refuse = "554 5.7.1 message rejected as spam"

    with pytest.raises(BackendError) as caught:
        send(smtp_settings, compose(outcome(), to=["team@example.org"], sender="s@ci.org"))

    assert not isinstance(caught.value, BackendUnavailable)
    assert str(caught.value) == (
        f"the SMTP server 127.0.0.1:{smtp_settings.port} answered 554 "
        "5.7.1 message rejected as spam"
    )


def test_no_server_listening(outcome: Make) -> None:
    port = free_port()
    settings = SmtpSettings("127.0.0.1", port, False, "", "", "s@ci.org", timeout_s=2)

    with pytest.raises(
        BackendUnavailable, match=rf"cannot reach the SMTP server 127\.0\.0\.1:{port}"
    ):
        send(settings, compose(outcome(), to=["team@example.org"], sender="s@ci.org"))


def test_no_server_configured(outcome: Make) -> None:
    settings = SmtpSettings("", 25, False, "", "", "s@ci.org")

    with pytest.raises(BackendUnavailable, match="no SMTP server is configured"):
        send(settings, compose(outcome(), to=["team@example.org"], sender="s@ci.org"))
