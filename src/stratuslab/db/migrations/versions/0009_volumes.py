"""Volumes: persistent filesystems users and runs make, and what they are attached to.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from stratuslab.db.models import UTCDateTime

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    op.create_table(
        "volumes",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("live_name", sa.String(63)),
        sa.Column("cloud", sa.String(64), sa.ForeignKey("clouds.name"), nullable=False),
        sa.Column("backend_name", sa.String(63), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("public", sa.Boolean, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("source", sa.String(160)),
        sa.Column("run_id", sa.String(36)),
        sa.Column("error", sa.Text),
        sa.Column("recovered", sa.Boolean, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("deleted_at", UTCDateTime),
    )
    op.create_index("ix_volumes_owner_live_name", "volumes", ["owner", "live_name"], unique=True)
    op.create_index("ix_volumes_cloud_state", "volumes", ["cloud", "state"])
    op.create_index("ix_volumes_run", "volumes", ["run_id"])
    op.create_table(
        "volume_attachments",
        sa.Column("volume_id", sa.String(32), sa.ForeignKey("volumes.id"), primary_key=True),
        sa.Column("instance_id", sa.String(32), primary_key=True),
        sa.Column("path", sa.String(255), nullable=False),
        sa.Column("read_only", sa.Boolean, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attached_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_volume_attachments_instance", "volume_attachments", ["instance_id"])


def downgrade() -> None:
    op.drop_table("volume_attachments")
    op.drop_table("volumes")
