"""Forges' push events: each forge's payload, signed as that forge documents it, is read right;
anything unsigned, wrongly signed, tampered with, too large or malformed is refused with one of
the project's errors, and never anything else.

The payloads in ``payloads/`` follow the push payloads GitHub, GitLab and Gitea document
(trimmed: the repository and user objects keep a few fields). The headers are those each forge
sends, Gitea's GitHub-compatible ones included. Signatures are computed here with ``hmac``, as
the forges' documentation says, not with the module under test.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers

from stratuslab.errors import Invalid, StratusError, TooLarge, Unauthorized
from stratuslab.verify import hooks
from stratuslab.verify.hooks import MAX_BODY, ZERO, Push

PAYLOADS = Path(__file__).parent / "payloads"
SECRET = "9f2c41d87be0a6e35c1f04d2b9a7e6c8"
DELIVERY = "f6266f16-1bf3-46a5-9ea4-602e06ead473"

BEFORE = "c1401487bb7b79672b401c38801f89e8a9aac27b"
FIRST = "669a78c357d2f31b42a715cf309b8448fbfa2101"
AFTER = "a5db12685c3c40ba4fbb4f8284e36919269dee0d"
NEW = "7182fcd16601d1860f82b33e47b178bd8376102a"


def payload(name: str) -> bytes:
    return (PAYLOADS / f"{name}.json").read_bytes()


def hexmac(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def github(body: bytes, *, event: str = "push", secret: str = SECRET) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/7a3b1f0",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": DELIVERY,
        "X-GitHub-Hook-ID": "480132977",
        "X-Hub-Signature": "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest(),
        "X-Hub-Signature-256": "sha256=" + hexmac(secret, body),
    }


def gitlab(*, event: str = "Push Hook", token: str = SECRET) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": "GitLab/17.9.1",
        "X-Gitlab-Event": event,
        "X-Gitlab-Token": token,
        "X-Gitlab-Instance": "https://gitlab.example.org",
        "X-Gitlab-Webhook-UUID": "2b9f5d8e-5f0e-4bb1-8d2c-1b7e6e0d6c1a",
        "X-Gitlab-Event-UUID": DELIVERY,
    }


def gitea(
    body: bytes, *, event: str = "push", secret: str = SECRET, forgejo: bool = False
) -> dict[str, str]:
    """What Gitea's delivery sends (services/webhook/deliver.go), GitHub's names included;
    Forgejo adds its own names to the same."""
    sig = hexmac(secret, body)
    headers = {
        "Content-Type": "application/json",
        "X-Gitea-Delivery": DELIVERY,
        "X-Gitea-Event": event,
        "X-Gitea-Event-Type": event,
        "X-Gitea-Signature": sig,
        "X-Gogs-Delivery": DELIVERY,
        "X-Gogs-Event": event,
        "X-Gogs-Signature": sig,
        "X-Hub-Signature": "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest(),
        "X-Hub-Signature-256": "sha256=" + sig,
        "X-GitHub-Delivery": DELIVERY,
        "X-GitHub-Event": event,
    }
    if forgejo:
        headers |= {"X-Forgejo-Event": event, "X-Forgejo-Signature": sig}
    return headers


# -- each forge's push ----------------------------------------------------------------------


def test_the_signature_is_githubs_own_test_vector() -> None:
    # docs.github.com, "Validating webhook deliveries", "Testing the webhook payload validation"
    assert hooks.signature("It's a Secret to Everybody", b"Hello, World!") == (
        "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )


def test_a_github_push_names_its_branch_its_range_and_its_commits() -> None:
    body = payload("github_push")
    assert hooks.parse(github(body), body, SECRET) == Push(
        forge="github",
        branch="main",
        before=BEFORE,
        after=AFTER,
        deleted=False,
        forced=False,
        commits=(FIRST, AFTER),
    )


def test_a_gitlab_push_is_proven_by_its_token() -> None:
    body = payload("gitlab_push")
    push = hooks.parse(gitlab(), body, SECRET)
    assert push == Push("gitlab", "main", BEFORE, AFTER, False, False, (FIRST, AFTER))


@pytest.mark.parametrize("forgejo", [False, True], ids=["gitea", "forgejo"])
def test_a_gitea_or_forgejo_push_is_gitea_although_it_also_speaks_githubs_headers(
    forgejo: bool,
) -> None:
    body = payload("gitea_push")
    push = hooks.parse(gitea(body, forgejo=forgejo), body, SECRET)
    assert push == Push("gitea", "main", BEFORE, AFTER, False, False, (FIRST, AFTER))


def test_header_names_are_case_insensitive_as_http_says() -> None:
    body = payload("github_push")
    lower = {name.lower(): value for name, value in github(body).items()}
    upper = {name.upper(): value for name, value in github(body).items()}
    assert hooks.parse(lower, body, SECRET) == hooks.parse(upper, body, SECRET) is not None
    # What the route hands over: Starlette's headers, as they came off the wire.
    raw = Headers(raw=[(k.lower().encode(), v.encode()) for k, v in github(body).items()])
    assert hooks.parse(raw, body, SECRET) == hooks.parse(lower, body, SECRET)


# -- authenticity ---------------------------------------------------------------------------


def signed(forge: str, body: bytes, secret: str) -> dict[str, str]:
    if forge == "github":
        return github(body, secret=secret)
    if forge == "gitlab":
        return gitlab(token=secret)
    return gitea(body, secret=secret, forgejo=forge == "forgejo")


FORGES = {
    "github": ("github_push", "X-Hub-Signature-256"),
    "gitlab": ("gitlab_push", "X-Gitlab-Token"),
    "gitea": ("gitea_push", "X-Gitea-Signature"),
    "forgejo": ("gitea_push", "X-Forgejo-Signature"),
}


@pytest.mark.parametrize("forge", FORGES)
def test_a_wrong_secret_is_refused_naming_the_header_and_never_the_secret(forge: str) -> None:
    name, header = FORGES[forge]
    body = payload(name)
    with pytest.raises(Unauthorized) as refused:
        hooks.parse(signed(forge, body, "not-the-secret"), body, SECRET)
    assert header in refused.value.message
    assert SECRET not in str(refused.value) and "not-the-secret" not in str(refused.value)


@pytest.mark.parametrize("forge", FORGES)
def test_a_missing_signature_is_refused_naming_the_header(forge: str) -> None:
    name, header = FORGES[forge]
    body = payload(name)
    headers = signed(forge, body, SECRET)
    proofs = {"X-Hub-Signature-256", "X-Hub-Signature", "X-Gitlab-Token"}
    if forge in ("gitea", "forgejo"):
        proofs |= {"X-Gitea-Signature", "X-Forgejo-Signature"}
    stripped = {k: v for k, v in headers.items() if k not in proofs}
    with pytest.raises(Unauthorized, match=header.replace("-", ".")):
        hooks.parse(stripped, body, SECRET)


@pytest.mark.parametrize("forge", ["github", "gitea", "forgejo"])
def test_a_body_changed_after_signing_is_refused(forge: str) -> None:
    # GitLab's token proves who sent a body, not what it said: nothing to test there.
    name, _ = FORGES[forge]
    body = payload(name)
    headers = signed(forge, body, SECRET)
    tampered = body.replace(b'"refs/heads/main"', b'"refs/heads/prod"')
    assert tampered != body
    with pytest.raises(Unauthorized, match="does not match"):
        hooks.parse(headers, tampered, SECRET)


def test_forgejo_sends_two_signatures_and_both_must_hold() -> None:
    body = payload("gitea_push")
    headers = gitea(body, forgejo=True) | {"X-Gitea-Signature": hexmac("other", body)}
    with pytest.raises(Unauthorized, match="X-Gitea-Signature"):
        hooks.parse(headers, body, SECRET)


def test_githubs_sha1_signature_alone_is_not_enough() -> None:
    body = payload("github_push")
    headers = github(body)
    del headers["X-Hub-Signature-256"]
    with pytest.raises(Unauthorized, match="SHA-1"):
        hooks.parse(headers, body, SECRET)


def test_a_github_signature_without_its_sha256_prefix_is_refused() -> None:
    body = payload("github_push")
    headers = github(body) | {"X-Hub-Signature-256": hexmac(SECRET, body)}
    with pytest.raises(Unauthorized, match="sha256="):
        hooks.parse(headers, body, SECRET)


def test_a_gitea_hook_without_a_secret_says_so() -> None:
    # Gitea sends an empty X-Gitea-Signature when its hook has no secret.
    body = payload("gitea_push")
    headers = gitea(body) | {"X-Gitea-Signature": ""}
    with pytest.raises(Unauthorized, match="no secret"):
        hooks.parse(headers, body, SECRET)


def test_a_watch_without_a_secret_accepts_no_hook() -> None:
    # Anyone can compute an HMAC under the empty key.
    body = payload("github_push")
    with pytest.raises(Unauthorized, match="no secret"):
        hooks.parse(github(body, secret=""), body, "")


def test_a_proof_given_twice_is_refused_rather_than_one_picked() -> None:
    body = payload("github_push")
    good = "sha256=" + hexmac(SECRET, body)
    raw = [(b"x-github-event", b"push"), (b"x-hub-signature-256", good.encode())]
    raw.append((b"x-hub-signature-256", b"sha256=" + b"0" * 64))
    with pytest.raises(Invalid, match="twice"):
        hooks.parse(Headers(raw=raw), body, SECRET)


def test_a_request_from_no_forge_names_the_headers_accepted() -> None:
    with pytest.raises(Invalid, match="X-GitHub-Event, X-Gitlab-Event, X-Gitea-Event"):
        hooks.parse({"Content-Type": "application/json"}, b"{}", SECRET)


# -- what a push says ---------------------------------------------------------------------


@pytest.mark.parametrize("forge", ["github", "gitlab"])
def test_a_deleted_branch_is_a_push_to_the_null_sha(forge: str) -> None:
    body = payload(f"{forge}_push_deleted")
    push = hooks.parse(signed(forge, body, SECRET), body, SECRET)
    assert push is not None
    assert (push.branch, push.before, push.after) == ("feature/cache", NEW, ZERO)
    assert push.deleted and not push.created and push.commits == ()


def test_gitea_tells_a_deleted_branch_as_a_delete_event_which_is_not_a_push() -> None:
    body = payload("gitea_delete")
    assert hooks.parse(gitea(body, event="delete"), body, SECRET) is None


@pytest.mark.parametrize("forge", ["github", "gitlab", "gitea"])
def test_a_new_branch_comes_from_the_null_sha(forge: str) -> None:
    body = payload(f"{forge}_push_new_branch")
    push = hooks.parse(signed(forge, body, SECRET), body, SECRET)
    assert push is not None
    assert (push.branch, push.before, push.after) == ("feature/cache", ZERO, NEW)
    assert push.created and not push.deleted
    assert push.commits == ((NEW,) if forge != "gitea" else ())  # Gitea wrote null


def test_a_forced_push_is_flagged_where_the_forge_says_so() -> None:
    body = payload("github_push_forced")
    push = hooks.parse(github(body), body, SECRET)
    assert push is not None and push.forced and push.before == AFTER


def test_gitlab_has_no_forced_flag_so_its_pushes_are_never_forced() -> None:
    doc = json.loads(payload("gitlab_push")) | {"forced": True}
    body = json.dumps(doc).encode()
    push = hooks.parse(gitlab(), body, SECRET)
    assert push is not None and not push.forced


def test_a_tag_push_has_no_branch() -> None:
    body = payload("github_push_tag")
    push = hooks.parse(github(body), body, SECRET)
    assert push is not None and push.branch is None and push.after == AFTER
    body = payload("gitlab_tag_push")
    push = hooks.parse(gitlab(event="Tag Push Hook"), body, SECRET)
    assert push is not None and push.branch is None


def test_a_ping_is_no_push_but_its_signature_is_checked_first() -> None:
    body = payload("github_ping")
    assert hooks.parse(github(body, event="ping"), body, SECRET) is None
    with pytest.raises(Unauthorized):
        hooks.parse(github(body, event="ping", secret="other"), body, SECRET)


@pytest.mark.parametrize(
    ("forge", "event", "body"),
    [
        ("github", "issues", b'{"action": "opened"}'),
        ("gitlab", "Merge Request Hook", b'{"object_kind": "merge_request"}'),
        ("gitea", "create", b'{"ref": "v1", "ref_type": "tag"}'),
    ],
)
def test_events_that_are_not_pushes_are_none(forge: str, event: str, body: bytes) -> None:
    headers = {
        "github": lambda: github(body, event=event),
        "gitlab": lambda: gitlab(event=event),
        "gitea": lambda: gitea(body, event=event),
    }[forge]()
    assert hooks.parse(headers, body, SECRET) is None


def test_githubs_form_encoded_payload_is_signed_over_the_raw_form() -> None:
    document = payload("github_push").decode()
    body = urllib.parse.urlencode({"payload": document}).encode()
    headers = github(body) | {"Content-Type": "application/x-www-form-urlencoded"}
    push = hooks.parse(headers, body, SECRET)
    assert push is not None and push.commits == (FIRST, AFTER)
    # Signing the JSON inside instead is not what GitHub does, and is refused.
    wrong = headers | {"X-Hub-Signature-256": "sha256=" + hexmac(SECRET, document.encode())}
    with pytest.raises(Unauthorized):
        hooks.parse(wrong, body, SECRET)


def test_giteas_form_encoded_payload_is_signed_over_the_json_inside() -> None:
    document = payload("gitea_push")
    body = urllib.parse.urlencode({"payload": document.decode()}).encode()
    headers = gitea(document) | {"Content-Type": "application/x-www-form-urlencoded"}
    push = hooks.parse(headers, body, SECRET)
    assert push is not None and push.after == AFTER


def test_a_body_over_the_cap_is_too_large_before_anything_else() -> None:
    with pytest.raises(TooLarge, match=str(MAX_BODY)):
        hooks.parse({}, b" " * (MAX_BODY + 1), SECRET)


def test_a_push_of_exactly_the_cap_is_read() -> None:
    document = payload("github_push")
    body = document + b" " * (MAX_BODY - len(document))
    assert len(body) == MAX_BODY
    push = hooks.parse(github(body), body, SECRET)
    assert push is not None and push.after == AFTER


def test_the_newest_thousand_commits_are_kept() -> None:
    doc = json.loads(payload("github_push"))
    shas = [f"{i:040x}" for i in range(1, 1501)]
    doc["commits"] = [{"id": sha, "message": "m"} for sha in shas]
    body = json.dumps(doc).encode()
    push = hooks.parse(github(body), body, SECRET)
    assert push is not None and push.commits == tuple(shas[-1000:])


def altered(**changes: Any) -> bytes:
    doc = json.loads(payload("github_push"))
    for key, value in changes.items():
        if value is KeyError:
            del doc[key]
        else:
            doc[key] = value
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe\x00garbage", "not JSON"),
        (b"[" * 100_000, "not JSON"),  # deeper than Python's recursion
        (b"[]", "JSON object"),
        (b'"refs/heads/main"', "JSON object"),
        (altered(ref=KeyError), "'ref' is a string"),
        (altered(ref=["refs/heads/main"]), "'ref' is a string"),
        (altered(ref="main"), "not a ref git accepts"),
        (altered(ref="refs/heads/a..b"), "not a ref git accepts"),
        (altered(ref="refs/heads/x\u0000y"), "not a ref git accepts"),
        (altered(ref="refs/heads/\ud800"), "not a ref git accepts"),
        (altered(ref="refs/heads/x.lock"), "not a ref git accepts"),
        (altered(ref="refs/heads/" + "b" * 1100), "not a ref git accepts"),
        (altered(before="c1401487"), "'before'"),
        (altered(after=42), "'after'"),
        (altered(after="z" * 40), "'after'"),
        (altered(before=ZERO, after=ZERO), "both"),
        (altered(forced="yes"), "'forced'"),
        (altered(deleted=None), "'deleted'"),
        (altered(commits={"id": AFTER}), "'commits' is a list"),
        (altered(commits=[AFTER]), "an object with an 'id'"),
        (altered(commits=[{"id": "HEAD"}]), "commits' id"),
    ],
    ids=lambda value: value[:30] if isinstance(value, str) else None,
)
def test_a_malformed_push_is_invalid_and_says_why(body: bytes, says: str) -> None:
    with pytest.raises(Invalid) as refused:
        hooks.parse(github(body), body, SECRET)
    assert says in refused.value.message
    assert not isinstance(refused.value, TooLarge)


def test_a_body_neither_json_nor_a_form_is_invalid() -> None:
    body = payload("github_push")
    headers = github(body) | {"Content-Type": "text/plain"}
    with pytest.raises(Invalid, match="application/json"):
        hooks.parse(headers, body, SECRET)
    form = b"payload=%ZZ&payload=2"
    headers = github(form) | {"Content-Type": "application/x-www-form-urlencoded"}
    with pytest.raises(Invalid, match="form"):
        hooks.parse(headers, form, SECRET)


# -- whatever arrives ---------------------------------------------------------------------

HEADER_NAMES = [
    "Content-Type",
    "X-GitHub-Event",
    "X-Gitlab-Event",
    "X-Gitea-Event",
    "X-Forgejo-Event",
    "X-Hub-Signature-256",
    "X-Hub-Signature",
    "X-Gitlab-Token",
    "X-Gitea-Signature",
    "X-Forgejo-Signature",
    "X-Other",
]
EVENTS = ["push", "ping", "Push Hook", "Tag Push Hook", "delete", ""]
CONTENT_TYPES = ["application/json", "application/x-www-form-urlencoded", "text/plain", ""]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
FIELDS = ["ref", "before", "after", "commits", "forced", "deleted", "created"]
SHAPES = st.sampled_from([ZERO, AFTER, AFTER.upper(), "refs/heads/main", "refs/tags/v1", ""])


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    """Bytes at random, JSON at random, or a real payload with fields replaced at random."""
    kind = draw(st.sampled_from(["bytes", "json", "mutated"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return json.dumps(draw(JSON)).encode()
    name = draw(st.sampled_from(sorted(p.stem for p in PAYLOADS.glob("*.json"))))
    doc = json.loads(payload(name))
    for field in draw(st.lists(st.sampled_from(FIELDS), max_size=3)):
        doc[field] = draw(JSON | SHAPES | st.lists(st.fixed_dictionaries({"id": JSON | SHAPES})))
    return json.dumps(doc).encode()


@st.composite
def requests(draw: st.DrawFn) -> tuple[dict[str, str], bytes]:
    """Mostly a request rightly signed for one forge and a push event, then perturbed: headers
    dropped, replaced or added at random, so that the parsing is reached as often as the
    checks before it."""
    document = draw(documents())
    body, signed_bytes = document, document
    form = draw(st.booleans())
    if form:
        field = document.decode("latin-1")
        body = urllib.parse.urlencode({"payload": field}).encode()
        signed_bytes = field.encode("utf-8")
    forge = draw(st.sampled_from(["github", "gitlab", "gitea", "forgejo", "none"]))
    event = draw(st.sampled_from(EVENTS))
    if forge == "github":
        headers = github(body, event=event if draw(st.booleans()) else "push")
    elif forge == "gitlab":
        headers = gitlab(event=event if draw(st.booleans()) else "Push Hook")
    elif forge in ("gitea", "forgejo"):
        headers = gitea(signed_bytes, event=event if draw(st.booleans()) else "push")
        if forge == "forgejo":
            headers |= {"X-Forgejo-Event": headers["X-Gitea-Event"]}
            headers |= {"X-Forgejo-Signature": headers["X-Gitea-Signature"]}
    else:
        headers = {}
    headers["Content-Type"] = "application/x-www-form-urlencoded" if form else "application/json"
    for name in draw(st.lists(st.sampled_from(sorted(headers) or HEADER_NAMES), max_size=2)):
        if draw(st.booleans()):
            headers.pop(name, None)
        else:
            headers[name] = draw(st.text(max_size=80) | st.sampled_from(EVENTS + CONTENT_TYPES))
    for name in draw(st.lists(st.sampled_from(HEADER_NAMES), max_size=2)):
        headers[draw(st.sampled_from([name, name.lower()]))] = draw(st.text(max_size=80))
    return headers, body


@settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=400,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(requests())
def test_whatever_arrives_is_a_push_none_or_one_of_our_errors(
    request: tuple[dict[str, str], bytes],
) -> None:
    headers, body = request
    try:
        push = hooks.parse(headers, body, SECRET)
    except StratusError as refused:
        assert SECRET not in str(refused)
        return
    if push is not None:
        assert push.forge in ("github", "gitlab", "gitea")
        for sha in (push.before, push.after, *push.commits):
            assert len(sha) == 40 and sha == sha.lower() and int(sha, 16) >= 0
        assert push.branch is None or (push.branch and "\x00" not in push.branch)
        assert len(push.commits) <= hooks.MAX_COMMITS
