"""Telling people a commit's verdict, in the forms their tools read: mail over SMTP
(``mail.py``), a signed JSON document per verdict for chat tools' incoming webhooks
(``webhook.py``), commit statuses on GitHub, GitLab and Gitea/Forgejo (``status.py``), and the
outbox that keeps each message in the store until it is delivered (``outbox.py``).

Each renderer bounds what it takes from an outcome (the abort reason, the report links), so that
a notification's payload stays under :data:`MAX_PAYLOAD_BYTES`; the outbox checks it all the
same before it queues one.
"""

from __future__ import annotations

import re

MAX_PAYLOAD_BYTES = 64 * 1024  # one notification, as stored in the outbox
MAX_REASON_CHARS = 4000  # of an abort reason, in a mail or a webhook
MAX_REPORT_URLS = 50  # report links in one notification
MAX_URL_CHARS = 1000  # a longer link is left out rather than cut (a cut link leads nowhere)

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")


def one_line(text: str, limit: int) -> str:
    """``text`` on one line (line breaks and other control characters become a space), at most
    ``limit`` characters: what may go into a header, a subject, a status description."""
    flat = _CONTROL.sub(" ", text).strip()
    if len(flat) <= limit:
        return flat
    return flat[: max(limit - 1, 0)].rstrip() + "…"


def bounded(text: str | None, limit: int = MAX_REASON_CHARS) -> str | None:
    """A long text (an abort reason) cut to ``limit`` characters, saying so."""
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + f"… ({len(text) - limit} more characters)"


def usable_urls(urls: tuple[str, ...] | list[str]) -> list[str]:
    """The report links a notification carries: at most :data:`MAX_REPORT_URLS`, each on one
    line and at most :data:`MAX_URL_CHARS` long."""
    kept = [u for u in urls if len(u) <= MAX_URL_CHARS and not _CONTROL.search(u)]
    return kept[:MAX_REPORT_URLS]
