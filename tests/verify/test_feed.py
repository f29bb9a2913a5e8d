"""Feeds of verdicts: Atom as RFC 4287 requires it, JSON Feed 1.1 as jsonfeed.org specifies
it, and hostile commit text that stays text."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from xml.etree import ElementTree as ET

import pytest

from stratuslab.errors import Invalid
from stratuslab.verify import feed
from stratuslab.verify.feed import Entry

NS = {"a": "http://www.w3.org/2005/Atom"}
BASE = "https://stratus.example.org:8443/"
T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def entry(n: int, *, when: datetime | None = None, **fields: str) -> Entry:
    values = {
        "title": f"[webapp] PASSED main a5db126 (Alice: change {n})",
        "summary": f"Verification {n} passed in 312 s.",
        "author": "Alice",
    } | fields
    return Entry(
        id=feed.tag_uri(BASE, f"watch/3f9c/verification/{n}"),
        link=f"https://stratus.example.org:8443/runs/run-{n}",
        updated=when or T0 + timedelta(minutes=n),
        **values,
    )


def atom(entries: list[Entry], **kwargs: object) -> ET.Element:
    document = feed.atom(
        title="webapp: main",
        feed_id=feed.tag_uri(BASE, "watch/3f9c"),
        self_link="https://stratus.example.org:8443/api/watches/webapp/feed.atom",
        entries=entries,
        **kwargs,  # type: ignore[arg-type]
    )
    assert document.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    return ET.fromstring(document)


def test_ids_are_tag_uris_of_the_host_alone() -> None:
    assert feed.tag_uri(BASE, "watch/3f9c/verification/7") == (
        "tag:stratus.example.org,2026:watch/3f9c/verification/7"
    )
    with pytest.raises(Invalid, match="no host"):
        feed.tag_uri("/relative/only", "watch/1")


def test_an_atom_feed_has_what_rfc_4287_requires_of_the_feed_and_each_entry() -> None:
    root = atom([entry(1), entry(2)], home="https://stratus.example.org:8443/watches/webapp")
    assert root.tag == "{http://www.w3.org/2005/Atom}feed"
    assert root.findtext("a:id", namespaces=NS) == "tag:stratus.example.org,2026:watch/3f9c"
    assert root.findtext("a:title", namespaces=NS) == "webapp: main"
    assert root.findtext("a:author/a:name", namespaces=NS)
    links = {link.attrib["rel"]: link.attrib["href"] for link in root.findall("a:link", NS)}
    assert links["self"].endswith("/feed.atom") and links["alternate"].endswith("/webapp")
    entries = root.findall("a:entry", NS)
    assert len(entries) == 2
    for item in entries:
        for required in ("a:id", "a:title", "a:updated", "a:author/a:name", "a:summary"):
            assert item.findtext(required, namespaces=NS), required
        # No content, so a link to the page the entry is about (RFC 4287 4.1.2).
        assert item.find("a:link[@rel='alternate']", NS) is not None
        assert item.find("a:summary", NS).attrib["type"] == "text"  # type: ignore[union-attr]


def test_entries_go_newest_first_and_the_feed_is_as_new_as_its_newest() -> None:
    root = atom([entry(1), entry(3), entry(2)])
    ids = [item.findtext("a:id", namespaces=NS) for item in root.findall("a:entry", NS)]
    assert [i.rsplit("/", 1)[1] for i in ids if i] == ["3", "2", "1"]
    assert root.findtext("a:updated", namespaces=NS) == "2026-03-02T09:33:00Z"


def test_times_are_rfc_3339_in_utc() -> None:
    paris = timezone(timedelta(hours=1))
    root = atom([entry(1, when=datetime(2026, 3, 2, 10, 30, 15, 999, tzinfo=paris))])
    assert root.findtext("a:entry/a:updated", namespaces=NS) == "2026-03-02T09:30:15Z"


def test_an_empty_feed_is_as_new_as_now_and_still_has_an_author() -> None:
    root = atom([], now=T0)
    assert root.findtext("a:updated", namespaces=NS) == "2026-03-02T09:30:00Z"
    assert root.findall("a:entry", NS) == []
    assert root.findtext("a:author/a:name", namespaces=NS) == "StratusLab"
    before = datetime.now(UTC).replace(microsecond=0)
    stamp = atom([]).findtext("a:updated", namespaces=NS)
    assert stamp and datetime.fromisoformat(stamp) >= before


def test_a_naive_time_is_refused_rather_than_guessed() -> None:
    with pytest.raises(Invalid, match="time zone"):
        atom([entry(1, when=datetime(2026, 3, 2, 9, 30))])
    with pytest.raises(Invalid, match="time zone"):
        atom([], now=datetime(2026, 3, 2, 9, 30))


HOSTILE = {
    "title": "<script>alert('x')</script> & ]]> \"quoted\"",
    "summary": "broken by 3f2a9c1 ]]><![CDATA[ \x00\x07\x1b[31mred\x1b[0m\ud800 done",
    "author": "Mallory <mallory@example.org>\x0c",
}


def test_hostile_commit_text_stays_text_in_atom() -> None:
    document = feed.atom(
        title="<b>webapp</b>",
        feed_id="tag:stratus.example.org,2026:watch/3f9c",
        self_link="https://stratus.example.org/feed?a=1&b=2",
        entries=[entry(1, **HOSTILE)],
    )
    assert b"<script>" not in document and b"<b>" not in document
    root = ET.fromstring(document)  # well-formed: the control characters are gone
    item = root.find("a:entry", NS)
    assert item is not None
    assert item.findtext("a:title", namespaces=NS) == HOSTILE["title"]
    assert item.findtext("a:summary", namespaces=NS) == (
        "broken by 3f2a9c1 ]]><![CDATA[ [31mred[0m done"
    )
    assert item.findtext("a:author/a:name", namespaces=NS) == "Mallory <mallory@example.org>"
    assert root.findtext("a:title", namespaces=NS) == "<b>webapp</b>"
    assert root.find("a:link", NS).attrib["href"].endswith("?a=1&b=2")  # type: ignore[union-attr]


def test_long_text_is_bounded() -> None:
    root = atom([entry(1, title="t" * 10_000, summary="s" * 100_000)])
    item = root.find("a:entry", NS)
    assert item is not None
    assert len(item.findtext("a:title", namespaces=NS) or "") == feed.MAX_TITLE
    assert len(item.findtext("a:summary", namespaces=NS) or "") == feed.MAX_SUMMARY


def test_too_many_entries_are_refused() -> None:
    with pytest.raises(Invalid, match=str(feed.MAX_ENTRIES)):
        atom([entry(1)] * (feed.MAX_ENTRIES + 1))


def test_a_json_feed_has_what_json_feed_1_1_requires() -> None:
    document = feed.json_feed(
        title="webapp: main",
        home="https://stratus.example.org:8443/watches/webapp",
        feed_url="https://stratus.example.org:8443/api/watches/webapp/feed.json",
        entries=[entry(1), entry(2, **HOSTILE)],
    )
    document = json.loads(json.dumps(document, ensure_ascii=False).encode())  # as served
    assert document["version"] == "https://jsonfeed.org/version/1.1"
    assert document["title"] == "webapp: main"
    assert document["home_page_url"].endswith("/watches/webapp")
    assert document["feed_url"].endswith("/feed.json")
    first, second = document["items"]
    assert first["id"].endswith("/verification/2")  # newest first
    for item in document["items"]:
        assert isinstance(item["id"], str) and item["id"]
        assert item["content_text"]  # an item has content_html or content_text
        assert item["url"].startswith("https://")
        assert datetime.fromisoformat(item["date_published"]).tzinfo is not None
        assert item["authors"][0]["name"]
    assert first["title"] == HOSTILE["title"]
    assert "\ud800" not in first["summary"] and "\x00" not in first["summary"]
    assert second["summary"] == "Verification 1 passed in 312 s."


def test_both_feeds_tell_the_same_entries() -> None:
    entries = [entry(n) for n in range(5)]
    root = atom(entries)
    ids = [item.findtext("a:id", namespaces=NS) for item in root.findall("a:entry", NS)]
    items = feed.json_feed(title="t", home="https://h/", feed_url="https://h/f", entries=entries)
    assert ids == [item["id"] for item in items["items"]]
