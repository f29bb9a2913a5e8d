"""The Marketplace's store, on SQLite and PostgreSQL: uploads verified and kept as they came,
an older entry refused, a newer one deprecating, searches, and the policy's look-up."""

from __future__ import annotations

import base64
import datetime as dt

import pytest

from stratuslab.cloud.marketplace import signing
from stratuslab.cloud.marketplace.store import Marketplace
from stratuslab.db.session import engine_for
from stratuslab.errors import CapacityExceeded, Conflict, Forbidden, Invalid, NotFound, TooLarge
from stratuslab.principal import Principal
from tests.cloud.marketplace.support import NOW
from tests.cloud.marketplace.uploads import (
    CA,
    JANE,
    JOHN,
    OLD,
    TODAY,
    both_stores,  # noqa: F401  (a fixture)
    identifier_of,
    sha256_of,
    signed,
)

ALICE = Principal.for_user("alice")
ID = identifier_of("webapp")


@pytest.fixture
def market(both_stores: str) -> Marketplace:  # noqa: F811
    return Marketplace(engine_for(both_stores), max_entries=5)


def test_an_upload_is_kept_as_it_came_and_read_back_by_its_address(market: Marketplace) -> None:
    xml = signed(JANE, minutes_ago=5)
    stored = market.upload(principal=ALICE, xml=xml)
    when = TODAY - dt.timedelta(minutes=5)
    assert (stored.identifier, stored.endorser.email, stored.endorser.created) == (
        ID,
        "jane@example.org",
        when,
    )
    assert stored.href == f"/metadata/{ID}/jane@example.org/{when:%Y-%m-%dT%H:%M:%SZ}"
    for got in (
        market.latest(ID),
        market.latest(ID, "jane@example.org"),
        market.entry(ID, "jane@example.org", when),
        market.entry(ID, "jane@example.org", f"{when:%Y-%m-%dT%H:%M:%SZ}"),
    ):
        assert got.xml == xml  # byte for byte: anyone can verify it again
        assert got.entry == stored.entry
        assert got.current
    again = signing.verify(market.latest(ID).xml or b"", trusted_cas=[CA.cert_pem])
    assert again.trusted and again.entry == stored.entry


def test_an_entry_not_newer_than_the_latest_by_its_endorser_is_refused(
    market: Marketplace,
) -> None:
    market.upload(principal=ALICE, xml=signed(JANE, minutes_ago=5))
    for older in (5, 6):
        with pytest.raises(Conflict) as refused:
            market.upload(principal=ALICE, xml=signed(JANE, minutes_ago=older, title="older"))
        latest = f"{TODAY - dt.timedelta(minutes=5):%Y-%m-%dT%H:%M:%SZ}"
        mine = f"{TODAY - dt.timedelta(minutes=older):%Y-%m-%dT%H:%M:%SZ}"
        assert refused.value.message == (
            f"the entry of {ID} endorsed by jane@example.org at {mine} is not newer than the"
            f" latest one kept, endorsed at {latest}"
        )
    market.upload(principal=ALICE, xml=signed(JOHN, minutes_ago=9))  # another endorser: fine
    newer = market.upload(principal=ALICE, xml=signed(JANE, minutes_ago=1, title="newer"))
    assert market.latest(ID, "jane@example.org").entry.title == "newer"
    assert [s.endorser.email for s in market.entries(ID)] == [
        "jane@example.org",
        "john@example.org",
    ]
    history = market.entries(ID, history=True)
    assert [(s.entry.title, s.current) for s in history] == [
        ("newer", True),
        ("webapp-base", False),
        ("webapp-base", True),
    ]
    assert newer.current


def test_a_tampered_entry_and_an_expired_certificate_are_refused_with_the_signatures_word(
    market: Marketplace,
) -> None:
    tampered = signed(JANE).replace(b"webapp-base", b"webapp-evil")
    with pytest.raises(Forbidden, match="refuses this entry: the entry was changed after it"):
        market.upload(principal=ALICE, xml=tampered)
    while_valid = signed(OLD, when=NOW - dt.timedelta(days=5))
    with pytest.raises(Forbidden, match=r"certificate \(CN=Old Timer.*\) expired on"):
        market.upload(principal=ALICE, xml=while_valid)
    with pytest.raises(Invalid, match="not well-formed XML"):
        market.upload(principal=ALICE, xml=b"<rdf:RDF")
    with pytest.raises(TooLarge):
        market.upload(principal=ALICE, xml=b" " * (1 << 20) + b"<r/>")
    with pytest.raises(Forbidden, match="may not upload"):
        market.upload(principal=Principal.for_node("run", "web.1"), xml=signed(JANE))
    with pytest.raises(NotFound):
        market.latest(ID)


def test_a_newer_entry_deprecates_and_searches_leave_it_out_unless_asked(
    market: Marketplace,
) -> None:
    market.upload(principal=ALICE, xml=signed(JANE, minutes_ago=5))
    market.upload(principal=ALICE, xml=signed(JOHN, seed="other", os="centos", tags=("hpc",)))
    assert {s.identifier for s in market.search()} == {ID, identifier_of("other")}
    market.upload(
        principal=ALICE, xml=signed(JANE, minutes_ago=1, deprecated="security issue with app")
    )
    assert [s.identifier for s in market.search()] == [identifier_of("other")]
    shown = market.search(include_deprecated=True)
    assert [(s.identifier, s.entry.deprecated) for s in shown] == [
        (ID, "security issue with app"),
        (identifier_of("other"), None),
    ]
    assert market.latest(ID).entry.deprecated == "security issue with app"


