"""The Marketplace's REST resource as StratusLab served it, on both stores: anybody reads, a user
uploads; XML by default (one entry byte for byte as signed, a list under ``<metadata>``), JSON
when asked; every refusal says why."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from lxml import etree

from stratuslab.cloud.marketplace import signing
from stratuslab.cloud.marketplace.xmlsafe import MAX_XML
from stratuslab.principal import SERVER, Principal
from stratuslab.services import Services
from tests.cloud.marketplace.support import NOW
from tests.cloud.marketplace.uploads import (
    CA,
    JANE,
    JOHN,
    OLD,
    TODAY,
    identifier_of,
    signed,
)

ID = identifier_of("webapp")
XML = {"Content-Type": "application/xml"}
JSON = {"Accept": "application/json"}


def stamp(when: dt.datetime) -> str:
    return f"{when:%Y-%m-%dT%H:%M:%SZ}"


@pytest.fixture
def alice(api: TestClient) -> TestClient:
    """A user of the site (not an administrator), with an API key."""
    services: Services = api.app.state.services  # type: ignore[attr-defined]
    services.accounts.add_user("alice", caller=SERVER, password="correct horse")
    key = services.credentials.create_key(caller=Principal.for_user("alice"))
    return TestClient(api.app, headers={"Authorization": f"Bearer {key['token']}"})


@pytest.fixture
def anybody(api: TestClient) -> TestClient:
    return TestClient(api.app)  # no credentials at all: another site, a browser


def error(answer: Any) -> str:
    message: str = answer.json()["error"]["message"]
    return message


def test_a_user_uploads_and_anybody_reads_it_back_byte_for_byte(
    alice: TestClient, anybody: TestClient
) -> None:
    xml = signed(JANE, minutes_ago=5)
    refused = anybody.post("/metadata", content=xml, headers=XML)
    assert refused.status_code == 401 and "log in first" in error(refused)

    answer = alice.post("/metadata", content=xml, headers=XML)
    assert answer.status_code == 201, answer.text
    where = f"/metadata/{ID}/jane@example.org/{stamp(TODAY - dt.timedelta(minutes=5))}"
    assert answer.headers["location"] == where
    assert answer.content == xml

    shown = anybody.get(where)
    assert shown.status_code == 200
    assert shown.headers["content-type"] == "application/xml"
    assert shown.content == xml
    assert signing.verify(shown.content, trusted_cas=[CA.cert_pem]).trusted
    assert anybody.get(f"/metadata/{ID}/jane@example.org").content == xml

    for how in ({"headers": JSON}, {"params": {"media": "json"}}):
        got = anybody.get(where, **how)  # type: ignore[arg-type]
        assert got.headers["content-type"] == "application/json"
        body = got.json()
        assert (body["identifier"], body["href"], body["deprecated"]) == (ID, where, None)
        assert body["endorser"]["email"] == "jane@example.org"
        assert body["endorser"]["subject"] == "CN=Jane Tester,O=StratusLab Project,C=EU"
        assert body["checksums"]["SHA-1"] and body["uploaded_at"]
        assert body["expired"] is False


def test_a_list_is_stratuslabs_metadata_root_holding_each_signed_entry(
    alice: TestClient, anybody: TestClient
) -> None:
    mine = signed(JANE, minutes_ago=5)
    theirs = signed(JOHN, minutes_ago=3)
    other = signed(JOHN, seed="other", os="centos", tags=("hpc",))
    for xml in (mine, theirs, other):
        assert alice.post("/metadata", content=xml, headers=XML).status_code == 201
    listed = anybody.get("/metadata")
    assert listed.status_code == 200 and listed.headers["content-type"] == "application/xml"
    root = etree.fromstring(listed.content)
    assert root.tag == "metadata" and len(root) == 3
    for xml in (mine, theirs, other):
        body = xml.split(b"?>", 1)[1].strip()
        assert body in listed.content  # each as signed
    for child in root:
        assert signing.verify(etree.tostring(child), trusted_cas=[CA.cert_pem]).trusted

    of_image = anybody.get(f"/metadata/{ID}", headers=JSON).json()
    assert [e["endorser"]["email"] for e in of_image] == ["john@example.org", "jane@example.org"]
    assert [e["identifier"] for e in anybody.get("/metadata?os=centos&media=json").json()] == [
        identifier_of("other")
    ]
    assert len(anybody.get("/metadata", params={"q": "HPC", "media": "json"}).json()) == 1
    assert len(anybody.get("/metadata?email=jane@example.org&media=json").json()) == 1
    assert len(anybody.get("/metadata?limit=1&offset=2&media=json").json()) == 1


def test_deprecated_and_expired_entries_show_only_when_asked(
    alice: TestClient, anybody: TestClient
) -> None:
    alice.post("/metadata", content=signed(JANE, minutes_ago=5), headers=XML)
    gone = signed(JANE, minutes_ago=1, deprecated="security issue with app")
    alice.post("/metadata", content=gone, headers=XML)
    old = signed(JOHN, seed="old", valid=TODAY - dt.timedelta(hours=1))
    alice.post("/metadata", content=old, headers=XML)

    def listed(query: str) -> list[tuple[str, Any]]:
        rows = anybody.get(f"/metadata?media=json{query}").json()
        return [(r["identifier"], r["deprecated"] or r["expired"]) for r in rows]

    assert listed("") == []
    assert listed("&deprecated=true") == [(ID, "security issue with app")]
    assert listed("&expired=true") == [(identifier_of("old"), True)]
    assert anybody.get(f"/metadata/{ID}/jane@example.org").content == gone


def test_refusals_say_why_and_none_is_a_5xx(alice: TestClient, anybody: TestClient) -> None:
    first = alice.post("/metadata", content=signed(JANE, minutes_ago=5), headers=XML)
    assert first.status_code == 201
    older = alice.post("/metadata", content=signed(JANE, minutes_ago=9), headers=XML)
    assert older.status_code == 409
    assert error(older) == (
        f"the entry of {ID} endorsed by jane@example.org at"
        f" {stamp(TODAY - dt.timedelta(minutes=9))} is not newer than the latest one kept,"
        f" endorsed at {stamp(TODAY - dt.timedelta(minutes=5))}"
    )
    tampered = signed(JOHN).replace(b"webapp-base", b"webapp-evil")
    answer = alice.post("/metadata", content=tampered, headers=XML)
    assert answer.status_code == 403
    assert "the entry was changed after it was signed" in error(answer)
    expired = alice.post("/metadata", content=signed(OLD, when=NOW - dt.timedelta(days=5)))
    assert expired.status_code == 403 and "expired on" in error(expired)
    bad = alice.post("/metadata", content=b"<not xml", headers=XML)
    assert bad.status_code == 422 and "not well-formed XML" in error(bad)
    huge = alice.post("/metadata", content=b"<r>" + b" " * MAX_XML + b"</r>", headers=XML)
    assert huge.status_code == 413

    for path, status, words in (
        ("/metadata/nope", 422, "'nope' is not a Marketplace identifier"),
        (f"/metadata/{'A' * 27}", 404, f"no entry of {'A' * 27}"),
        (f"/metadata/{ID}/jane", 422, "'jane' is not an e-mail address"),
        (f"/metadata/{ID}/john@example.org", 404, "no entry of"),
        (f"/metadata/{ID}/jane@example.org/yesterday", 422, "not an endorsement time"),
        (f"/metadata/{ID}/jane@example.org/2020-01-01T00:00:00Z", 404, "endorsed at 2020"),
        ("/endorsers/nobody@example.org", 404, "has endorsed no entry"),
        ("/tag/jane@example.org/nothing", 404, "has tagged no entry 'nothing'"),
        ("/metadata?limit=501", 422, "limit"),
        ("/metadata?media=yaml", 422, "media"),
        (f"/metadata/{ID}/{'x' * 300}@example.org", 422, "email"),
    ):
        got = anybody.get(path)
        assert (got.status_code, words in error(got)) == (status, True), (path, got.text)


def test_an_upload_as_a_multipart_form_as_stratuslabs_client_sent_it(alice: TestClient) -> None:
    xml = signed(JANE)
    answer = alice.post("/metadata", files={"metadata": ("entry.xml", xml, "application/xml")})
    assert answer.status_code == 201, answer.text
    assert answer.content == xml
    two = alice.post(
        "/metadata",
        files={"a": ("a.xml", xml, "application/xml"), "b": ("b.xml", xml, "application/xml")},
    )
    assert two.status_code == 422 and "fields here: 'a', 'b'" in error(two)


def test_endorsers_and_tags(alice: TestClient, anybody: TestClient) -> None:
    alice.post("/metadata", content=signed(JANE, minutes_ago=5, tags=("web",)), headers=XML)
    later = signed(JANE, seed="b", minutes_ago=2, tags=("web", "nginx"))
    alice.post("/metadata", content=later, headers=XML)
    alice.post("/metadata", content=signed(JOHN, seed="c"), headers=XML)

    listed = anybody.get("/endorsers", headers=JSON).json()
    assert [(e["email"], e["images"]) for e in listed] == [
        ("jane@example.org", 2),
        ("john@example.org", 1),
    ]
    assert b"<email>jane@example.org</email>" in anybody.get("/endorsers").content
    jane = anybody.get("/endorsers/jane@example.org?media=json").json()
    assert jane["subject"] == "CN=Jane Tester,O=StratusLab Project,C=EU"
    assert [e["identifier"] for e in jane["entries"]] == [identifier_of("b"), ID]
    assert anybody.get(f"/tag/jane@example.org/{quote('web')}").content == later
