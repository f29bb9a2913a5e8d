"""The images users made: whose each is, where it came from.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from stratuslab.db.models import UTCDateTime

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("cloud", sa.String(64), primary_key=True),
        sa.Column("alias", sa.String(160), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("public", sa.Boolean, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_images_owner", "images", ["owner"])
    op.create_index("ix_images_cloud_fingerprint", "images", ["cloud", "fingerprint"])


def downgrade() -> None:
    op.drop_table("images")
