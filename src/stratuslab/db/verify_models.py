"""The store's records of continuous verification: watches, their branches, the verification
of each commit, and the outbox of notifications (``verify/``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from stratuslab.db.models import Base, utcnow


class WatchRecord(Base):
    """A repository the server verifies on its owner's behalf."""

    __tablename__ = "watches"
    __table_args__ = (UniqueConstraint("owner", "name", name="uq_watches_owner_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # uuid4 hex
    owner: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    repository: Mapped[str] = mapped_column(Text)  # any URL git fetches
    module: Mapped[str] = mapped_column(String(255))  # the application's path in the repository
    branches: Mapped[list[str]] = mapped_column(default=list)
    every_s: Mapped[int]
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)  # "web:port" -> "81"
    notify: Mapped[list[str]] = mapped_column(default=list)  # mailto:..., https://...
    keep_running: Mapped[str] = mapped_column(String(16), default="never")
    secret: Mapped[str] = mapped_column(String(64))  # hooks' HMAC key, webhooks' signature key
    mail_every_failure: Mapped[bool] = mapped_column(default=False)
    forge: Mapped[dict[str, Any] | None]  # {"kind": "github", "api": URL, "repo": .., "token": ..}
    deploy_key: Mapped[str | None] = mapped_column(Text)  # an ssh private key, for ssh URLs
    paused: Mapped[bool] = mapped_column(default=False)
    removed: Mapped[bool] = mapped_column(default=False)  # gone once its run has ended
    wake: Mapped[bool] = mapped_column(default=False)  # a push was announced: poll at once
    polled_at: Mapped[datetime | None]
    poll_error: Mapped[str | None] = mapped_column(Text)  # why the last fetch failed
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WatchBranchRecord(Base):
    """Where one watched branch stands: the head last seen and the current verdict."""

    __tablename__ = "watch_branches"

    watch_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("watches.id", ondelete="CASCADE"), primary_key=True
    )
    branch: Mapped[str] = mapped_column(String(255), primary_key=True)
    head: Mapped[str | None] = mapped_column(String(40))  # the newest commit seen
    verdict: Mapped[str | None] = mapped_column(String(16))  # of the newest verified commit
    verdict_commit: Mapped[str | None] = mapped_column(String(40))
    since: Mapped[datetime | None]  # when the branch took its current colour
    since_commit: Mapped[str | None] = mapped_column(String(40))  # the commit it took it at
    broken_by: Mapped[str | None] = mapped_column(String(40))  # the bisect's answer
    last_good: Mapped[str | None] = mapped_column(String(40))


class VerificationRecord(Base):
    """One commit of one branch: queued, verified (a run), or skipped."""

    __tablename__ = "verifications"
    __table_args__ = (
        Index("ix_verifications_watch_branch", "watch_id", "branch", "id"),
        Index("ix_verifications_phase", "phase"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    watch_id: Mapped[str] = mapped_column(String(32), ForeignKey("watches.id", ondelete="CASCADE"))
    branch: Mapped[str] = mapped_column(String(255))
    commit: Mapped[str] = mapped_column(String(40))
    author: Mapped[str] = mapped_column(String(255), default="")
    email: Mapped[str] = mapped_column(String(255), default="")
    subject: Mapped[str] = mapped_column(String(255), default="")
    committed_at: Mapped[datetime | None]
    why: Mapped[str] = mapped_column(String(16))  # verify/values.py Why
    phase: Mapped[str] = mapped_column(String(16))  # verify/values.py Phase
    verdict: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    node: Mapped[str | None] = mapped_column(String(128))
    run_id: Mapped[str | None] = mapped_column(String(36))
    attempt: Mapped[int] = mapped_column(default=1)
    queued_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]


class NotificationRecord(Base):
    """The outbox: a message to deliver (mail, webhook, commit status), kept until it is, and
    retried with back-off meanwhile, so that an unreachable server loses nothing."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_due", "state", "next_at"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    watch_id: Mapped[str | None] = mapped_column(String(32))
    verification_id: Mapped[int | None]
    channel: Mapped[str] = mapped_column(String(16))  # mail, webhook, status
    target: Mapped[str] = mapped_column(Text)  # an address, a URL, a forge's status URL
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending, sent, failed
    attempts: Mapped[int] = mapped_column(default=0)
    next_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
