"""A Marketplace metadata entry, and its XML in StratusLab's RDF/XML shape.

The shape is the one StratusLab's Marketplace and client read and wrote (their sample
``valid-full.xml``, ``ManifestInfo.py``, ``MetadataNamespaceContext.java``)::

    <rdf:RDF xml:base="http://mp.stratuslab.eu/">
      <rdf:Description rdf:about="#ID">
        <dcterms:identifier>ID</dcterms:identifier>  <slreq:bytes>N</slreq:bytes>
        <slreq:checksum rdf:parseType="Resource">
          <slreq:algorithm>SHA-1</slreq:algorithm> <slreq:value>hex</slreq:value>
        </slreq:checksum>  (one per algorithm)
        <slreq:endorsement rdf:parseType="Resource"> <dcterms:created/>
          <slreq:endorser rdf:parseType="Resource">
            <slreq:email/> <slreq:subject/> <slreq:issuer/> </slreq:endorser> </slreq:endorsement>
        dcterms: type created valid title description creator format alternative (a tag)
                 replaces isReplacedBy
        slterms: os os-version os-arch location deprecated
      </rdf:Description>
      <ds:Signature/>  (signing.py)
    </rdf:RDF>

Reading is bounded and strict: no DTD (so no entities), at most ``MAX_XML`` bytes and
``MAX_DEPTH`` levels, one of each single-valued element, and the identifier must be the one the
SHA-1 gives. Elements of other namespaces, and StratusLab terms we do not use (hypervisor,
serial-number, ports...), are ignored. Every refusal is an :class:`Invalid` naming the element.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from lxml import etree

from stratuslab.cloud.marketplace.identifier import IDENTIFIER_RE, Checksums
from stratuslab.cloud.marketplace.xmlsafe import (
    BASE,
    DCTERMS,
    NSMAP,
    PREFIX,
    RDF,
    SLREQ,
    SLTERMS,
    XML_NS,
    element_name,
    parse,
)
from stratuslab.errors import Invalid, TooLarge

MAX_TEXT = 4096
MAX_MANY = 32  # locations, tags
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_ALGORITHMS = {"MD5": "md5", "SHA-1": "sha1", "SHA-256": "sha256", "SHA-512": "sha512"}


@dataclass(frozen=True)
class Endorser:
    """Who endorsed an entry, as their certificate names them, and when."""

    email: str
    subject: str
    issuer: str
    created: dt.datetime


@dataclass(frozen=True)
class Entry:
    """One image's metadata. Its identifier is derived from its SHA-1, never stated apart."""

    checksums: Checksums
    os: str
    os_version: str
    os_arch: str
    format: str
    title: str
    description: str
    creator: str
    created: dt.datetime
    valid: dt.datetime
    locations: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    deprecated: str | None = None
    replaces: str | None = None
    is_replaced_by: str | None = None
    endorser: Endorser | None = None
    kind: str = "machine"

    def __post_init__(self) -> None:
        for name in ("os", "os_version", "os_arch", "format", "title", "description", "creator"):
            _bounded(name, getattr(self, name))
        for name in ("locations", "tags"):
            items = getattr(self, name)
            if len(items) > MAX_MANY:
                raise TooLarge(f"{name}: at most {MAX_MANY}, not {len(items)}")
            for item in items:
                _bounded(name, item)
                if not item.strip():
                    raise Invalid(f"{name}: an empty value")
        for name in ("replaces", "is_replaced_by"):
            value = getattr(self, name)
            if value is not None and not IDENTIFIER_RE.fullmatch(value):
                raise Invalid(f"{name}: not a Marketplace identifier: {value[:140]!r}")
        if self.deprecated is not None:
            _bounded("deprecated", self.deprecated)
            if not self.deprecated.strip():
                raise Invalid("deprecated: give the reason")
        for name in ("created", "valid"):
            if getattr(self, name).tzinfo is None:
                raise Invalid(f"{name}: a time needs its time zone")
        if self.valid <= self.created:
            raise Invalid("valid: the entry would expire before it was created")

    @property
    def identifier(self) -> str:
        return self.checksums.identifier


def _bounded(name: str, value: str) -> None:
    if len(value) > MAX_TEXT:
        raise TooLarge(f"{name}: at most {MAX_TEXT} characters, not {len(value)}")


def _time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime(TIME_FORMAT)


def _sub(parent: etree._Element, ns: str, tag: str, text: str | None = None) -> etree._Element:
    child = etree.SubElement(parent, f"{{{ns}}}{tag}")
    if text is not None:
        child.text = text
    return child


def _resource(parent: etree._Element, ns: str, tag: str) -> etree._Element:
    child = _sub(parent, ns, tag)
    child.set(f"{{{RDF}}}parseType", "Resource")
    return child


