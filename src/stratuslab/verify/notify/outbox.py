"""The outbox: every notification is a row in the store before anything is sent, so that an
unreachable SMTP server or receiver delays it and loses nothing.

Rows are queued in the caller's transaction (the one that records the verdict), then delivered
by :meth:`Outbox.deliver_due`, one at a time: a short transaction claims the oldest due row (on
PostgreSQL ``FOR UPDATE SKIP LOCKED``, so that two servers never claim the same one; on SQLite
the write lock does the same) by moving its ``next_at`` a lease ahead, the message is sent outside
any transaction, and a second transaction records the result. A failure is retried after 30 s,
then 60 s, 120 s, ... at most an hour apart; a row still failing 72 h after it was queued is
marked ``failed`` and kept, for people to see. A row stays as long as the verification it
tells of (the watch's history is bounded: ``schedule.py``), and goes with its watch.

A row carries what is needed to send it, except credentials: a webhook is signed, and a commit
status authenticated, with the watch's secret and forge token as they are at delivery, so the
outbox holds no secret and a removed watch's pending webhooks and statuses go nowhere ("watch
removed"). Mail needs no watch: it is composed when queued (one message per address, so that
the same Message-ID is sent on every retry and one bad address delays no one else).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email import message_from_string, policy
from email.message import EmailMessage
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from stratuslab.db.models import utcnow
from stratuslab.db.session import reading, session_scope
from stratuslab.db.verify_models import NotificationRecord, WatchRecord
from stratuslab.errors import BackendUnavailable, Invalid, StratusError, TooLarge
from stratuslab.verify import notify
from stratuslab.verify.notify import mail, status, webhook
from stratuslab.verify.notify.mail import SmtpSettings
from stratuslab.verify.notify.status import check_forge, status_url
from stratuslab.verify.values import Outcome

log = logging.getLogger(__name__)

FIRST_RETRY = timedelta(seconds=30)
LAST_RETRY = timedelta(hours=1)  # back-off doubles up to this
GIVE_UP = timedelta(hours=72)  # after this long failing, a row is "failed"
LEASE = timedelta(minutes=15)  # a claimed row is due again after this if its sender died
MAX_ERROR_CHARS = 2000
MAX_SHOWN = 200  # rows pending() returns

Now = Callable[[], datetime]


@dataclass
class _Job:
    """A claimed row, with what its sending needs from the watch."""

    id: int
    channel: str
    target: str
    payload: dict[str, Any]
    secret: str = ""  # a webhook's signing key
    forge: dict[str, Any] | None = None  # a commit status's forge, token included


class Outbox:
    """Queues notifications with a verdict and delivers them, retrying until they go."""

    def __init__(
        self,
        engine: Engine,
        smtp: SmtpSettings,
        *,
        client_factory: Callable[[], httpx.Client] = httpx.Client,
        now: Now = utcnow,
    ) -> None:
        self._engine = engine
        self._smtp = smtp
        self._client_factory = client_factory
        self._now = now

    # Queueing, in the caller's transaction.

    def queue_outcome(
        self, session: Session, watch: WatchRecord, outcome: Outcome, verification_id: int
    ) -> int:
        """Queue what ``outcome`` calls for; returns the number of rows queued.

        Mail to every ``mailto:`` target when the branch changed colour, when the watch asks
        for every failure and this is one, or when the branch's first verdict is bad; a webhook
        to every URL target, for every verdict; the final commit status when the watch has a
        forge. Nothing is queued unless everything fits (:class:`TooLarge`)."""
        addresses, urls = targets(watch.notify)
        rows: list[tuple[str, str, dict[str, Any]]] = []
        if addresses and mail_wanted(watch, outcome):
            for address in addresses:
                message = mail.compose(outcome, to=[address], sender=self._smtp.sender)
                rows.append(("mail", address, {"message": message.as_string()}))
        if urls:
            document = webhook.document(outcome)
            rows += [("webhook", url, {"document": document}) for url in urls]
        if watch.forge:
            rows.append(
                self._status_row(
                    watch,
                    outcome.commit.sha,
                    status.FINAL_STATE[outcome.verdict],
                    target_url=outcome.run_url or outcome.links.get("watch"),
                    description=status.describe(outcome),
                )
            )
        for row in rows:
            _check_size(*row)
        for channel, target, payload in rows:
            self._add(session, watch.id, verification_id, channel, target, payload)
        return len(rows)

    def queue_status(
        self,
        session: Session,
        watch: WatchRecord,
        sha: str,
        state: str,
        *,
        target_url: str | None,
        description: str,
    ) -> None:
        """Queue a commit status (``pending`` when a run starts); nothing without a forge."""
        if not watch.forge:
            return
        row = self._status_row(watch, sha, state, target_url=target_url, description=description)
        _check_size(*row)
        self._add(session, watch.id, None, *row)

    # Delivering.

    def deliver_due(self, limit: int = 50) -> int:
        """Send up to ``limit`` due rows; returns how many were sent. Mail waits, untouched,
        while no SMTP server is configured, and for the rest of the call once the server could
        not be reached (each further try would wait out the same timeout)."""
        if not 1 <= limit <= 1000:
            raise Invalid("deliver_due: limit between 1 and 1000")
        sent = 0
        skip_mail = not self._smtp.host
        client: httpx.Client | None = None
        try:
            for _ in range(limit):
                job = self._claim(skip_mail=skip_mail)
                if job is None:
                    break
                if job.channel != "mail" and client is None:
                    client = self._client_factory()
                failure = self._send(job, client)
                self._settle(job.id, failure)
                if failure is None:
                    sent += 1
                elif job.channel == "mail" and isinstance(failure, BackendUnavailable):
                    skip_mail = True
        finally:
            if client is not None:
                client.close()
        return sent

    def pending(self, watch_id: str) -> list[dict[str, Any]]:
        """The watch's notifications not yet sent (pending, then failed for good), newest first,
        for people to read."""
        table = NotificationRecord.__table__
        query = (
            select(table)
            .where(table.c.watch_id == watch_id, table.c.state.in_(("pending", "failed")))
            .order_by(table.c.id.desc())
            .limit(MAX_SHOWN)
        )
        with reading(self._engine) as conn:
            rows = conn.execute(query).mappings().all()
        shown = []
        for row in rows:
            note = None
            if row["channel"] == "mail" and row["state"] == "pending" and not self._smtp.host:
                note = "waiting: no SMTP server is configured (smtp_host)"
            shown.append(
                {
                    "id": row["id"],
                    "channel": row["channel"],
                    "target": row["target"],
                    "state": row["state"],
                    "attempts": row["attempts"],
                    "next_at": row["next_at"].isoformat(),
                    "last_error": row["last_error"],
                    "created_at": row["created_at"].isoformat(),
                    "verification_id": row["verification_id"],
                    "note": note,
                }
            )
        return shown

    # Private helpers.

    def _status_row(
        self,
        watch: WatchRecord,
        sha: str,
        state: str,
        *,
        target_url: str | None,
        description: str,
    ) -> tuple[str, str, dict[str, Any]]:
        forge = check_forge(watch.forge)
        context = f"stratus/{watch.name}"
        # Validates the request as the forge will get it; the token is left out of the row.
        status.request_for(
            forge, sha, state, target_url=target_url, description=description, context=context
        )
        payload = {
            "kind": forge["kind"],
            "api": forge["api"],
            "repo": forge["repo"],
            "sha": sha,
            "state": state,
            "target_url": target_url,
            "description": description,
            "context": context,
        }
        return "status", status_url(forge, sha), payload

    def _add(
        self,
        session: Session,
        watch_id: str,
        verification_id: int | None,
        channel: str,
        target: str,
        payload: dict[str, Any],
    ) -> None:
        now = self._now()
        session.add(
            NotificationRecord(
                watch_id=watch_id,
                verification_id=verification_id,
                channel=channel,
                target=target,
                payload=payload,
                state="pending",
                attempts=0,
                next_at=now,
                created_at=now,
            )
        )

    def _claim(self, *, skip_mail: bool) -> _Job | None:
        """Take the oldest due row and lease it; a row that can no longer be sent (its watch is
        gone) is marked failed on the way, and the next one taken."""
        while True:
            with session_scope(self._engine) as session:
                now = self._now()
                query = select(NotificationRecord).where(
                    NotificationRecord.state == "pending", NotificationRecord.next_at <= now
                )
                if skip_mail:
                    query = query.where(NotificationRecord.channel != "mail")
                query = (
                    query.order_by(NotificationRecord.next_at, NotificationRecord.id)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                )
                row = session.scalars(query).first()
                if row is None:
                    return None
                job = _Job(row.id, row.channel, row.target, dict(row.payload))
                dropped = self._with_watch(session, row, job)
                if dropped is None:
                    row.next_at = now + LEASE
                    return job
                row.state = "failed"
                row.last_error = dropped

    def _with_watch(self, session: Session, row: NotificationRecord, job: _Job) -> str | None:
        """Complete ``job`` with the watch's credentials; why it cannot be sent, if so."""
        if row.channel == "mail":
            return None
        watch = session.get(WatchRecord, row.watch_id) if row.watch_id else None
        if watch is None or watch.removed:
            return "watch removed"
        if row.channel == "webhook":
            job.secret = watch.secret
            return None
        try:
            forge = check_forge(watch.forge)
        except Invalid:
            return "the watch no longer has a usable forge"
        if any(forge[k] != job.payload.get(k) for k in ("kind", "api", "repo")):
            # Never send the current token to a forge the watch no longer names.
            return "the watch's forge changed since this status was queued"
        job.forge = forge
        return None

    def _send(self, job: _Job, client: httpx.Client | None) -> Exception | None:
        """Send ``job``; what went wrong, if anything."""
        try:
            if job.channel == "mail":
                message = message_from_string(job.payload["message"], policy=policy.default)
                assert isinstance(message, EmailMessage)
                mail.send(self._smtp, message)
            elif job.channel == "webhook":
                assert client is not None
                body = json.dumps(job.payload["document"], separators=(",", ":")).encode()
                webhook.post(job.target, body, webhook.sign(job.secret, body), client=client)
            else:
                assert client is not None and job.forge is not None
                p = job.payload
                status.post_status(
                    job.forge,
                    p["sha"],
                    p["state"],
                    target_url=p["target_url"],
                    description=p["description"],
                    context=p["context"],
                    client=client,
                )
        except StratusError as exc:
            return exc
        except Exception as exc:  # a bug: kept on the row and logged, the others still go
            log.exception("notification %s could not be sent", job.id)
            return exc
        return None

    def _settle(self, row_id: int, failure: Exception | None) -> None:
        with session_scope(self._engine) as session:
            row = session.get(NotificationRecord, row_id, with_for_update=True)
            if row is None:
                return
            now = self._now()
            if failure is None:
                row.state = "sent"
                row.sent_at = now
                return
            row.attempts += 1
            said = (
                str(failure)
                if isinstance(failure, StratusError)
                else f"internal error: {type(failure).__name__}: {failure}"
            )
            row.last_error = said[:MAX_ERROR_CHARS]
            if now - row.created_at >= GIVE_UP:
                row.state = "failed"
            else:
                row.next_at = now + backoff(row.attempts)


