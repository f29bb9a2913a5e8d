"""Webhooks: the document a chat tool and a program read, its signature, and its delivery to a
real HTTP receiver that checks the signature as a consumer does."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from stratuslab.errors import BackendError, BackendUnavailable
from stratuslab.verify.notify import MAX_REPORT_URLS, webhook
from stratuslab.verify.notify.webhook import document, post, sign
from stratuslab.verify.values import Outcome, Verdict
from tests.verify.notify.conftest import BAD, GOOD_SHA, HEAD
from tests.verify.notify.servers import Receiver, free_port

Make = Callable[..., Outcome]
SECRET = "s3cret-of-the-watch"


def test_the_document_has_the_chat_text_and_every_field(outcome: Make) -> None:
    doc = document(outcome())

    # Slack, Mattermost and Rocket.Chat read "text"; the link is a bare URL they all link.
    assert doc["text"] == outcome().headline() + " http://127.0.0.1:8421/runs/0b6c7d1e"
    s = doc["stratus"]
    assert s["verdict"] == "failed" and s["previous"] == "passed" and s["changed"] is True
    assert s["branch"] == "main" and s["watch"] == "webapp" and s["owner"] == "alice"
    assert s["commit"] == {
        "sha": HEAD.sha,
        "short": "c0ffee0",
        "author": "Bob",
        "email": "bob@example.org",
        "subject": "tune the web tier",
        "when": "2026-03-01T13:00:00+00:00",
    }
    assert s["reason"] == "test.1: curl http://web/ answered 500" and s["node"] == "test.1"
    assert s["run_id"] == "0b6c7d1e-0000-4000-8000-000000000001"
    assert s["run_url"] == "http://127.0.0.1:8421/runs/0b6c7d1e"
    assert s["report_urls"] == ["http://127.0.0.1:8421/runs/0b6c7d1e/reports/test.1"]
    assert s["broken_by"]["sha"] == BAD.sha and s["broken_by"]["author"] == "Alice"
    assert s["last_good"] == GOOD_SHA and s["seconds"] == 252.4
    json.dumps(doc)  # all of it is JSON


def test_a_passed_first_verdict(outcome: Make) -> None:
    s = document(
        outcome(verdict=Verdict.PASSED, previous=None, broken_by=None, reason=None, node=None)
    )["stratus"]

    assert s["verdict"] == "passed" and s["previous"] is None and s["broken_by"] is None


def test_commit_text_cannot_mention_everyone_or_forge_links(outcome: Make) -> None:
    from dataclasses import replace

    sneaky = replace(HEAD, subject="<!channel> see <http://evil.example|the fix> & more")
    doc = document(outcome(commit=sneaky))

    assert "<!channel>" not in doc["text"] and "<http://evil" not in doc["text"]
    assert "&lt;!channel&gt;" in doc["text"] and "&amp; more" in doc["text"]
    assert doc["stratus"]["commit"]["subject"] == sneaky.subject  # the raw value, for programs


def test_long_reasons_and_many_reports_are_bounded(outcome: Make) -> None:
    many = (*(f"http://127.0.0.1/r/{i}" for i in range(500)), "http://x/" + "a" * 5000)
    doc = document(outcome(reason="x" * 100_000, report_urls=many))

    assert len(doc["stratus"]["reason"]) < 4100 and "more characters" in doc["stratus"]["reason"]
    assert len(doc["stratus"]["report_urls"]) == MAX_REPORT_URLS
    assert len(json.dumps(doc)) < 64 * 1024


def test_the_signature_is_githubs_scheme() -> None:
    # The example GitHub's documentation gives for validating webhook deliveries.
    assert sign("It's a Secret to Everybody", b"Hello, World!") == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )


def test_a_signed_document_is_accepted_by_its_consumer(outcome: Make, receiver: Receiver) -> None:
    body = json.dumps(document(outcome())).encode()

    with httpx.Client() as client:
        post(f"{receiver.url}/hook/chat", body, sign(SECRET, body), client=client)

    [seen] = receiver.seen
    assert seen.answered == 200 and seen.complaint == ""
    assert seen.json()["stratus"]["verdict"] == "failed"


def test_a_wrong_signature_is_refused_by_the_consumer(outcome: Make, receiver: Receiver) -> None:
    body = json.dumps(document(outcome())).encode()

    with httpx.Client() as client, pytest.raises(BackendError, match="answered 401"):
        post(f"{receiver.url}/hook/chat", body, sign("another secret", body), client=client)

    assert receiver.seen[0].complaint == "bad signature"


def test_a_server_error_is_reported_with_a_bounded_excerpt(receiver: Receiver) -> None:
    receiver.script.append((500, b"Internal failure: " + b"z" * 200_000, {}))

    with httpx.Client() as client, pytest.raises(BackendError) as caught:
        post(f"{receiver.url}/hook/chat?token=xyz", b"{}", sign(SECRET, b"{}"), client=client)

    said = str(caught.value)
    assert said.startswith(f"the webhook {receiver.url}/hook/chat answered 500: Internal failure")
    assert len(said) < 500 and "token=xyz" not in said


def test_a_redirect_is_not_followed(receiver: Receiver) -> None:
    receiver.script.append((302, b"", {"Location": f"{receiver.url}/hook/elsewhere"}))

    with httpx.Client() as client, pytest.raises(BackendError, match="answered 302"):
        post(f"{receiver.url}/hook/chat", b"{}", sign(SECRET, b"{}"), client=client)

    assert [s.path for s in receiver.seen] == ["/hook/chat"]


def test_nobody_listening(receiver: Receiver) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"

    with httpx.Client() as client, pytest.raises(BackendUnavailable, match="cannot reach"):
        post(url, b"{}", sign(SECRET, b"{}"), client=client)


def test_a_receiver_that_does_not_answer_in_time(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhook, "TIMEOUT_S", 0.3)
    receiver.delay_s = 1.5

    with httpx.Client() as client, pytest.raises(BackendUnavailable, match=r"within 0\.3 s"):
        post(f"{receiver.url}/hook", b"{}", sign(SECRET, b"{}"), client=client)
