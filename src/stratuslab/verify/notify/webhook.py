"""Webhooks: a JSON document per verdict, POSTed to each URL a watch names and signed with the
watch's secret.

The document is what a chat tool's incoming webhook reads (Slack, Mattermost and Rocket.Chat take
a top-level ``"text"``; a bare link in it is made clickable by all three) and, under
``"stratus"``, every field of the outcome for a program to act on. The signature is GitHub's
scheme, which consumers already know how to check: ``X-Stratus-Signature-256: sha256=<hex>``, the
HMAC-SHA256 of the exact body bytes under the watch's secret.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import httpx

from stratuslab.errors import BackendError, BackendUnavailable
from stratuslab.verify.notify import bounded, one_line, usable_urls
from stratuslab.verify.values import Commit, Outcome

TIMEOUT_S = 10.0  # connect, read and write, each
MAX_ANSWER_BYTES = 2048  # of a receiver's answer read, to quote in an error
_EXCERPT = 300


def document(outcome: Outcome) -> dict[str, Any]:
    """The JSON document telling ``outcome``."""
    o = outcome
    text = _chat_escaped(o.headline())
    if o.run_url:
        text += f" {o.run_url}"
    return {
        "text": text,
        "stratus": {
            "event": "verdict",
            "headline": o.headline(),
            "watch": o.watch,
            "owner": o.owner,
            "repository": o.repository,
            "branch": o.branch,
            "verdict": o.verdict.value,
            "previous": o.previous.value if o.previous else None,
            "changed": o.changed,
            "commit": _commit(o.commit),
            "reason": bounded(o.reason),
            "node": o.node,
            "run_id": o.run_id,
            "run_url": o.run_url,
            "report_urls": usable_urls(o.report_urls),
            "broken_by": _commit(o.broken_by) if o.broken_by else None,
            "last_good": o.last_good,
            "seconds": o.seconds,
            "links": dict(o.links),
        },
    }


def sign(secret: str, body: bytes) -> str:
    """``sha256=<hex>``: the HMAC-SHA256 of ``body`` under ``secret``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post(url: str, body: bytes, signature: str, *, client: httpx.Client) -> None:
    """POST a signed document to ``url``. Redirects are not followed (a receiver that moved
    must be told so, not guessed); any answer but a 2xx, or no answer within
    :data:`TIMEOUT_S`, raises :class:`BackendError`."""
    headers = {
        "Content-Type": "application/json",
        "X-Stratus-Event": "verdict",
        "X-Stratus-Signature-256": signature,
    }
    request("POST", url, headers=headers, body=body, client=client, what="the webhook")


def request(
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    body: bytes,
    client: httpx.Client,
    what: str,
) -> None:
    """Send one request and insist on a 2xx; read at most :data:`MAX_ANSWER_BYTES` of the
    answer (to quote it in the error). ``what`` names the receiver in errors."""
    shown = _shown(url)
    try:
        with client.stream(
            method,
            url,
            content=body,
            headers=headers,
            timeout=TIMEOUT_S,
            follow_redirects=False,
        ) as response:
            if response.is_success:
                return
            excerpt = _excerpt(response)
            status = response.status_code
            location = response.headers.get("location", "")
    except httpx.TimeoutException as exc:
        raise BackendUnavailable(
            f"{what} {shown} did not answer within {TIMEOUT_S:g} s ({type(exc).__name__})"
        ) from exc
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise BackendUnavailable(
            f"cannot reach {what} {shown}: {one_line(str(exc) or type(exc).__name__, _EXCERPT)}"
        ) from exc
    moved = f" (redirected to {one_line(location, 200)}, not followed)" if location else ""
    raise BackendError(f"{what} {shown} answered {status}{moved}: {excerpt or 'no body'}")


def _excerpt(response: httpx.Response) -> str:
    taken = b""
    for chunk in response.iter_raw():
        taken += chunk
        if len(taken) >= MAX_ANSWER_BYTES:
            break
    return one_line(taken[:MAX_ANSWER_BYTES].decode("utf-8", "replace"), _EXCERPT)


def _shown(url: str) -> str:
    """A URL as errors show it: without its query, which may carry a token (Slack's and
    Mattermost's webhook URLs are secrets in their path, so the path is cut too)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return one_line(url, 80)
    path = parsed.path if len(parsed.path) <= 24 else parsed.path[:24] + "…"
    return f"{parsed.scheme}://{parsed.netloc.decode('ascii', 'replace')}{path}"


def _commit(commit: Commit) -> dict[str, Any]:
    return {
        "sha": commit.sha,
        "short": commit.short,
        "author": commit.author,
        "email": commit.email,
        "subject": commit.subject,
        "when": commit.when.isoformat(),
    }


def _chat_escaped(text: str) -> str:
    """Slack's escaping (``&``, ``<``, ``>``), so that a commit subject cannot turn into a link
    or a ``<!channel>`` mention; Markdown-based tools render the entities as the characters."""
    return one_line(text, 400).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
