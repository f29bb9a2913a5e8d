"""Scalable runs: the values a run was given at deploy time (new instances get them too) and
the scale action under way.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("given", sa.JSON, nullable=False, server_default="{}"))
        batch.add_column(sa.Column("scaling", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("scaling")
        batch.drop_column("given")