def backoff(attempts: int) -> timedelta:
    """How long to wait after the ``attempts``-th failure: 30 s, doubling, at most 1 h."""
    doublings: int = min(max(attempts - 1, 0), 20)
    return min(FIRST_RETRY * (1 << doublings), LAST_RETRY)


def mail_wanted(watch: WatchRecord, outcome: Outcome) -> bool:
    """Whether ``outcome`` is worth a mail: a change of colour, every failure if the watch asks,
    or a branch whose first verdict is bad."""
    if outcome.changed:
        return True
    return outcome.verdict.bad and (watch.mail_every_failure or outcome.previous is None)


def targets(notify_list: list[str]) -> tuple[list[str], list[str]]:
    """A watch's ``notify`` split into mail addresses and webhook URLs (each once, in order);
    :class:`Invalid` for anything else."""
    addresses: list[str] = []
    urls: list[str] = []
    for target in notify_list:
        if target.startswith("mailto:"):
            address = mail.address(target.removeprefix("mailto:"))
            if address not in addresses:
                addresses.append(address)
        elif target.startswith(("http://", "https://")):
            if len(target) > notify.MAX_URL_CHARS or notify.one_line(target, 10**4) != target:
                raise Invalid(f"notify: {notify.one_line(target, 80)!r} is not a usable URL")
            if target not in urls:
                urls.append(target)
        else:
            raise Invalid(
                f"notify: {notify.one_line(target, 80)!r} is neither mailto:ADDRESS nor a URL"
            )
    return addresses, urls


def _check_size(channel: str, target: str, payload: dict[str, Any]) -> None:
    size = len(json.dumps(payload).encode()) + len(target.encode())
    if size > notify.MAX_PAYLOAD_BYTES:
        raise TooLarge(
            f"a {channel} notification of {size} bytes is over the bound of "
            f"{notify.MAX_PAYLOAD_BYTES} bytes"
        )
