"""Several hosts: clouds carry a priority, a site cap and a switch; node instances say which
cloud placement put them on and why; server processes sharing one store keep a heartbeat.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from stratuslab.db.models import UTCDateTime

revision = "0010"
down_revision = "0009"


def upgrade() -> None:
    with op.batch_alter_table("clouds") as batch:
        batch.add_column(sa.Column("priority", sa.Integer, nullable=False, server_default="100"))
        batch.add_column(sa.Column("enabled", sa.Boolean, nullable=False, server_default="1"))
        batch.add_column(sa.Column("max_instances", sa.Integer, nullable=True))
        batch.add_column(sa.Column("note", sa.Text, nullable=True))
    with op.batch_alter_table("node_instances") as batch:
        batch.add_column(sa.Column("cloud", sa.String(64), nullable=True))
        batch.add_column(sa.Column("placement", sa.Text, nullable=True))
    op.create_table(
        "servers",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("seen_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("servers")
    with op.batch_alter_table("node_instances") as batch:
        batch.drop_column("placement")
        batch.drop_column("cloud")
    with op.batch_alter_table("clouds") as batch:
        batch.drop_column("note")
        batch.drop_column("max_instances")
        batch.drop_column("enabled")
        batch.drop_column("priority")
