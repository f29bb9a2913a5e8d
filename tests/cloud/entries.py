"""Signed Marketplace entries for images the import tests serve, valid from now."""

from __future__ import annotations

import datetime as dt
import io

from stratuslab.cloud.marketplace import signing
from stratuslab.cloud.marketplace.entry import to_xml
from stratuslab.cloud.marketplace.identifier import checksums
from tests.cloud.marketplace.support import an_entry, make_ca, make_person

_CA = make_ca("Import Test CA")
ENDORSER = make_person(
    _CA,
    "Jane Endorser",
    san_email="jane@example.org",
    not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=365),
)


def signed_entry(data: bytes, **changes: object) -> bytes:
    """The XML of an entry describing ``data``, signed by Jane, valid for 30 days."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    fields: dict[str, object] = {
        "checksums": checksums(io.BytesIO(data)),
        "created": now - dt.timedelta(days=1),
        "valid": now + dt.timedelta(days=30),
    }
    fields.update(changes)
    entry = an_entry(**fields)
    return signing.sign(to_xml(entry), ENDORSER.cert_pem, ENDORSER.key_pem, now=now)