def to_element(entry: Entry) -> etree._Element:
    root = etree.Element(f"{{{RDF}}}RDF", nsmap=NSMAP)
    root.set(f"{{{XML_NS}}}base", BASE)
    desc = _sub(root, RDF, "Description")
    desc.set(f"{{{RDF}}}about", "#" + entry.identifier)
    _sub(desc, DCTERMS, "identifier", entry.identifier)
    _sub(desc, SLREQ, "bytes", str(entry.checksums.size))
    for algorithm, value in entry.checksums.by_algorithm().items():
        checksum = _resource(desc, SLREQ, "checksum")
        _sub(checksum, SLREQ, "algorithm", algorithm)
        _sub(checksum, SLREQ, "value", value)
    if entry.endorser is not None:
        endorsement = _resource(desc, SLREQ, "endorsement")
        _sub(endorsement, DCTERMS, "created", _time(entry.endorser.created))
        endorser = _resource(endorsement, SLREQ, "endorser")
        _sub(endorser, SLREQ, "email", entry.endorser.email)
        _sub(endorser, SLREQ, "subject", entry.endorser.subject)
        _sub(endorser, SLREQ, "issuer", entry.endorser.issuer)
    _sub(desc, DCTERMS, "type", entry.kind)
    _sub(desc, DCTERMS, "created", _time(entry.created))
    _sub(desc, DCTERMS, "valid", _time(entry.valid))
    _sub(desc, DCTERMS, "title", entry.title)
    _sub(desc, DCTERMS, "description", entry.description)
    _sub(desc, DCTERMS, "creator", entry.creator)
    _sub(desc, DCTERMS, "format", entry.format)
    for tag in entry.tags:
        _sub(desc, DCTERMS, "alternative", tag)
    _sub(desc, SLTERMS, "os", entry.os)
    _sub(desc, SLTERMS, "os-version", entry.os_version)
    _sub(desc, SLTERMS, "os-arch", entry.os_arch)
    for location in entry.locations:
        _sub(desc, SLTERMS, "location", location)
    if entry.deprecated is not None:
        _sub(desc, SLTERMS, "deprecated", entry.deprecated)
    if entry.replaces is not None:
        _sub(desc, DCTERMS, "replaces", entry.replaces)
    if entry.is_replaced_by is not None:
        _sub(desc, DCTERMS, "isReplacedBy", entry.is_replaced_by)
    return root


def to_xml(entry: Entry) -> bytes:
    """The entry as a UTF-8 XML document (unsigned)."""
    return etree.tostring(to_element(entry), xml_declaration=True, encoding="UTF-8")


def to_json(entry: Entry) -> dict[str, Any]:
    e = entry.endorser
    return {
        "identifier": entry.identifier,
        "bytes": entry.checksums.size,
        "checksums": entry.checksums.by_algorithm(),
        "kind": entry.kind,
        "os": entry.os,
        "os_version": entry.os_version,
        "os_arch": entry.os_arch,
        "format": entry.format,
        "title": entry.title,
        "description": entry.description,
        "creator": entry.creator,
        "created": _time(entry.created),
        "valid": _time(entry.valid),
        "locations": list(entry.locations),
        "tags": list(entry.tags),
        "deprecated": entry.deprecated,
        "replaces": entry.replaces,
        "is_replaced_by": entry.is_replaced_by,
        "endorser": None
        if e is None
        else {
            "email": e.email,
            "subject": e.subject,
            "issuer": e.issuer,
            "created": _time(e.created),
        },
    }


# -- reading --------------------------------------------------------------------------------


_ELEMENT = {
    "os": "slterms:os",
    "os_version": "slterms:os-version",
    "os_arch": "slterms:os-arch",
    "format": "dcterms:format",
    "title": "dcterms:title",
    "description": "dcterms:description",
    "creator": "dcterms:creator",
    "locations": "slterms:location",
    "tags": "dcterms:alternative",
    "replaces": "dcterms:replaces",
    "is_replaced_by": "dcterms:isReplacedBy",
    "deprecated": "slterms:deprecated",
    "created": "dcterms:created",
    "valid": "dcterms:valid",
}


def _children(parent: etree._Element, ns: str, tag: str) -> list[etree._Element]:
    return parent.findall(f"{{{ns}}}{tag}")


def _one(parent: etree._Element, ns: str, tag: str, *, required: bool = True) -> str | None:
    found = _children(parent, ns, tag)
    label = f"{PREFIX[ns]}:{tag}"
    if len(found) > 1:
        raise Invalid(f"{label}: given {len(found)} times, at most once")
    if not found:
        if required:
            raise Invalid(f"{label}: missing")
        return None
    if len(found[0]):
        raise Invalid(f"{label}: must hold text, not elements")
    text = (found[0].text or "").strip()
    if len(text) > MAX_TEXT:
        raise TooLarge(f"{label}: at most {MAX_TEXT} characters, not {len(text)}")
    return text


def _req(parent: etree._Element, ns: str, tag: str) -> str:
    value = _one(parent, ns, tag)
    assert value is not None
    return value


def _parse_time(label: str, text: str) -> dt.datetime:
    try:
        return dt.datetime.strptime(text, TIME_FORMAT).replace(tzinfo=dt.UTC)
    except ValueError:
        raise Invalid(f"{label}: not a UTC time like 2011-01-24T09:59:42Z: {text[:60]!r}") from None


def description(root: etree._Element) -> etree._Element:
    """The one ``rdf:Description`` of an ``rdf:RDF`` root."""
    if root.tag != f"{{{RDF}}}RDF":
        raise Invalid(f"{element_name(root)}: the root must be rdf:RDF")
    found = _children(root, RDF, "Description")
    if len(found) != 1:
        raise Invalid(f"rdf:Description: an entry has exactly one, not {len(found)}")
    return found[0]


def _checksums(desc: etree._Element) -> Checksums:
    raw = _req(desc, SLREQ, "bytes")
    if not raw.isdigit() or not raw.isascii():
        raise Invalid(f"slreq:bytes: not a whole number of bytes: {raw[:60]!r}")
    values: dict[str, str] = {}
    for checksum in _children(desc, SLREQ, "checksum"):
        algorithm = _req(checksum, SLREQ, "algorithm")
        if algorithm not in _ALGORITHMS:
            raise Invalid(
                f"slreq:algorithm: {algorithm[:40]!r} is not one of {', '.join(_ALGORITHMS)}"
            )
        if _ALGORITHMS[algorithm] in values:
            raise Invalid(f"slreq:checksum: {algorithm} given twice")
        values[_ALGORITHMS[algorithm]] = _req(checksum, SLREQ, "value")
    missing = [a for a, n in _ALGORITHMS.items() if n not in values]
    if missing:
        raise Invalid(f"slreq:checksum: missing {', '.join(missing)}")
    try:
        return Checksums(size=int(raw), **values)
    except Invalid as e:
        raise Invalid(f"slreq:checksum: {e.message}") from None


def _endorser(desc: etree._Element) -> Endorser | None:
    found = _children(desc, SLREQ, "endorsement")
    if len(found) > 1:
        raise Invalid(f"slreq:endorsement: given {len(found)} times, at most once")
    if not found:
        return None
    created = _parse_time("slreq:endorsement/dcterms:created", _req(found[0], DCTERMS, "created"))
    people = _children(found[0], SLREQ, "endorser")
    if len(people) != 1:
        raise Invalid(f"slreq:endorser: an endorsement names exactly one, not {len(people)}")
    who = people[0]
    return Endorser(
        email=_req(who, SLREQ, "email"),
        subject=_req(who, SLREQ, "subject"),
        issuer=_req(who, SLREQ, "issuer"),
        created=created,
    )


def from_element(root: etree._Element) -> Entry:
    desc = description(root)
    sums = _checksums(desc)
    stated = _req(desc, DCTERMS, "identifier")
    if stated != sums.identifier:
        raise Invalid(
            f"dcterms:identifier: {stated[:40]!r} is not the identifier of the entry's SHA-1"
            f" ({sums.identifier})"
        )
    about = desc.get(f"{{{RDF}}}about")
    if about is not None and about != "#" + stated:
        raise Invalid(f"rdf:about: {about[:40]!r} does not name the entry's identifier")
    many = {
        n: [(e.text or "").strip() for e in _children(desc, ns, t)]
        for n, ns, t in (("locations", SLTERMS, "location"), ("tags", DCTERMS, "alternative"))
    }
    try:
        return Entry(
            checksums=sums,
            kind=_one(desc, DCTERMS, "type", required=False) or "machine",
            os=_req(desc, SLTERMS, "os"),
            os_version=_req(desc, SLTERMS, "os-version"),
            os_arch=_req(desc, SLTERMS, "os-arch"),
            format=_req(desc, DCTERMS, "format"),
            title=_req(desc, DCTERMS, "title"),
            description=_one(desc, DCTERMS, "description", required=False) or "",
            creator=_req(desc, DCTERMS, "creator"),
            created=_parse_time("dcterms:created", _req(desc, DCTERMS, "created")),
            valid=_parse_time("dcterms:valid", _req(desc, DCTERMS, "valid")),
            locations=tuple(many["locations"]),
            tags=tuple(many["tags"]),
            deprecated=_one(desc, SLTERMS, "deprecated", required=False),
            replaces=_one(desc, DCTERMS, "replaces", required=False),
            is_replaced_by=_one(desc, DCTERMS, "isReplacedBy", required=False),
            endorser=_endorser(desc),
        )
    except Invalid as e:
        head, _, rest = e.message.partition(":")
        if head in _ELEMENT:
            raise type(e)(f"{_ELEMENT[head]}:{rest}") from None
        raise


def from_xml(data: bytes) -> Entry:
    """Read an entry (signed or not: the signature is not checked here, see signing.verify)."""
    return from_element(parse(data))
