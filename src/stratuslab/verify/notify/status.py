"""Commit statuses on forges: ``pending`` while a commit is verified, then ``success``,
``failure`` or ``error``, each linking to the run.

One request per forge, as each documents it:

- GitHub: ``POST {api}/repos/{owner}/{repo}/statuses/{sha}``, body ``state`` (error, failure,
  pending, success), ``target_url``, ``description``, ``context``; ``Authorization: Bearer``,
  ``Accept: application/vnd.github+json``, ``X-GitHub-Api-Version: 2022-11-28``.
- GitLab: ``POST {api}/projects/{id}/statuses/{sha}``, the project's numeric id or its
  URL-encoded path, body ``state`` (pending, running, success, failed, canceled),
  ``target_url``, ``description``, ``name``; ``PRIVATE-TOKEN``.
- Gitea and Forgejo: ``POST {api}/repos/{owner}/{repo}/statuses/{sha}``, body ``state``
  (pending, success, error, failure, warning), ``target_url``, ``description``, ``context``;
  ``Authorization: token``.

``api`` is the API's base URL: ``https://api.github.com``, ``https://gitlab.example.org/api/v4``,
``https://gitea.example.org/api/v1``.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from stratuslab.errors import Invalid
from stratuslab.verify.notify import one_line
from stratuslab.verify.notify.webhook import request
from stratuslab.verify.values import Outcome, Verdict

STATES = ("pending", "success", "failure", "error")
KINDS = ("github", "gitlab", "gitea")
MAX_DESCRIPTION = 140  # GitHub refuses longer descriptions; the others show them cut anyway
MAX_CONTEXT = 255
MAX_TARGET_URL = 1000
MAX_TOKEN = 1024

# Our four states in each forge's words. GitLab has no "error": a run that could not be made
# failed as far as a pipeline can tell; its "pending" means "queued", and a commit whose
# verification has begun is "running".
STATE_MAP: dict[str, dict[str, str]] = {
    "github": {"pending": "pending", "success": "success", "failure": "failure", "error": "error"},
    "gitlab": {"pending": "running", "success": "success", "failure": "failed", "error": "failed"},
    "gitea": {"pending": "pending", "success": "success", "failure": "failure", "error": "error"},
}

# What a verdict leaves on its commit.
FINAL_STATE = {
    Verdict.PASSED: "success",
    Verdict.FAILED: "failure",
    Verdict.INVALID: "failure",
    Verdict.ERROR: "error",
    Verdict.CANCELLED: "error",
}

_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_SEGMENT = r"[A-Za-z0-9_.][A-Za-z0-9_.-]{0,99}"
_OWNER_REPO = re.compile(rf"^{_SEGMENT}/{_SEGMENT}$")
_GITLAB_PATH = re.compile(rf"^{_SEGMENT}(?:/{_SEGMENT}){{1,20}}$")
_TOKEN = re.compile(r"^[\x21-\x7e]+$")  # printable, no space: it goes into a header
_KEYS = {"kind", "api", "repo", "token"}


def check_forge(forge: Any) -> dict[str, str]:
    """``forge`` validated and normalised (the API URL without a trailing slash), or
    :class:`Invalid` naming what is wrong."""
    if not isinstance(forge, dict):
        raise Invalid("forge: an object with kind, api, repo and token")
    unknown = sorted(set(forge) - _KEYS)
    if unknown:
        raise Invalid(f"forge: unknown key {unknown[0]!r}", hint="known: api, kind, repo, token")
    kind, api, repo, token = (forge.get(k) for k in ("kind", "api", "repo", "token"))
    if kind not in KINDS:
        raise Invalid(
            f"forge kind: {kind!r} is none of {', '.join(KINDS)}", hint="Forgejo is 'gitea'"
        )
    if not isinstance(api, str) or len(api) > MAX_TARGET_URL:
        raise Invalid("forge api: the API's base URL, e.g. https://api.github.com")
    parts = urlsplit(api)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise Invalid(
            f"forge api: {one_line(api, 80)!r} is not an http(s) URL",
            hint="e.g. https://api.github.com, https://gitlab.example.org/api/v4",
        )
    if not isinstance(repo, str | int) or isinstance(repo, bool):
        raise Invalid("forge repo: 'owner/name' (GitLab: the project's id or path)")
    repo = str(repo)
    # A dot segment would take the request, token and all, to another endpoint.
    dotted = any(segment in (".", "..") for segment in repo.split("/"))
    if kind == "gitlab":
        if dotted or (not (repo.isdigit() and len(repo) <= 20) and not _GITLAB_PATH.match(repo)):
            raise Invalid(
                f"forge repo: {one_line(repo, 80)!r} is neither a GitLab project id nor a path",
                hint="e.g. 42 or group/subgroup/project",
            )
    elif dotted or not _OWNER_REPO.match(repo):
        raise Invalid(f"forge repo: {one_line(repo, 80)!r} is not 'owner/name'")
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN or not _TOKEN.match(token):
        raise Invalid("forge token: a token the forge issued (printable, no spaces)")
    return {"kind": kind, "api": api.rstrip("/"), "repo": repo, "token": token}


def request_for(
    forge: dict[str, Any],
    sha: str,
    state: str,
    *,
    target_url: str | None,
    description: str,
    context: str,
) -> tuple[str, str, dict[str, str], dict[str, Any]]:
    """``(method, url, headers, json)`` that set ``sha``'s status on ``forge``."""
    checked = check_forge(forge)
    kind, api, repo, token = (checked[k] for k in ("kind", "api", "repo", "token"))
    if not _SHA.match(sha):
        raise Invalid(f"commit status: {one_line(sha, 80)!r} is not a full commit sha")
    if state not in STATES:
        raise Invalid(f"commit status: state {state!r} is none of {', '.join(STATES)}")
    if target_url is not None and (
        len(target_url) > MAX_TARGET_URL
        or urlsplit(target_url).scheme not in ("http", "https")
        or one_line(target_url, MAX_TARGET_URL) != target_url
    ):
        raise Invalid(f"commit status: target_url {one_line(target_url, 80)!r} is not a link")
    label = one_line(context, MAX_CONTEXT)
    if not label:
        raise Invalid("commit status: an empty context")
    body: dict[str, Any] = {
        "state": STATE_MAP[kind][state],
        "description": one_line(description, MAX_DESCRIPTION),
    }
    if target_url is not None:
        body["target_url"] = target_url
    if kind == "github":
        url = f"{api}/repos/{_owner_repo(repo)}/statuses/{sha}"
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }
        body["context"] = label
    elif kind == "gitlab":
        url = f"{api}/projects/{quote(repo, safe='')}/statuses/{sha}"
        headers = {"PRIVATE-TOKEN": token}
        body["name"] = label
    else:
        url = f"{api}/repos/{_owner_repo(repo)}/statuses/{sha}"
        headers = {"Authorization": f"token {token}", "Accept": "application/json"}
        body["context"] = label
    return "POST", url, headers, body