def test_searches_by_text_os_endorser_and_tag_match_exactly_what_they_say(
    market: Marketplace,
) -> None:
    market.upload(principal=ALICE, xml=signed(JANE, seed="a", title="Big_Data 100%", tags=("bd",)))
    market.upload(principal=ALICE, xml=signed(JANE, seed="b", os="CentOS", tags=('q"webapp',)))
    market.upload(
        principal=ALICE,
        xml=signed(JOHN, seed="c", valid=TODAY - dt.timedelta(hours=1), tags=("webapp",)),
    )

    def ids(**asked: object) -> list[str]:
        return sorted(s.identifier for s in market.search(**asked))  # type: ignore[arg-type]

    a, b, c = identifier_of("a"), identifier_of("b"), identifier_of("c")
    assert ids() == sorted([a, b])  # c has expired
    assert ids(include_expired=True) == sorted([a, b, c])
    assert ids(text="big_data 100%") == [a]
    assert ids(text="G_D") == [a] and ids(text="g%d") == []  # LIKE's wildcards are literal
    assert ids(text=b) == [b]
    assert ids(os="centos") == [b]
    assert ids(email="john@example.org", include_expired=True) == [c]
    assert ids(tag="webapp", include_expired=True) == [c]  # not b's q"webapp
    assert ids(tag='q"webapp') == [b]
    assert ids(text="webapp") == [b]  # its title webapp-base, its tag
    assert market.tagged("john@example.org", "webapp").identifier == c
    with pytest.raises(NotFound, match="has tagged no entry 'nginx'"):
        market.tagged("john@example.org", "nginx")
    assert [s.identifier for s in market.search(include_expired=True, limit=1, offset=1)] == [b]


def test_endorsers_are_listed_by_email_with_what_they_endorse(market: Marketplace) -> None:
    market.upload(principal=ALICE, xml=signed(JANE, seed="a", minutes_ago=5))
    market.upload(principal=ALICE, xml=signed(JANE, seed="a", minutes_ago=3))
    market.upload(principal=ALICE, xml=signed(JANE, seed="b", minutes_ago=4))
    market.upload(principal=ALICE, xml=signed(JOHN, seed="a"))
    listed = [(e.email, e.images, e.uploads) for e in market.endorsers()]
    assert listed == [("jane@example.org", 2, 3), ("john@example.org", 1, 1)]
    jane = market.endorser("jane@example.org")
    assert jane.subject == "CN=Jane Tester,O=StratusLab Project,C=EU"
    assert jane.latest == TODAY - dt.timedelta(minutes=3)
    with pytest.raises(NotFound, match=r"nobody@example\.org has endorsed no entry"):
        market.endorser("nobody@example.org")


def test_the_policy_gets_each_endorsers_latest_endorsement_of_an_image_by_its_sha256(
    market: Marketplace,
) -> None:
    market.upload(principal=ALICE, xml=signed(JANE, minutes_ago=5))
    latest = signed(JANE, minutes_ago=2, deprecated="old")
    market.upload(principal=ALICE, xml=latest)
    market.upload(principal=ALICE, xml=signed(JOHN, minutes_ago=3))
    market.upload(principal=ALICE, xml=signed(JOHN, seed="other"))
    found = market.endorsements(sha256_of("webapp"))
    assert [(v.email, v.entry.deprecated) for v in found] == [
        ("jane@example.org", "old"),
        ("john@example.org", None),
    ]
    again = signing.verify(latest, trusted_cas=None)
    assert found[0] == again  # what verify said at upload, rebuilt from the columns
    assert found[0].certificates[0] == base64.b64decode(
        JANE.cert_pem.split(b"-----")[2].replace(b"\n", b"")
    )
    assert market.endorsements("0" * 64) == []
    with pytest.raises(Invalid, match="not a SHA-256"):
        market.endorsements("ABC")


def test_one_user_may_upload_at_most_max_entries(market: Marketplace) -> None:
    for minutes in range(5):
        market.upload(principal=ALICE, xml=signed(JANE, minutes_ago=10 - minutes))
    with pytest.raises(CapacityExceeded, match="alice has uploaded 5 Marketplace entries"):
        market.upload(principal=ALICE, xml=signed(JANE, minutes_ago=1))
    market.upload(principal=Principal.for_user("bob"), xml=signed(JANE, minutes_ago=1))


def test_what_a_caller_names_is_checked_and_what_is_missing_is_not_found(
    market: Marketplace,
) -> None:
    market.upload(principal=ALICE, xml=signed(JANE))
    with pytest.raises(Invalid, match="'nope' is not a Marketplace identifier"):
        market.entries("nope")
    with pytest.raises(Invalid, match="'jane' is not an e-mail address"):
        market.latest(ID, "jane")
    with pytest.raises(Invalid, match="is not an endorsement time like"):
        market.entry(ID, "jane@example.org", "yesterday")
    with pytest.raises(NotFound, match=f"no entry of {ID} by john@example.org"):
        market.latest(ID, "john@example.org")
    with pytest.raises(NotFound, match="endorsed at 2020-01-01T00:00:00Z"):
        market.entry(ID, "jane@example.org", "2020-01-01T00:00:00Z")
    with pytest.raises(NotFound, match=f"no entry of {'A' * 27}"):
        market.entries("A" * 27)
    with pytest.raises(Invalid, match="limit: between 1 and 500"):
        market.search(limit=501)
    with pytest.raises(TooLarge, match="q: at most 200 characters"):
        market.search(text="x" * 201)
