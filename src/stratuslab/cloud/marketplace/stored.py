"""An entry as the Marketplace keeps it, and how it is shown: JSON, and the XML of a listing.

A :class:`Stored` is rebuilt from the store's columns, never by parsing the XML again: the
policy asks for the endorsements of an image at every instance start, and a verification of
the signature was made once, at upload (``signing.verify``); the certificates it was made with
are kept, in DER, for the policy to check against its trust store at every start.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from lxml import etree

from stratuslab.cloud.marketplace.entry import TIME_FORMAT, Endorser, Entry, to_json
from stratuslab.cloud.marketplace.identifier import Checksums
from stratuslab.cloud.marketplace.signing import Verified
from stratuslab.cloud.marketplace.xmlsafe import parse


@dataclass(frozen=True)
class Stored:
    """One upload: the entry as signed (its endorser set), and what the Marketplace adds."""

    entry: Entry
    uploaded_at: dt.datetime
    not_after: dt.datetime  # the endorser's certificate's end
    certificates: tuple[bytes, ...]  # DER, the endorser's first
    current: bool  # its endorser's latest entry of the image
    xml: bytes | None = None  # as uploaded; read only when asked for

    @property
    def endorser(self) -> Endorser:
        assert self.entry.endorser is not None  # the store keeps endorsed entries only
        return self.entry.endorser

    @property
    def identifier(self) -> str:
        return self.entry.identifier

    @property
    def href(self) -> str:
        """Where this one upload is: ``/metadata/<identifier>/<email>/<endorsed>``."""
        return entry_path(self.identifier, self.endorser.email, self.endorser.created)

    def expired(self, now: dt.datetime | None = None) -> bool:
        return self.entry.valid <= (now or dt.datetime.now(dt.UTC))

    def verified(self) -> Verified:
        """The endorsement as ``signing.verify`` found it at upload (no trust claimed: that is
        the site's policy's, with its own CAs)."""
        return Verified(
            entry=self.entry,
            subject=self.endorser.subject,
            issuer=self.endorser.issuer,
            email=self.endorser.email,
            trusted=False,
            not_after=self.not_after,
            certificates=self.certificates,
        )

    def to_json(self, now: dt.datetime | None = None) -> dict[str, Any]:
        return {
            **to_json(self.entry),
            "href": self.href,
            "uploaded_at": _time(self.uploaded_at),
            "expired": self.expired(now),
            "current": self.current,
        }


def entry_path(identifier: str, email: str, endorsed: dt.datetime) -> str:
    return f"/metadata/{identifier}/{quote(email, safe='@')}/{_time(endorsed)}"


def _time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime(TIME_FORMAT)


def from_row(row: Mapping[Any, Any]) -> Stored:
    """A stored entry from the columns of its record (``MarketplaceEntryRecord``)."""
    endorser = Endorser(
        email=row["email"],
        subject=row["subject"],
        issuer=row["issuer"],
        created=row["endorsed_at"],
    )
    entry = Entry(
        checksums=Checksums(
            size=row["bytes"],
            md5=row["md5"],
            sha1=row["sha1"],
            sha256=row["sha256"],
            sha512=row["sha512"],
        ),
        kind=row["kind"],
        os=row["os"],
        os_version=row["os_version"],
        os_arch=row["os_arch"],
        format=row["format"],
        title=row["title"],
        description=row["description"],
        creator=row["creator"],
        created=row["created"],
        valid=row["valid"],
        locations=tuple(row["locations"]),
        tags=tuple(row["tags"]),
        deprecated=row["deprecated"],
        replaces=row["replaces"],
        is_replaced_by=row["is_replaced_by"],
        endorser=endorser,
    )
    return Stored(
        entry=entry,
        uploaded_at=row["uploaded_at"],
        not_after=row["not_after"],
        certificates=tuple(base64.b64decode(c) for c in row["certificates"]),
        current=row["current"],
        xml=row.get("xml"),
    )


def to_row(verified: Verified, *, xml: bytes, uploaded_by: str) -> dict[str, Any]:
    """The columns of a new record for an endorsement ``signing.verify`` accepted."""
    entry = verified.entry
    assert entry.endorser is not None  # verify refuses an entry that names no endorser
    sums = entry.checksums
    return {
        "identifier": entry.identifier,
        "bytes": sums.size,
        "md5": sums.md5,
        "sha1": sums.sha1,
        "sha256": sums.sha256,
        "sha512": sums.sha512,
        "email": verified.email,
        "subject": verified.subject,
        "issuer": verified.issuer,
        "endorsed_at": entry.endorser.created,
        "not_after": verified.not_after,
        "certificates": [base64.b64encode(c).decode() for c in verified.certificates],
        "kind": entry.kind,
        "created": entry.created,
        "valid": entry.valid,
        "deprecated": entry.deprecated,
        "replaces": entry.replaces,
        "is_replaced_by": entry.is_replaced_by,
        "os": entry.os,
        "os_version": entry.os_version,
        "os_arch": entry.os_arch,
        "format": entry.format,
        "title": entry.title,
        "description": entry.description,
        "creator": entry.creator,
        "locations": list(entry.locations),
        "tags": list(entry.tags),
        "current": True,
        "uploaded_by": uploaded_by,
        "uploaded_at": dt.datetime.now(dt.UTC),
        "xml": xml,
    }


# -- a listing as XML -----------------------------------------------------------------------

_DECLARATION = re.compile(rb"^\s*<\?xml[^>]*\?>", re.IGNORECASE)
_UTF8 = re.compile(rb"""encoding\s*=\s*["']utf-?8["']""", re.IGNORECASE)


def listing_xml(entries: Iterable[Stored]) -> bytes:
    """StratusLab's list of entries: a ``<metadata>`` root holding each entry's ``rdf:RDF``, as
    signed (an entry uploaded in UTF-8 is copied as its bytes; one in another encoding is
    parsed and written in UTF-8)."""
    parts = [b'<?xml version="1.0" encoding="UTF-8"?>\n<metadata>\n']
    for stored in entries:
        assert stored.xml is not None, "a listing as XML needs the entries' XML"
        parts.append(_embeddable(stored.xml))
        parts.append(b"\n")
    parts.append(b"</metadata>\n")
    return b"".join(parts)


def _embeddable(xml: bytes) -> bytes:
    declared = _DECLARATION.match(xml)
    if declared is None and not xml.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")):
        return xml.strip()  # no declaration: UTF-8 by XML's own rule
    if declared is not None and (
        b"encoding" not in declared.group() or _UTF8.search(declared.group())
    ):
        return xml[declared.end() :].strip()
    return etree.tostring(parse(xml), encoding="UTF-8")
