"""The API runs on both stores: SQLite, the default for one machine, and PostgreSQL, which a
site with several servers uses. Each PostgreSQL test gets a database of its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.stores import database
from tests.verify.conftest import git_server  # noqa: F401  (a real git server, for watches)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(request.param, tmp_path) as url:
        yield url
