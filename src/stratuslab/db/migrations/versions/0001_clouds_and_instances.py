"""Clouds and the instances created on them.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from stratuslab.db.models import UTCDateTime

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "clouds",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("connector", sa.String(32), nullable=False),
        sa.Column("options", sa.JSON, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "instances",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("cloud", sa.String(64), sa.ForeignKey("clouds.name"), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("image", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("addresses", sa.JSON, nullable=False),
        sa.Column("cpu", sa.Integer),
        sa.Column("ram_mb", sa.Integer),
        sa.Column("ssh_keys", sa.Integer, nullable=False),
        sa.Column("user_data", sa.Boolean, nullable=False),
        sa.Column("run_id", sa.String(36)),
        sa.Column("node_instance", sa.String(128)),
        sa.Column("error", sa.Text),
        sa.Column("recovered", sa.Boolean, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("started_at", UTCDateTime),
        sa.Column("ended_at", UTCDateTime),
    )
    op.create_index("ix_instances_cloud_name", "instances", ["cloud", "name"])
    op.create_index("ix_instances_owner_state", "instances", ["owner", "state"])
    op.create_index("ix_instances_run", "instances", ["run_id"])


def downgrade() -> None:
    op.drop_table("instances")
    op.drop_table("clouds")
