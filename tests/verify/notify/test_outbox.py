"""The outbox, on SQLite and PostgreSQL: what a verdict queues, its delivery to real servers on
loopback, retries with back-off while a server is down or failing, and what is never lost or
sent twice. Time moves through the outbox's clock, never by sleeping."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from stratuslab.db.session import session_scope
from stratuslab.db.verify_models import NotificationRecord, WatchRecord
from stratuslab.errors import Invalid, TooLarge
from stratuslab.verify import notify
from stratuslab.verify.notify.mail import SmtpSettings
from stratuslab.verify.notify.outbox import Outbox, backoff, mail_wanted, targets
from stratuslab.verify.values import Outcome, Verdict
from tests.api.stores import database
from tests.verify.notify.servers import Mailbox, Receiver, free_port, smtp_server

Make = Callable[..., Outcome]
SECRET = "s3cret-of-the-watch"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(request.param, tmp_path) as url:
        yield url


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def add_watch(
    engine: Engine,
    *,
    notify_list: list[str],
    forge: dict[str, Any] | None = None,
    every_failure: bool = False,
) -> str:
    watch_id = uuid.uuid4().hex
    with session_scope(engine) as session:
        session.add(
            WatchRecord(
                id=watch_id,
                owner="alice",
                name="webapp",
                repository="https://git.example.org/alice/webapp.git",
                module="apps/webapp",
                branches=["main"],
                every_s=60,
                params={},
                notify=notify_list,
                keep_running="never",
                secret=SECRET,
                mail_every_failure=every_failure,
                forge=forge,
                deploy_key=None,
                polled_at=None,
                poll_error=None,
            )
        )
    return watch_id


def queue(outbox: Outbox, engine: Engine, watch_id: str, outcome: Outcome) -> int:
    with session_scope(engine) as session:
        watch = session.get(WatchRecord, watch_id)
        assert watch is not None
        return outbox.queue_outcome(session, watch, outcome, 7)


def rows(engine: Engine) -> list[NotificationRecord]:
    with session_scope(engine) as session:
        return list(session.scalars(select(NotificationRecord).order_by(NotificationRecord.id)))


def github(receiver: Receiver, token: str = "ghp_token1") -> dict[str, Any]:
    return {"kind": "github", "api": receiver.url, "repo": "alice/webapp", "token": token}


@pytest.mark.parametrize(
    ("verdict", "previous", "every_failure", "mailed"),
    [
        (Verdict.FAILED, Verdict.PASSED, False, True),  # turned red
        (Verdict.PASSED, Verdict.FAILED, False, True),  # turned green
        (Verdict.INVALID, Verdict.PASSED, False, True),
        (Verdict.PASSED, Verdict.PASSED, False, False),
        (Verdict.FAILED, Verdict.FAILED, False, False),  # still red: no news
        (Verdict.FAILED, Verdict.FAILED, True, True),  # unless every failure is asked for
        (Verdict.FAILED, None, False, True),  # the first verdict is bad
        (Verdict.PASSED, None, False, False),
        (Verdict.ERROR, Verdict.PASSED, True, False),  # not the commit's fault
        (Verdict.CANCELLED, Verdict.FAILED, False, False),
    ],
)
def test_when_mail_is_sent(
    outcome: Make, verdict: Verdict, previous: Verdict | None, every_failure: bool, mailed: bool
) -> None:
    watch = WatchRecord(mail_every_failure=every_failure)

    assert mail_wanted(watch, outcome(verdict=verdict, previous=previous)) is mailed


def test_targets_are_split_and_checked() -> None:
    assert targets(["mailto:a@example.org", "https://chat/h", "mailto:a@example.org"]) == (
        ["a@example.org"],
        ["https://chat/h"],
    )
    with pytest.raises(Invalid, match="neither mailto"):
        targets(["ftp://x"])
    with pytest.raises(Invalid, match="not a mail address"):
        targets(["mailto:a@b.c\r\nBcc: x@y.z"])


def test_backoff_doubles_to_an_hour() -> None:
    assert [backoff(n).total_seconds() for n in (1, 2, 3, 4, 7, 8, 50)] == [
        30,
        60,
        120,
        240,
        1920,
        3600,
        3600,
    ]


def test_a_verdict_reaches_every_channel(
    engine: Engine,
    outcome: Make,
    smtp_settings: SmtpSettings,
    mailbox: Mailbox,
    receiver: Receiver,
    clock: Clock,
) -> None:
    watch_id = add_watch(
        engine,
        notify_list=[
            "mailto:team@example.org",
            "mailto:ops@example.org",
            f"{receiver.url}/hook/chat",
        ],
        forge=github(receiver),
    )
    outbox = Outbox(engine, smtp_settings, now=clock)

    assert queue(outbox, engine, watch_id, outcome()) == 4
    assert all("ghp_token1" not in json.dumps(r.payload) + r.target for r in rows(engine))
    assert outbox.deliver_due() == 4

    assert sorted(d.recipients[0] for d in mailbox.delivered) == [
        "ops@example.org",
        "team@example.org",
    ]
    assert all(len(d.recipients) == 1 for d in mailbox.delivered)
    hook, status = sorted(receiver.seen, key=lambda s: s.path)
    assert (hook.path, hook.answered, hook.complaint) == ("/hook/chat", 200, "")
    assert hook.json()["stratus"]["verdict"] == "failed"
    assert status.answered == 201 and status.json()["state"] == "failure"
    assert status.json()["target_url"] == "http://127.0.0.1:8421/runs/0b6c7d1e"
    assert status.json()["context"] == "stratus/webapp"
    assert [(r.state, r.sent_at) for r in rows(engine)] == [("sent", T0)] * 4
    assert outbox.deliver_due() == 0 and len(receiver.seen) == 2


def test_a_still_passing_branch_only_calls_the_webhook(
    engine: Engine, outcome: Make, smtp_settings: SmtpSettings, receiver: Receiver, clock: Clock
) -> None:
    watch_id = add_watch(engine, notify_list=["mailto:team@example.org", f"{receiver.url}/hook"])
    outbox = Outbox(engine, smtp_settings, now=clock)

    queued = queue(outbox, engine, watch_id, outcome(verdict=Verdict.PASSED, broken_by=None))

    assert queued == 1 and [r.channel for r in rows(engine)] == ["webhook"]


def test_an_unreachable_smtp_server_delays_the_mail_and_loses_nothing(
    engine: Engine, outcome: Make, clock: Clock
) -> None:
    port = free_port()
    settings = SmtpSettings("127.0.0.1", port, False, "", "", "stratus@ci.example.org", 3)
    watch_id = add_watch(engine, notify_list=["mailto:team@example.org"])
    outbox = Outbox(engine, settings, now=clock)
    queue(outbox, engine, watch_id, outcome())

    assert outbox.deliver_due() == 0
    [row] = rows(engine)
    assert (row.state, row.attempts) == ("pending", 1)
    assert f"cannot reach the SMTP server 127.0.0.1:{port}" in (row.last_error or "")
    assert row.next_at == T0 + timedelta(seconds=30)

    box = Mailbox()
    server = smtp_server(box, port=port)
    try:
        clock.advance(seconds=29)
        assert outbox.deliver_due() == 0 and box.delivered == []  # not due yet
        clock.advance(seconds=2)
        assert outbox.deliver_due() == 1
    finally:
        server.stop()
    [got] = box.delivered
    assert got.message["Subject"] == outcome().headline()
    [row] = rows(engine)
    assert (row.state, row.attempts, row.sent_at) == ("sent", 1, T0 + timedelta(seconds=31))


def test_one_unreachable_try_is_enough_for_the_call(
    engine: Engine, outcome: Make, receiver: Receiver, clock: Clock
) -> None:
    """Once the SMTP server cannot be reached, the other mail waits for the next call rather
    than each waiting out the same timeout; webhooks still go."""
    settings = SmtpSettings("127.0.0.1", free_port(), False, "", "", "s@example.org", 3)
    watch_id = add_watch(
        engine,
        notify_list=["mailto:a@example.org", "mailto:b@example.org", f"{receiver.url}/hook"],
    )
    outbox = Outbox(engine, settings, now=clock)
    queue(outbox, engine, watch_id, outcome())

    assert outbox.deliver_due() == 1
    assert [(r.channel, r.state, r.attempts) for r in rows(engine)] == [
        ("mail", "pending", 1),
        ("mail", "pending", 0),
        ("webhook", "sent", 0),
    ]


def test_a_refusing_smtp_server_is_retried(
    engine: Engine, outcome: Make, smtp_settings: SmtpSettings, mailbox: Mailbox, clock: Clock
) -> None:
    mailbox.refuse = "451 4.3.0 try again later"
    watch_id = add_watch(engine, notify_list=["mailto:team@example.org"])
    outbox = Outbox(engine, smtp_settings, now=clock)
    queue(outbox, engine, watch_id, outcome())

    assert outbox.deliver_due() == 0
    assert "answered 451 4.3.0 try again later" in (rows(engine)[0].last_error or "")
    mailbox.refuse = None
    clock.advance(seconds=30)
    assert outbox.deliver_due() == 1 and len(mailbox.delivered) == 1


def test_a_failing_receiver_backs_off_then_fails_for_good_and_stays_visible(
    engine: Engine, outcome: Make, smtp_settings: SmtpSettings, receiver: Receiver, clock: Clock
) -> None:
    watch_id = add_watch(engine, notify_list=[f"{receiver.url}/hook"])
    outbox = Outbox(engine, smtp_settings, now=clock)
    queue(outbox, engine, watch_id, outcome())

    waits = []
    for _ in range(4):
        receiver.script.append((500, b"database is down", {}))
        assert outbox.deliver_due() == 0
        [row] = rows(engine)
        waits.append((row.next_at - clock.now).total_seconds())
        clock.now = row.next_at
    assert waits == [30, 60, 120, 240]
    assert "answered 500: database is down" in (row.last_error or "")

    clock.now = T0 + timedelta(hours=72)
    receiver.script.append((500, b"still down", {}))
    assert outbox.deliver_due() == 0
    [row] = rows(engine)
    assert (row.state, row.attempts) == ("failed", 5)
    [shown] = outbox.pending(watch_id)
    assert shown["state"] == "failed" and "still down" in shown["last_error"]
    clock.advance(days=1)
    assert outbox.deliver_due() == 0 and len(receiver.seen) == 5


def test_a_receiver_that_recovers_gets_the_document(
    engine: Engine, outcome: Make, smtp_settings: SmtpSettings, receiver: Receiver, clock: Clock
) -> None:
    watch_id = add_watch(engine, notify_list=[f"{receiver.url}/hook"])
    outbox = Outbox(engine, smtp_settings, now=clock)
    queue(outbox, engine, watch_id, outcome())
    receiver.script.append((500, b"oops", {}))

    assert outbox.deliver_due() == 0
    assert outbox.pending(watch_id)[0]["attempts"] == 1
    clock.advance(seconds=30)
    assert outbox.deliver_due() == 1
    assert receiver.seen[-1].answered == 200 and receiver.seen[-1].complaint == ""
    assert outbox.pending(watch_id) == []


def test_a_removed_watch_sends_its_mail_but_not_its_webhooks(
    engine: Engine,
    outcome: Make,
    smtp_settings: SmtpSettings,
    mailbox: Mailbox,
    receiver: Receiver,
    clock: Clock,
) -> None:
    watch_id = add_watch(
        engine,
        notify_list=["mailto:team@example.org", f"{receiver.url}/hook"],
        forge=github(receiver),
    )
    outbox = Outbox(engine, smtp_settings, now=clock)
    queue(outbox, engine, watch_id, outcome())
    with session_scope(engine) as session:
        watch = session.get(WatchRecord, watch_id)
        assert watch is not None
        watch.removed = True

    assert outbox.deliver_due() == 1
    assert len(mailbox.delivered) == 1 and receiver.seen == []
    assert [(r.channel, r.state, r.last_error) for r in rows(engine)] == [
        ("mail", "sent", None),
        ("webhook", "failed", "watch removed"),
        ("status", "failed", "watch removed"),
    ]


def test_a_status_is_never_sent_to_a_forge_the_watch_no_longer_names(
    engine: Engine, outcome: Make, smtp_settings: SmtpSettings, receiver: Receiver, clock: Clock
) -> None:
    watch_id = add_watch(engine, notify_list=[], forge=github(receiver))
    outbox = Outbox(engine, smtp_settings, now=clock)
    queue(outbox, engine, watch_id, outcome())
    with session_scope(engine) as session:
        watch = session.get(WatchRecord, watch_id)
        assert watch is not None
        watch.forge = {**github(receiver), "api": "https://elsewhere.example.org"}

    assert outbox.deliver_due() == 0
    assert receiver.seen == [] and "forge changed" in (rows(engine)[0].last_error or "")


def test_pending_then_final_commit_status(
    engine: Engine, outcome: Make, smtp_settings: SmtpSettings, receiver: Receiver, clock: Clock
) -> None:
    watch_id = add_watch(engine, notify_list=[], forge=github(receiver))
    outbox = Outbox(engine, smtp_settings, now=clock)
    passed = outcome(verdict=Verdict.PASSED, broken_by=None, reason=None, node=None)
    with session_scope(engine) as session:
        watch = session.get(WatchRecord, watch_id)
        assert watch is not None
        outbox.queue_status(
            session,
            watch,
            passed.commit.sha,
            "pending",
            target_url=passed.run_url,
            description="Deploying and testing",
        )
    outbox.deliver_due()
    queue(outbox, engine, watch_id, passed)
    outbox.deliver_due()

    assert [(s.answered, s.json()["state"]) for s in receiver.seen] == [
        (201, "pending"),
        (201, "success"),
    ]
    assert receiver.seen[1].json()["description"].startswith("Passed: deployed, configured")


def test_no_forge_no_status(engine: Engine, smtp_settings: SmtpSettings, clock: Clock) -> None:
    watch_id = add_watch(engine, notify_list=[])
    outbox = Outbox(engine, smtp_settings, now=clock)
    with session_scope(engine) as session:
        watch = session.get(WatchRecord, watch_id)
        assert watch is not None
        outbox.queue_status(session, watch, "a" * 40, "pending", target_url=None, description="")

    assert rows(engine) == []


def test_mail_waits_while_no_smtp_server_is_configured(
    engine: Engine, outcome: Make, receiver: Receiver, clock: Clock
) -> None:
    watch_id = add_watch(engine, notify_list=["mailto:team@example.org", f"{receiver.url}/hook"])
    outbox = Outbox(engine, SmtpSettings("", 25, False, "", "", "s@example.org"), now=clock)
    queue(outbox, engine, watch_id, outcome())

    assert outbox.deliver_due() == 1  # the webhook
    [waiting] = outbox.pending(watch_id)
    assert (waiting["channel"], waiting["attempts"], waiting["last_error"]) == ("mail", 0, None)
    assert "no SMTP server is configured" in waiting["note"]


def test_an_oversized_notification_is_refused_and_nothing_is_queued(
    engine: Engine,
    outcome: Make,
    smtp_settings: SmtpSettings,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    watch_id = add_watch(engine, notify_list=["mailto:team@example.org", "https://chat/hook"])
    outbox = Outbox(engine, smtp_settings, now=clock)
    monkeypatch.setattr(notify, "MAX_PAYLOAD_BYTES", 3000)

    with pytest.raises(TooLarge, match="over the bound of 3000 bytes"):
        queue(outbox, engine, watch_id, outcome(reason="r" * 3000))

    assert rows(engine) == []


def test_two_servers_never_send_the_same_notification(
    engine: Engine, outcome: Make, smtp_settings: SmtpSettings, receiver: Receiver, clock: Clock
) -> None:
    urls = [f"{receiver.url}/hook/{i}" for i in range(24)]
    watch_id = add_watch(engine, notify_list=urls)
    first, second = (
        Outbox(engine, smtp_settings, now=clock),
        Outbox(engine, smtp_settings, now=clock),
    )
    queue(first, engine, watch_id, outcome())
    receiver.delay_s = 0.01
    sent: list[int] = []

    def deliver(outbox: Outbox) -> None:
        sent.append(outbox.deliver_due())

    threads = [threading.Thread(target=deliver, args=(o,)) for o in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sum(sent) == 24
    assert sorted(s.path for s in receiver.seen) == sorted(f"/hook/{i}" for i in range(24))
    assert all(r.state == "sent" for r in rows(engine))
