"""The Marketplace's reads: what a listing or a search is asked, turned into SQL that both
stores (SQLite and PostgreSQL) answer exactly, and the checks of what a caller names.

Every read is bounded (at most ``MAX_LIMIT`` entries a page) and works on the columns of the
records; the signed XML is read only when the caller asks for it.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sqlalchemy import JSON, ColumnElement, Select, String, and_, cast, exists, func, or_, select
from sqlalchemy import column as sql_column
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection

from stratuslab.cloud.marketplace.entry import TIME_FORMAT
from stratuslab.cloud.marketplace.identifier import IDENTIFIER_RE
from stratuslab.cloud.marketplace.stored import Stored, from_row
from stratuslab.db.marketplace_models import MarketplaceEntryRecord as E
from stratuslab.errors import Invalid, TooLarge

MAX_LIMIT = 500  # entries in one page of a listing
MAX_OFFSET = 1_000_000
MAX_QUERY = 200  # characters of a search's text, an os or a tag asked for
MAX_EMAIL = 254  # RFC 5321's bound on a forward path, and the column's
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

# Every column but the XML, which a listing as JSON and the policy never need.
COLUMNS = [c for c in E.__table__.columns if c.name != "xml"]
WITH_XML = [*COLUMNS, E.__table__.c.xml]


def identifier(value: str) -> str:
    if not IDENTIFIER_RE.fullmatch(value):
        raise Invalid(
            f"{value[:60]!r} is not a Marketplace identifier (27 characters of A-Z a-z 0-9 - _)"
        )
    return value


def email(value: str) -> str:
    if len(value) > MAX_EMAIL:
        raise Invalid(f"an e-mail address is at most {MAX_EMAIL} characters, not {len(value)}")
    if "@" not in value or any(c.isspace() or not c.isprintable() for c in value):
        raise Invalid(f"{value[:60]!r} is not an e-mail address")
    return value


def endorsed(value: str) -> dt.datetime:
    try:
        return dt.datetime.strptime(value, TIME_FORMAT).replace(tzinfo=dt.UTC)
    except ValueError:
        raise Invalid(
            f"{value[:40]!r} is not an endorsement time like 2026-05-01T12:00:00Z (UTC)"
        ) from None


def is_sha256(value: str) -> bool:
    """Whether ``value`` is a SHA-256 as entries give it: what an LXD image's fingerprint is,
    and a public cloud's image id (an AMI's) is not."""
    return bool(_SHA256.match(value))


def sha256(value: str) -> str:
    if not _SHA256.match(value):
        raise Invalid(f"{value[:80]!r} is not a SHA-256 (64 lowercase hexadecimal digits)")
    return value


def page(limit: int, offset: int) -> tuple[int, int]:
    if not 1 <= limit <= MAX_LIMIT:
        raise Invalid(f"limit: between 1 and {MAX_LIMIT}, not {limit}")
    if not 0 <= offset <= MAX_OFFSET:
        raise Invalid(f"offset: between 0 and {MAX_OFFSET}, not {offset}")
    return limit, offset


def bounded(name: str, value: str) -> str:
    if len(value) > MAX_QUERY:
        raise TooLarge(f"{name}: at most {MAX_QUERY} characters, not {len(value)}")
    return value


def entries(with_xml: bool = False) -> Select[Any]:
    return select(*(WITH_XML if with_xml else COLUMNS))


def fetch(conn: Connection, query: Select[Any]) -> list[Stored]:
    return [from_row(row) for row in conn.execute(query).mappings()]


def newest_first(query: Select[Any]) -> Select[Any]:
    return query.order_by(E.endorsed_at.desc(), E.id.desc())


def matching(
    dialect: str,
    *,
    text: str | None,
    os: str | None,
    email_is: str | None,
    tag: str | None,
    include_deprecated: bool,
    include_expired: bool,
    now: dt.datetime,
) -> list[ColumnElement[bool]]:
    """The conditions of a search over each endorser's latest entry of each image."""
    found: list[ColumnElement[bool]] = [E.current.is_(True)]
    if text:
        pattern = "%" + _like(bounded("q", text).lower()) + "%"
        found.append(
            or_(
                *(
                    func.lower(column).like(pattern, escape="\\")
                    for column in (E.title, E.description, E.os, E.creator, cast(E.tags, String))
                ),
                E.identifier == text,
            )
        )
    if os:
        found.append(func.lower(E.os) == bounded("os", os).lower())
    if email_is:
        found.append(E.email == email(email_is))
    if tag:
        found.append(has_tag(dialect, bounded("tag", tag)))
    if not include_deprecated:
        found.append(E.deprecated.is_(None))
    if not include_expired:
        found.append(E.valid > now)
    return found


def has_tag(dialect: str, tag: str) -> ColumnElement[bool]:
    """Whether an entry's tags hold ``tag``, exactly: SQLite reads the JSON list with
    ``json_each``, PostgreSQL with JSONB containment."""
    if dialect == "postgresql":
        return cast(E.tags, JSONB).contains([tag])
    each = func.json_each(E.tags).table_valued(sql_column("value", JSON))
    return exists(select(1).select_from(each).where(each.c.value == tag))


def _like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def latest_of(identifier_is: str, email_is: str | None) -> Select[Any]:
    conditions = [E.identifier == identifier_is, E.current.is_(True)]
    if email_is is not None:
        conditions.append(E.email == email_is)
    return newest_first(entries(with_xml=True).where(and_(*conditions))).limit(1)
