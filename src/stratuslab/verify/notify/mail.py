"""Mail over SMTP: a verdict told in words, to the people a watch names.

A message is composed once, when its verdict is known (so that every retry of the outbox sends
the same Message-ID and Date), and sent over the site's SMTP server: STARTTLS when the settings
ask for it (the certificate checked against the system's CAs, or the bundle ``SSL_CERT_FILE``
names), then a login when a user is set. Whatever goes wrong is a :class:`BackendError` naming
the server and what it said.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid, parseaddr
from typing import TYPE_CHECKING

from stratuslab.errors import BackendError, BackendUnavailable, Invalid
from stratuslab.verify.notify import bounded, one_line, usable_urls
from stratuslab.verify.values import Outcome, Verdict

if TYPE_CHECKING:
    from stratuslab.config import Settings

MAX_RECIPIENTS = 50
_ADDRESS = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251})$"
)
_EXCERPT = 300  # characters of a server's answer in an error


@dataclass(frozen=True)
class SmtpSettings:
    """Where mail goes out (the site's ``smtp_*`` settings)."""

    host: str  # empty: no server; mail waits in the outbox until one is set
    port: int
    starttls: bool
    user: str
    password: str = field(repr=False)
    sender: str
    timeout_s: float = 30

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpSettings:
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            starttls=settings.smtp_starttls,
            user=settings.smtp_user,
            password=settings.smtp_password,
            sender=settings.smtp_from,
        )

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def compose(outcome: Outcome, *, to: Sequence[str], sender: str) -> EmailMessage:
    """The mail telling ``outcome`` to ``to``. Every header is one line: line breaks in the text
    users control (commit subjects, author names, watch and branch names) are removed, and an
    address that is not a plain ``local@domain`` is refused (:class:`Invalid`)."""
    if not to:
        raise Invalid("a mail needs at least one recipient")
    if len(to) > MAX_RECIPIENTS:
        raise Invalid(f"a mail goes to at most {MAX_RECIPIENTS} recipients, not {len(to)}")
    recipients = [address(a) for a in to]
    name, origin = _sender(sender)
    message = EmailMessage()
    message["Subject"] = one_line(outcome.headline(), 250)
    message["From"] = formataddr((name, origin)) if name else origin
    message["To"] = ", ".join(recipients)
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid("stratus", domain=origin.rsplit("@", 1)[1])
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: vacation responders stay quiet
    message["X-Stratus-Watch"] = one_line(outcome.watch, 64)
    message["X-Stratus-Verdict"] = outcome.verdict.value
    # Quoted-printable keeps the message 7-bit: the outbox stores it as text.
    message.set_content(body(outcome), cte="quoted-printable")
    return message


def send(settings: SmtpSettings, message: EmailMessage) -> None:
    """Hand ``message`` to the SMTP server. Raises :class:`BackendUnavailable` when the server
    cannot be reached, :class:`BackendError` when it refuses (its code and answer in the
    message); nothing else escapes."""
    if not settings.host:
        raise BackendUnavailable("no SMTP server is configured", hint="set smtp_host")
    where = settings.where
    try:
        with smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout_s) as smtp:
            smtp.ehlo()
            if settings.starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if settings.user:
                smtp.login(settings.user, settings.password)
            refused = smtp.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        raise BackendError(
            f"the SMTP server {where} refused every recipient: {_refusals(exc.recipients)}"
        ) from exc
    except smtplib.SMTPResponseException as exc:
        raise BackendError(
            f"the SMTP server {where} answered {exc.smtp_code} {_said(exc.smtp_error)}"
        ) from exc
    except smtplib.SMTPException as exc:
        raise BackendError(f"the SMTP server {where}: {one_line(str(exc), _EXCERPT)}") from exc
    except ssl.SSLError as exc:
        raise BackendError(
            f"TLS with the SMTP server {where} failed: {one_line(str(exc), _EXCERPT)}",
            hint="a private CA goes in the bundle SSL_CERT_FILE names",
        ) from exc
    except OSError as exc:
        said = one_line(str(exc) or type(exc).__name__, _EXCERPT)
        raise BackendUnavailable(f"cannot reach the SMTP server {where}: {said}") from exc
    if refused:
        raise BackendError(f"the SMTP server {where} refused {_refusals(refused)}")


