"""Signed entries to upload, dated from today (the store checks certificates against the real
clock), by people of one CA, and a store of each kind to keep them in."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from stratuslab.cloud.marketplace.entry import to_xml
from stratuslab.cloud.marketplace.identifier import checksums
from stratuslab.cloud.marketplace.signing import sign
from tests.api.stores import database
from tests.cloud.marketplace.support import NOW, Party, an_entry, make_ca, make_person

CA = make_ca("Marketplace Test CA")
JANE = make_person(CA, "Jane Tester", san_email="jane@example.org")
JOHN = make_person(CA, "John Doe", subject_email="john@example.org")
# Valid from NOW - 30 days to NOW - 1 day: it signed while valid, it is expired today.
OLD = make_person(
    CA, "Old Timer", san_email="old@example.org", not_after=NOW - dt.timedelta(days=1)
)
TODAY = dt.datetime.now(dt.UTC).replace(microsecond=0)


def image(seed: str) -> bytes:
    return f"the bytes of image {seed}".encode() * 100


def signed(
    who: Party,
    *,
    minutes_ago: int = 10,
    seed: str = "webapp",
    when: dt.datetime | None = None,
    **changes: object,
) -> bytes:
    """An entry of image ``seed``, valid for 180 days from today, endorsed by ``who``
    ``minutes_ago`` minutes ago (or ``when``)."""
    fields: dict[str, object] = {
        "checksums": checksums(io.BytesIO(image(seed))),
        "created": TODAY - dt.timedelta(days=1),
        "valid": TODAY + dt.timedelta(days=180),
    }
    fields.update(changes)
    endorsed = when or TODAY - dt.timedelta(minutes=minutes_ago)
    return sign(to_xml(an_entry(**fields)), who.cert_pem, who.key_pem, now=endorsed)


def identifier_of(seed: str) -> str:
    return checksums(io.BytesIO(image(seed))).identifier


def sha256_of(seed: str) -> str:
    return checksums(io.BytesIO(image(seed))).sha256


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def both_stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty store: SQLite, and PostgreSQL where CI has it."""
    with database(request.param, tmp_path) as url:
        yield url
