"""A store of its own, SQLite or PostgreSQL, for a test or a module's shared world.

Each PostgreSQL store is a database of its own on ``STRATUS_TEST_POSTGRES_URL`` (which
`make test` sets), dropped afterwards; a SQLite store is a file under ``root``. Either way the
engine's pooled connections are closed at the end (three descriptors each, test after test).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy
import sqlalchemy.exc
from sqlalchemy.engine import make_url

from stratuslab.db.session import dispose


@contextmanager
def database(kind: str, root: Path) -> Iterator[str]:
    if kind == "sqlite":
        url = f"sqlite:///{root}/data/stratus.db"
        try:
            yield url
        finally:
            dispose(url)
        return
    admin_url = os.environ.get("STRATUS_TEST_POSTGRES_URL")
    if not admin_url:
        pytest.fail(
            "STRATUS_TEST_POSTGRES_URL is not set: `make test` sets it; `make unit` skips these"
        )
    name = f"stratus_test_{secrets.token_hex(4)}"
    admin = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        dispose(url)
        try:
            _drop(admin, name)
        finally:
            admin.dispose()


def _drop(admin: sqlalchemy.Engine, name: str) -> None:
    """Drop a test database. FORCE ends our own connections to it, but a role such as
    autovacuum's it may not end ("must be a member of the role whose process is being
    terminated"): that one ends by itself in moments, so try again."""
    for attempt in range(40):
        try:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.ProgrammingError):
            if attempt == 39:
                raise
            time.sleep(0.25)
