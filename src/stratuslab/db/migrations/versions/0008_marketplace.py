"""The Marketplace: every endorsed entry uploaded (never deleted), and the checksums of images
on the clouds.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from stratuslab.db.models import UTCDateTime

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    op.create_table(
        "marketplace_entries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("identifier", sa.String(27), nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("md5", sa.String(32), nullable=False),
        sa.Column("sha1", sa.String(40), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("sha512", sa.String(128), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("issuer", sa.Text, nullable=False),
        sa.Column("endorsed_at", UTCDateTime, nullable=False),
        sa.Column("not_after", UTCDateTime, nullable=False),
        sa.Column("certificates", sa.JSON, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("created", UTCDateTime, nullable=False),
        sa.Column("valid", UTCDateTime, nullable=False),
        sa.Column("deprecated", sa.Text),
        sa.Column("replaces", sa.String(27)),
        sa.Column("is_replaced_by", sa.String(27)),
        sa.Column("os", sa.Text, nullable=False),
        sa.Column("os_version", sa.Text, nullable=False),
        sa.Column("os_arch", sa.Text, nullable=False),
        sa.Column("format", sa.Text, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("creator", sa.Text, nullable=False),
        sa.Column("locations", sa.JSON, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("current", sa.Boolean, nullable=False),
        sa.Column("uploaded_by", sa.String(64), nullable=False),
        sa.Column("uploaded_at", UTCDateTime, nullable=False),
        sa.Column("xml", sa.LargeBinary, nullable=False),
        sa.UniqueConstraint("identifier", "email", "endorsed_at", name="uq_marketplace_entries_at"),
    )
    op.create_index("ix_marketplace_entries_sha256", "marketplace_entries", ["sha256"])
    op.create_index("ix_marketplace_entries_email", "marketplace_entries", ["email", "endorsed_at"])
    op.create_index("ix_marketplace_entries_uploaded_by", "marketplace_entries", ["uploaded_by"])
    op.create_index(
        "ix_marketplace_entries_current", "marketplace_entries", ["current", "endorsed_at"]
    )
    op.create_table(
        "image_checksums",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("md5", sa.String(32), nullable=False),
        sa.Column("sha1", sa.String(40), nullable=False),
        sa.Column("sha512", sa.String(128), nullable=False),
        sa.Column("computed_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("image_checksums")
    op.drop_table("marketplace_entries")