def post_status(
    forge: dict[str, Any],
    sha: str,
    state: str,
    *,
    target_url: str | None,
    description: str,
    context: str,
    client: httpx.Client,
) -> None:
    """Set ``sha``'s status on ``forge``; a refusal (any answer but a 2xx) or no answer within
    10 s raises :class:`BackendError` with the status and an excerpt of the answer."""
    method, url, headers, body = request_for(
        forge, sha, state, target_url=target_url, description=description, context=context
    )
    request(
        method,
        url,
        headers={**headers, "Content-Type": "application/json"},
        body=json.dumps(body).encode(),
        client=client,
        what=f"the {forge['kind']} status API",
    )


def status_url(forge: dict[str, Any], sha: str) -> str:
    """Where ``sha``'s statuses are set (the outbox's target for a status row)."""
    return request_for(forge, sha, "pending", target_url=None, description="", context="-")[1]


def describe(outcome: Outcome) -> str:
    """A commit status's description (one line; the forge shows at most 140 characters)."""
    reason = one_line(outcome.reason or "", 200)
    match outcome.verdict:
        case Verdict.PASSED:
            took = f" in {round(outcome.seconds)} s" if outcome.seconds is not None else ""
            text = f"Passed: deployed, configured and tested{took}"
        case Verdict.FAILED:
            on = f" on {outcome.node}" if outcome.node else ""
            text = f"Failed{on}: {reason or 'the run was aborted'}"
        case Verdict.INVALID:
            text = f"Invalid: {reason or 'the modules do not load'}"
        case Verdict.ERROR:
            text = f"Error, not the commit's fault: {reason or 'the infrastructure failed'}"
        case _:
            text = "Cancelled"
    return one_line(text, MAX_DESCRIPTION)


def _owner_repo(repo: str) -> str:
    owner, name = repo.split("/", 1)
    return f"{quote(owner, safe='')}/{quote(name, safe='')}"
