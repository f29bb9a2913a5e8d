"""Alembic environment: migrations run on the connection the caller hands over."""

from __future__ import annotations

from alembic import context

from stratuslab.db import (  # noqa: F401  (their tables are Base's too)
    image_models,
    marketplace_models,
    verify_models,
    volume_models,
)
from stratuslab.db.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through stratuslab.db.session.upgrade()")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
