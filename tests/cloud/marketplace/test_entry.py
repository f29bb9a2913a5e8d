from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from stratuslab.cloud.marketplace.entry import Endorser, from_xml, to_json, to_xml
from stratuslab.cloud.marketplace.xmlsafe import MAX_DEPTH, MAX_XML
from stratuslab.errors import Invalid, TooLarge
from tests.cloud.marketplace.support import NOW, an_entry


def test_an_entry_goes_to_xml_and_back_unchanged() -> None:
    entry = an_entry(
        deprecated="security issue with app",
        replaces="MMZu9WvwKIro-rtBQfDk4PsKO7_",
        is_replaced_by="NMZu9WvwKIro-rtBQfDk4PsKO7_",
        endorser=Endorser("jane@example.org", "CN=Jane", "CN=CA", NOW),
    )
    assert from_xml(to_xml(entry)) == entry


def test_the_xml_is_in_stratuslabs_shape() -> None:
    xml = to_xml(an_entry()).decode()
    entry = an_entry()
    for needle in (
        'xmlns:slreq="http://mp.stratuslab.eu/slreq#"',
        'xmlns:slterms="http://mp.stratuslab.eu/slterms#"',
        'xmlns:dcterms="http://purl.org/dc/terms/"',
        'xml:base="http://mp.stratuslab.eu/"',
        f'<rdf:Description rdf:about="#{entry.identifier}">',
        f"<dcterms:identifier>{entry.identifier}</dcterms:identifier>",
        f"<slreq:bytes>{entry.checksums.size}</slreq:bytes>",
        '<slreq:checksum rdf:parseType="Resource"><slreq:algorithm>SHA-1</slreq:algorithm>'
        f"<slreq:value>{entry.checksums.sha1}</slreq:value></slreq:checksum>",
        "<slterms:os-version>12</slterms:os-version>",
        "<dcterms:alternative>nginx</dcterms:alternative>",
        "Debian 12 with nginx &amp; &lt;friends&gt;",
    ):
        assert needle in xml


def stratuslab_sample(os_lines: str = "<slterms:os>ttylinux</slterms:os>") -> bytes:
    """A document in the shape of StratusLab's own valid-full.xml, with all four checksums."""
    e = an_entry()
    sums = "".join(
        f'<slreq:checksum rdf:parseType="Resource"><slreq:algorithm>{a}</slreq:algorithm>'
        f"<slreq:value>{v}</slreq:value></slreq:checksum>"
        for a, v in e.checksums.by_algorithm().items()
    )
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
  xmlns:dcterms="http://purl.org/dc/terms/" xmlns:slreq="http://mp.stratuslab.eu/slreq#"
  xmlns:slterms="http://mp.stratuslab.eu/slterms#" xml:base="http://mp.stratuslab.eu/"
  xmlns:ex="http://example.org/">
 <rdf:Description rdf:about="#{e.identifier}">
  <dcterms:identifier>{e.identifier}</dcterms:identifier>
  <slreq:bytes>{e.checksums.size}</slreq:bytes>
  {sums}
  <slreq:endorsement rdf:parseType="Resource">
   <dcterms:created>2011-01-24T09:59:42Z</dcterms:created>
   <slreq:endorser rdf:parseType="Resource">
    <slreq:email>hackers@example.org</slreq:email>
    <slreq:subject>CN=Jane Tester,OU=Testing Department,O=StratusLab Project,C=EU</slreq:subject>
    <slreq:issuer>CN=Jane Tester,OU=Testing Department,O=StratusLab Project,C=EU</slreq:issuer>
   </slreq:endorser>
  </slreq:endorsement>
  <dcterms:type>machine</dcterms:type>
  <dcterms:created>2011-01-24T09:59:42Z</dcterms:created>
  <dcterms:valid>2011-07-23T10:59:42Z</dcterms:valid>
  <dcterms:publisher>StratusLab</dcterms:publisher>
  <dcterms:title>linux-with-my-apps</dcterms:title>
  <dcterms:description>A 32-bit ttylinux...</dcterms:description>
  <dcterms:creator>Jane Tester</dcterms:creator>
  <dcterms:format>raw</dcterms:format>
  <slterms:location>http://example.org/...</slterms:location>
  <slterms:hypervisor>kvm</slterms:hypervisor>
  <slterms:inbound-port>443</slterms:inbound-port>
  {os_lines}
  <slterms:os-version>9.7</slterms:os-version>
  <slterms:os-arch>i486</slterms:os-arch>
  <slterms:deprecated>security issue with app</slterms:deprecated>
  <ex:other-info>additional metadata</ex:other-info>
 </rdf:Description>
</rdf:RDF>
""".encode()


def test_a_document_in_stratuslabs_shape_is_read() -> None:
    entry = from_xml(stratuslab_sample())
    assert (entry.os, entry.os_version, entry.os_arch) == ("ttylinux", "9.7", "i486")
    assert entry.deprecated == "security issue with app"
    assert entry.valid == dt.datetime(2011, 7, 23, 10, 59, 42, tzinfo=dt.UTC)
    assert entry.endorser is not None
    assert entry.endorser.email == "hackers@example.org"
    assert entry.locations == ("http://example.org/...",)
    assert to_json(entry)["identifier"] == an_entry().identifier


def test_one_of_each_single_valued_element() -> None:
    twice = "<slterms:os>a</slterms:os><slterms:os>b</slterms:os>"
    with pytest.raises(Invalid, match="slterms:os: given 2 times, at most once"):
        from_xml(stratuslab_sample(twice))
    with pytest.raises(Invalid, match="slterms:os: missing"):
        from_xml(stratuslab_sample(""))


def test_the_identifier_must_be_the_sha1s() -> None:
    other = "MMZu9WvwKIro-rtBQfDk4PsKO7_"
    data = stratuslab_sample().replace(an_entry().identifier.encode(), other.encode())
    with pytest.raises(Invalid, match=r"dcterms:identifier: .* is not the identifier of"):
        from_xml(data)


def test_a_bad_checksum_or_time_names_its_element() -> None:
    sha1 = an_entry().checksums.sha1.encode()
    with pytest.raises(Invalid, match="slreq:checksum: sha1 must be 40"):
        from_xml(stratuslab_sample().replace(sha1, sha1[:-2]))
    data = stratuslab_sample().replace(b"2011-07-23T10:59:42Z", b"next summer")
    with pytest.raises(Invalid, match="dcterms:valid: not a UTC time"):
        from_xml(data)


def test_entry_checks_name_the_element_when_read() -> None:
    data = stratuslab_sample().replace(
        b"<dcterms:format>raw</dcterms:format>",
        b"<dcterms:format>raw</dcterms:format>" + b"<dcterms:alternative> </dcterms:alternative>",
    )
    with pytest.raises(Invalid, match="dcterms:alternative: an empty value"):
        from_xml(data)


def test_dtds_and_entities_are_refused() -> None:
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "ha"><!ENTITY b "&a;&a;&a;&a;">]>'
        b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">&b;</rdf:RDF>'
    )
    with pytest.raises(Invalid, match="declares a DTD"):
        from_xml(laughs)
    external = (
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>'
    )
    with pytest.raises(Invalid, match="declares a DTD"):
        from_xml(external)


def test_size_depth_and_syntax_are_bounded() -> None:
    with pytest.raises(TooLarge, match=f"at most {MAX_XML} bytes"):
        from_xml(b"<r>" + b" " * MAX_XML + b"</r>")
    deep = b"<a>" * (MAX_DEPTH + 1) + b"</a>" * (MAX_DEPTH + 1)
    with pytest.raises(Invalid, match=f"a: nested deeper than {MAX_DEPTH} levels"):
        from_xml(deep)
    with pytest.raises(Invalid, match="not well-formed XML"):
        from_xml(b"<rdf:RDF")
    with pytest.raises(Invalid, match="the root must be rdf:RDF"):
        from_xml(b"<r/>")


def test_entry_refuses_bad_values() -> None:
    with pytest.raises(Invalid, match="expire before it was created"):
        an_entry(valid=NOW - dt.timedelta(days=2))
    with pytest.raises(Invalid, match="replaces: not a Marketplace identifier"):
        an_entry(replaces="nope")
    with pytest.raises(Invalid, match="deprecated: give the reason"):
        an_entry(deprecated=" ")
    with pytest.raises(TooLarge, match="tags: at most 32"):
        an_entry(tags=tuple(f"t{i}" for i in range(33)))
    with pytest.raises(TooLarge, match="title: at most 4096 characters"):
        an_entry(title="x" * 4097)


def test_to_json_says_everything_a_client_shows() -> None:
    entry = dataclasses.replace(an_entry(), deprecated="old")
    got = to_json(entry)
    assert got["identifier"] == entry.identifier
    assert got["bytes"] == entry.checksums.size
    assert got["checksums"]["SHA-512"] == entry.checksums.sha512
    assert got["valid"] == "2026-10-28T12:00:00Z"
    assert got["tags"] == ["webapp", "nginx"]
    assert got["deprecated"] == "old"
    assert got["endorser"] is None