def address(text: str) -> str:
    """A plain ``local@domain`` address, or :class:`Invalid`. Line breaks are removed first, so
    that ``a@b.c\\r\\nBcc: x@y`` is refused rather than read as a second header."""
    flat = one_line(text, 400).replace(" ", "")
    if len(flat) > 254 or not _ADDRESS.match(flat) or ".." in flat:
        raise Invalid(f"not a mail address: {flat[:80]!r}", hint="write it as local@domain")
    return flat


def _sender(text: str) -> tuple[str, str]:
    """The site's ``smtp_from``: an address, or ``Name <address>``."""
    name, addr = parseaddr(one_line(text, 400))
    if not addr:
        raise Invalid(f"setting smtp_from: not a mail address: {one_line(text, 80)!r}")
    return one_line(name, 80), address(addr)


def body(outcome: Outcome) -> str:
    """The mail's text: what happened, the commit, why, the culprit, the links."""
    o = outcome
    lines = [_summary(o), ""]
    lines.append(f"Commit:     {o.commit.sha}")
    lines.append(f"Author:     {one_line(o.commit.author, 120)} <{one_line(o.commit.email, 120)}>")
    lines.append(f"Subject:    {one_line(o.commit.subject, 200)}")
    lines.append(f"Branch:     {one_line(o.branch, 200)}")
    lines.append(f"Repository: {one_line(o.repository, 400)}")
    lines.append(f"Verdict:    {o.verdict.value}")
    lines.append(f"Before:     {o.previous.value if o.previous else 'none (the first verdict)'}")
    if o.seconds is not None:
        lines.append(f"Duration:   {_duration(o.seconds)}")
    if o.node:
        lines.append(f"Node:       {one_line(o.node, 128)}")
    culprit = bisected(o)
    if culprit:
        lines += ["", culprit[0].upper() + culprit[1:] + "."]
    reason = bounded(o.reason)
    if reason:
        label = "Abort reason" if o.verdict is Verdict.FAILED else "What went wrong"
        lines += ["", f"{label}:"]
        lines += [f"    {line}" for line in reason.splitlines()]
    links = [("Run", o.run_url)] if o.run_url else []
    links += [("Report", u) for u in usable_urls(o.report_urls)]
    links += [(name.capitalize(), url) for name, url in sorted(o.links.items())]
    if links:
        lines.append("")
        lines += [f"{name + ':':<11} {one_line(url, 1000)}" for name, url in links]
    lines += ["", "-- ", f"StratusLab, watch {one_line(o.watch, 64)} of {one_line(o.owner, 64)}"]
    return "\n".join(lines) + "\n"


def bisected(outcome: Outcome) -> str | None:
    """The bisect's answer in words: "broken by 3f2a9c1 (Alice: 'switch db driver'), last good
    8e01d44", when it is known and the verdict is bad."""
    culprit = outcome.broken_by
    if culprit is None or not outcome.verdict.bad:
        return None
    who, what = one_line(culprit.author, 80), one_line(culprit.subject, 120)
    said = f"broken by {culprit.short} ({who}: '{what}')"
    if outcome.last_good:
        said += f", last good {outcome.last_good[:7]}"
    return said


def _summary(o: Outcome) -> str:
    where = (
        f"commit {o.commit.short} on branch {one_line(o.branch, 200)} of {one_line(o.watch, 64)}"
    )
    match o.verdict:
        case Verdict.PASSED if o.previous is not None and o.previous.bad:
            return f"Fixed: {where} deployed, configured and passed its tests again."
        case Verdict.PASSED:
            return f"Passed: {where} deployed, configured and passed its tests."
        case Verdict.FAILED:
            still = "still fails" if o.previous is not None and o.previous.bad else "failed"
            by = f", raised by the node instance {one_line(o.node, 128)}" if o.node else ""
            return f"Broken: {where} {still}: the run was aborted{by}."
        case Verdict.INVALID:
            return f"Broken: the modules of {where} do not load: nothing was provisioned."
        case Verdict.ERROR:
            return (
                f"Error: verifying {where} failed for a reason that is not the commit's "
                "(the infrastructure failed); the branch keeps its colour."
            )
        case _:
            return f"Cancelled: the verification of {where} was cancelled."


def _duration(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, rest = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _said(answer: bytes | str) -> str:
    text = answer.decode("utf-8", "replace") if isinstance(answer, bytes) else answer
    return one_line(text, _EXCERPT)


def _refusals(refused: dict[str, tuple[int, bytes]]) -> str:
    return "; ".join(f"{who}: {code} {_said(said)}" for who, (code, said) in refused.items())
