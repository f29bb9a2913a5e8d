"""Feeds of verdicts a person subscribes to: Atom 1.0 (RFC 4287) and JSON Feed 1.1.

Each verification is one entry, identified by a tag URI (RFC 4151) that never changes when the
server moves or its URL changes port: ``tag:<host>,2026:watch/<watch>/verification/<n>``.
Entries go newest first; the feed's ``updated`` is its newest entry's, or ``now`` when it has
none. Text comes from commits (subjects, authors), so it is cleaned of what XML 1.0 cannot hold
and bounded before the serializer escapes it; the JSON feed takes the same cleaned text, so
both say the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit
from xml.etree import ElementTree as ET

from stratuslab.errors import Invalid
from stratuslab.verify.xmltext import bounded, clean

ATOM = "http://www.w3.org/2005/Atom"
JSON_FEED = "https://jsonfeed.org/version/1.1"
TAG_YEAR = 2026  # a tag URI's date is fixed for ever, or every entry's id would change
MAX_ENTRIES = 1000
MAX_TITLE = 300
MAX_SUMMARY = 4000
MAX_NAME = 200
GENERATOR = "StratusLab"


@dataclass(frozen=True)
class Entry:
    """One verdict, as a feed tells it."""

    id: str  # stable: tag_uri(public_url, f"watch/{watch_id}/verification/{n}")
    title: str
    link: str  # the run's URL (or the watch's)
    updated: datetime  # aware
    summary: str
    author: str


def tag_uri(base_url: str, path: str) -> str:
    """A tag URI for ``path`` under the host of ``base_url`` (its scheme and port left out,
    which a tag's authority cannot hold)."""
    host = urlsplit(base_url).hostname
    if not host:
        raise Invalid(f"no host name in {base_url[:200]!r} to make feed ids from")
    return f"tag:{host},{TAG_YEAR}:{path}"


def atom(
    *,
    title: str,
    feed_id: str,
    self_link: str,
    entries: Sequence[Entry],
    home: str | None = None,
    author: str = GENERATOR,
    now: datetime | None = None,
) -> bytes:
    """The Atom 1.0 document of ``entries``, UTF-8 with its XML declaration.

    RFC 4287 wants an id, a title and an updated time on the feed and each entry, an author
    for each entry (the feed's own, ``author``, stands for the empty feed), and a link to each
    entry's page since it has no content; ``self_link`` is where the feed is read.
    """
    ordered = _ordered(entries)
    feed = ET.Element("feed", {"xmlns": ATOM})  # attributes stay unqualified
    _text(feed, "id", clean(feed_id))
    _text(feed, "title", bounded(title, MAX_TITLE))
    _text(feed, "updated", _rfc3339(ordered[0].updated if ordered else now or _now()))
    ET.SubElement(feed, "link", {"rel": "self", "href": clean(self_link)})
    if home is not None:
        ET.SubElement(feed, "link", {"rel": "alternate", "href": clean(home)})
    _text(ET.SubElement(feed, "author"), "name", bounded(author, MAX_NAME))
    _text(feed, "generator", GENERATOR)
    for entry in ordered:
        item = ET.SubElement(feed, "entry")
        _text(item, "id", clean(entry.id))
        _text(item, "title", bounded(entry.title, MAX_TITLE))
        _text(item, "updated", _rfc3339(entry.updated))
        ET.SubElement(item, "link", {"rel": "alternate", "href": clean(entry.link)})
        _text(ET.SubElement(item, "author"), "name", bounded(entry.author, MAX_NAME))
        _text(item, "summary", bounded(entry.summary, MAX_SUMMARY)).set("type", "text")
    document: bytes = ET.tostring(feed, encoding="utf-8", xml_declaration=True)
    return document


def json_feed(*, title: str, home: str, feed_url: str, entries: Sequence[Entry]) -> dict[str, Any]:
    """The JSON Feed 1.1 document of ``entries`` (to be sent as ``application/feed+json``)."""
    return {
        "version": JSON_FEED,
        "title": bounded(title, MAX_TITLE),
        "home_page_url": clean(home),
        "feed_url": clean(feed_url),
        "authors": [{"name": GENERATOR}],
        "items": [
            {
                "id": clean(entry.id),
                "url": clean(entry.link),
                "title": bounded(entry.title, MAX_TITLE),
                "summary": bounded(entry.summary, MAX_SUMMARY),
                "content_text": bounded(entry.summary, MAX_SUMMARY),
                "date_published": _rfc3339(entry.updated),
                "date_modified": _rfc3339(entry.updated),
                "authors": [{"name": bounded(entry.author, MAX_NAME)}],
            }
            for entry in _ordered(entries)
        ],
    }


def _ordered(entries: Sequence[Entry]) -> list[Entry]:
    if len(entries) > MAX_ENTRIES:
        raise Invalid(f"a feed holds at most {MAX_ENTRIES} entries, not {len(entries)}")
    for entry in entries:
        _rfc3339(entry.updated)  # naive times refused before any sorting compares them
    return sorted(entries, key=lambda entry: entry.updated, reverse=True)


def _rfc3339(when: datetime) -> str:
    if when.tzinfo is None or when.utcoffset() is None:
        raise Invalid(f"a feed's times are aware of their time zone, not {when.isoformat()}")
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _now() -> datetime:
    return datetime.now(UTC)


def _text(parent: ET.Element, name: str, text: str) -> ET.Element:
    child = ET.SubElement(parent, name)
    child.text = text
    return child
