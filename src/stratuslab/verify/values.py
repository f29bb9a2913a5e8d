"""The value objects every part of continuous verification shares: commits, verdicts, and the
outcome of verifying one commit, which notifications render."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Verdict(StrEnum):
    """What verifying one commit concluded."""

    PASSED = "passed"  # deployed, configured and tested: the run reached Done (or Ready)
    FAILED = "failed"  # the commit's fault: a recipe or a test aborted the run
    ERROR = "error"  # the infrastructure failed (not the commit's fault); retried once
    CANCELLED = "cancelled"  # a person ended the run, or the watch was removed meanwhile
    INVALID = "invalid"  # the commit's modules do not load: nothing was provisioned

    @property
    def bad(self) -> bool:
        """Whether the commit cannot be delivered (what turns a branch red)."""
        return self in (Verdict.FAILED, Verdict.INVALID)


class Phase(StrEnum):
    """Where one commit's verification stands."""

    QUEUED = "queued"
    HELD = "held"  # passed over for a newer commit: verified only if that one fails (bisect)
    RUNNING = "running"
    DONE = "done"
    SKIPPED = "skipped"  # a newer commit passed, or history was rewritten: not verified


class Why(StrEnum):
    """Why a commit is verified."""

    NEWEST = "newest"  # the newest commit of its branch when it was seen
    SKIPPED = "skipped"  # passed over for a newer one, which then failed
    BISECT = "bisect"  # between the last good commit and the first known bad one
    ASKED = "asked"  # `stratus watch run NAME --commit SHA`
    RETRY = "retry"  # its first run ended in error


@dataclass(frozen=True)
class Commit:
    sha: str  # 40 hex digits
    author: str
    email: str
    subject: str  # the message's first line
    when: datetime

    @property
    def short(self) -> str:
        return self.sha[:7]


@dataclass(frozen=True)
class Outcome:
    """One commit's verdict, as notifications tell it."""

    watch: str  # the watch's name
    owner: str
    repository: str  # the URL as the watch has it
    branch: str
    commit: Commit
    verdict: Verdict
    previous: Verdict | None  # the branch's verdict before this one (None: the first)
    run_id: str | None
    run_url: str | None  # where a person reads the run
    report_urls: tuple[str, ...] = ()
    reason: str | None = None  # the abort reason (failed), or what went wrong (error, invalid)
    node: str | None = None  # the node instance that raised the abort
    seconds: float | None = None  # the run's duration
    broken_by: Commit | None = None  # the bisect's answer: the first failing commit
    last_good: str | None = None  # the sha of the last commit that passed
    links: dict[str, str] = field(default_factory=dict)  # "badge", "feed", "watch" -> URL

    @property
    def changed(self) -> bool:
        """Whether the branch changed colour (passed -> failed, failed -> passed)."""
        if self.previous is None or self.verdict not in (Verdict.PASSED, *_BAD):
            return False
        return self.previous.bad != self.verdict.bad and self.previous is not Verdict.ERROR

    def headline(self) -> str:
        """One line for a subject, a chat message, a feed title."""
        culprit = ""
        if self.broken_by is not None and self.verdict.bad:
            culprit = f": broken by {self.broken_by.short} ({self.broken_by.author})"
        return (
            f"[{self.watch}] {self.verdict.value.upper()} {self.branch} "
            f"{self.commit.short} ({self.commit.author}: {self.commit.subject[:80]}){culprit}"
        )


_BAD = (Verdict.FAILED, Verdict.INVALID)
