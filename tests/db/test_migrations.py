"""The migrations make the schema the models describe: a column, table or index that one has
and the other lacks would work in tests that build nothing by hand and fail on a real store."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Engine

from stratuslab.db import (  # noqa: F401  (their tables are Base's)
    image_models,
    marketplace_models,
    verify_models,
    volume_models,
)
from stratuslab.db.models import Base


def test_the_migrated_store_is_the_models_schema(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []
