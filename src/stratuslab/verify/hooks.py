"""Forges' push events: who sent them, proven with the watch's secret, and what they say.

``POST /api/hooks/<watch>`` hands the request's headers and raw body to :func:`parse`, which
answers the push (branch, before, after, the commits listed) or ``None`` for an event that is
not a push (GitHub's ``ping``, a tag event, an issue), after proving the request came from
someone holding the watch's secret:

- GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, raw body)>``.
- GitLab: ``X-Gitlab-Token: <secret>``, the secret itself (GitLab signs nothing).
- Gitea and Forgejo: ``X-Gitea-Signature`` / ``X-Forgejo-Signature``: the hex HMAC-SHA256
  without a prefix, of the JSON payload. Gitea signs the JSON even when it posts it as a form
  (``payload=<JSON>``), so for a form the signed bytes are the decoded field, whereas GitHub's
  signature is over the raw form body.

Gitea also sends ``X-GitHub-Event`` and ``X-Hub-Signature-256`` so that receivers written for
GitHub accept it, so its own headers are looked for first. The proof comes before anything of
the body is believed or parsed as JSON, comparisons are constant-time, and an error names the
header expected without echoing the secret or what was sent.

A push only wakes its watch: what is verified is what ``git fetch`` finds, so a hook refused
(too large, malformed) loses nothing but the wait until the next poll. That is why
:data:`MAX_BODY` is 1 MiB where GitHub allows 25 MB: the body has to be held whole before its
signature can be checked, by anyone who can reach the server, and a push that lists more than
fits in 1 MiB (about a thousand commits with their file lists) is one a poll handles as well.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stratuslab.errors import Invalid, TooLarge, Unauthorized

MAX_BODY = 1 << 20
MAX_COMMITS = 1000  # the newest kept; GitHub lists at most 2048, GitLab 20
MAX_REF = 1024
ZERO = "0" * 40  # git's null object id: no such commit (a branch created or deleted)

FORM = "application/x-www-form-urlencoded"

# Which forge sent a request, by its event header, Gitea's own before the GitHub one it adds.
_EVENT_HEADERS = (
    ("x-forgejo-event", "gitea"),
    ("x-gitea-event", "gitea"),
    ("x-gitlab-event", "gitlab"),
    ("x-github-event", "github"),
)
_PUSH_EVENTS = {
    "github": frozenset({"push"}),
    "gitlab": frozenset({"Push Hook", "Tag Push Hook"}),
    "gitea": frozenset({"push"}),
}
_GITEA_SIGNATURES = ("x-forgejo-signature", "x-gitea-signature")
# The headers read, by the name people know them by (for messages).
_NAMES = {
    "content-type": "Content-Type",
    "x-forgejo-event": "X-Forgejo-Event",
    "x-gitea-event": "X-Gitea-Event",
    "x-gitlab-event": "X-Gitlab-Event",
    "x-github-event": "X-GitHub-Event",
    "x-hub-signature-256": "X-Hub-Signature-256",
    "x-hub-signature": "X-Hub-Signature",
    "x-gitlab-token": "X-Gitlab-Token",
    "x-forgejo-signature": "X-Forgejo-Signature",
    "x-gitea-signature": "X-Gitea-Signature",
}
ACCEPTED = "X-GitHub-Event, X-Gitlab-Event, X-Gitea-Event or X-Forgejo-Event"

_SHA = re.compile(r"[0-9a-fA-F]{40}")
# git check-ref-format's rules: no control characters, space, ~ ^ : ? * [ \, no "..", "@{" or
# "//", no component starting with "." or ending with ".lock", no "/" or "." at the end; and
# no lone surrogate (JSON can escape one; no UTF-8 ref holds one, and the store could not).
_BAD_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\\ud800-\udfff]|\.\.|@\{|//|/\.|\.lock(/|$)|[/.]$")


@dataclass(frozen=True)
class Push:
    """What a forge says one push did to one ref."""

    forge: str  # "github" | "gitlab" | "gitea" (Forgejo counts as gitea)
    branch: str | None  # refs/heads/x -> "x"; a tag or any other ref -> None
    before: str  # 40 hex, or ZERO for a new branch
    after: str  # 40 hex, or ZERO for a deleted branch
    deleted: bool
    forced: bool  # as GitHub says it (Gitea may say it); GitLab has no such flag: False
    commits: tuple[str, ...]  # the shas the payload lists, oldest first, the newest 1000 kept

    @property
    def created(self) -> bool:
        return self.before == ZERO


def parse(headers: Mapping[str, str], body: bytes, secret: str) -> Push | None:
    """The push ``body`` announces, once proven to come from a holder of ``secret``.

    ``None`` for an authentic event that is not a push (GitHub's ``ping``, an issue, Gitea's
    ``create``). Raises :class:`TooLarge` for a body over :data:`MAX_BODY`,
    :class:`Invalid` without a forge's event header or for a payload that is not a push's
    (malformed JSON, wrong types, a sha that is not 40 hex digits, a ref git would refuse),
    and :class:`Unauthorized` when the signature or token is missing or wrong.
    """
    if len(body) > MAX_BODY:
        raise TooLarge(f"a hook's body is at most {MAX_BODY} bytes; this one has {len(body)}")
    h = _headers(headers)
    forge, event = _forge(h)
    if not secret:
        raise Unauthorized("the watch has no secret, so no hook can prove where it comes from")
    if forge == "github":
        _github(h, body, secret)
    elif forge == "gitlab":
        _gitlab(h, secret)
    else:
        _gitea(h, _document(h, body), secret)
    if event not in _PUSH_EVENTS[forge]:
        return None
    return _push(forge, _load(_document(h, body)))


def signature(secret: str, message: bytes) -> str:
    """The hex HMAC-SHA256 of ``message`` under ``secret``, as GitHub and Gitea compute it."""
    return hmac.new(_bytes(secret), message, hashlib.sha256).hexdigest()


# -- who sent it ------------------------------------------------------------------------------


def _headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers read, by lower-case name; one given twice is refused, not guessed at."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        if key in _NAMES:
            if key in out:
                raise Invalid(f"a hook's {_NAMES[key]} header is given twice")
            out[key] = value
    return out


def _forge(h: Mapping[str, str]) -> tuple[str, str]:
    for header, forge in _EVENT_HEADERS:
        if header in h:
            return forge, h[header].strip()
    raise Invalid(f"not a forge's hook: no {ACCEPTED} header")


def _github(h: Mapping[str, str], body: bytes, secret: str) -> None:
    sent = h.get("x-hub-signature-256")
    if sent is None:
        old = " (GitHub's SHA-1 X-Hub-Signature is not accepted)" if "x-hub-signature" in h else ""
        raise Unauthorized(
            f"X-Hub-Signature-256 is missing{old}: set the watch's secret as the webhook's secret"
        )
    scheme, _, digest = sent.strip().partition("=")
    if scheme != "sha256" or not digest:
        raise Unauthorized("X-Hub-Signature-256 must be sha256= and the body's hex HMAC-SHA256")
    if not _same(digest.lower(), signature(secret, body)):
        raise Unauthorized("X-Hub-Signature-256 does not match the body signed with the secret")


def _gitlab(h: Mapping[str, str], secret: str) -> None:
    sent = h.get("x-gitlab-token")
    if sent is None:
        raise Unauthorized(
            "X-Gitlab-Token is missing: set the watch's secret as the webhook's secret token"
        )
    if not _same(sent.strip(), secret):
        raise Unauthorized("X-Gitlab-Token does not match the watch's secret")


def _gitea(h: Mapping[str, str], signed: bytes, secret: str) -> None:
    present = [name for name in _GITEA_SIGNATURES if name in h]
    if not present:
        raise Unauthorized(
            "X-Gitea-Signature (or X-Forgejo-Signature) is missing: set the watch's secret as "
            "the webhook's secret"
        )
    expected = signature(secret, signed)
    for name in present:  # Forgejo sends both: each must hold
        sent = h[name].strip().lower()
        if not sent:
            raise Unauthorized(
                f"{_NAMES[name]} is empty: the webhook has no secret; set the watch's secret"
            )
        if not _same(sent, expected):
            raise Unauthorized(f"{_NAMES[name]} does not match the payload signed with the secret")


def _same(sent: str, expected: str) -> bool:
    return hmac.compare_digest(_bytes(sent), _bytes(expected))


def _bytes(text: str) -> bytes:
    # compare_digest refuses non-ASCII str; a header is whatever a client sent.
    return text.encode("utf-8", "surrogatepass")


# -- what it says -----------------------------------------------------------------------------


def _document(h: Mapping[str, str], body: bytes) -> bytes:
    """The JSON document of the body: the body itself, or the ``payload`` field of a form."""
    ctype = h.get("content-type", "").partition(";")[0].strip().lower()
    if ctype == FORM or (not ctype and body.startswith(b"payload=")):
        return _form_payload(body)
    if ctype in ("", "application/json") or ctype.endswith("+json"):
        return body
    raise Invalid(f"a hook's body is application/json or {FORM}, not {ctype[:80]!r}")


def _form_payload(body: bytes) -> bytes:
    try:
        fields = urllib.parse.parse_qs(
            body.decode("ascii"),
            keep_blank_values=True,
            strict_parsing=True,
            errors="strict",
            max_num_fields=16,
        )
    except ValueError:  # UnicodeDecodeError too
        raise Invalid(f"the hook's body is not {FORM}") from None
    payload = fields.get("payload", [])
    if len(payload) != 1:
        raise Invalid("a form-encoded hook holds one payload= field with the JSON")
    return payload[0].encode("utf-8")


def _load(document: bytes) -> Any:
    try:
        return json.loads(document)
    except (ValueError, RecursionError):  # UnicodeDecodeError, too deep a nesting
        raise Invalid("the hook's payload is not JSON") from None


def _push(forge: str, doc: Any) -> Push:
    if not isinstance(doc, dict):
        raise Invalid("a push payload is a JSON object")
    ref = _ref(doc.get("ref"))
    before, after = _sha(doc.get("before"), "before"), _sha(doc.get("after"), "after")
    if before == ZERO and after == ZERO:
        raise Invalid("a push's before and after cannot both be the null sha")
    gitlab = forge == "gitlab"
    return Push(
        forge=forge,
        branch=ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None,
        before=before,
        after=after,
        deleted=after == ZERO or (not gitlab and _flag(doc, "deleted")),
        forced=not gitlab and _flag(doc, "forced"),
        commits=_commits(doc.get("commits")),
    )


def _ref(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid("a push payload's 'ref' is a string: refs/heads/<branch> or refs/tags/<tag>")
    if not value.startswith("refs/") or len(value) > MAX_REF or _BAD_REF.search(value):
        raise Invalid(f"a push payload's 'ref' is not a ref git accepts: {value[:120]!r}")
    return value


def _sha(value: object, what: str) -> str:
    if not isinstance(value, str) or not _SHA.fullmatch(value):
        raise Invalid(f"a push payload's {what!r} is a commit's 40 hexadecimal digits")
    return value.lower()


def _flag(doc: dict[str, Any], key: str) -> bool:
    value = doc.get(key, False)
    if not isinstance(value, bool):
        raise Invalid(f"a push payload's {key!r} is true or false")
    return value


def _commits(value: object) -> tuple[str, ...]:
    if value is None:  # Gitea writes an empty list as null
        return ()
    if not isinstance(value, list):
        raise Invalid("a push payload's 'commits' is a list")
    shas = []
    for commit in value[-MAX_COMMITS:]:
        if not isinstance(commit, dict):
            raise Invalid("each of a push payload's 'commits' is an object with an 'id'")
        shas.append(_sha(commit.get("id"), "commits' id"))
    return tuple(shas)
