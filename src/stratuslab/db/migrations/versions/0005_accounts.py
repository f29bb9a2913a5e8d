"""Many users: accounts, groups, API keys, sessions, certificates, the login rate limit,
module path rights, quotas, usage intervals, secret runtime parameters.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from stratuslab.db.models import UTCDateTime

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("email", sa.String(254)),
        sa.Column("password_hash", sa.String(255)),
        sa.Column("admin", sa.Boolean, nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "groups",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("description", sa.String(512), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "group_members",
        sa.Column("group", sa.String(64), sa.ForeignKey("groups.name"), primary_key=True),
        sa.Column("user", sa.String(64), sa.ForeignKey("users.name"), primary_key=True),
    )
    op.create_index("ix_group_members_user", "group_members", ["user"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("user", sa.String(64), sa.ForeignKey("users.name"), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime),
        sa.Column("revoked_at", UTCDateTime),
        sa.Column("last_used_at", UTCDateTime),
    )
    op.create_index("ix_api_keys_user", "api_keys", ["user"])
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("user", sa.String(64), sa.ForeignKey("users.name"), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("revoked_at", UTCDateTime),
    )
    op.create_index("ix_sessions_token", "sessions", ["token_hash"], unique=True)
    op.create_table(
        "user_certificates",
        sa.Column("dn", sa.String(512), primary_key=True),
        sa.Column("user", sa.String(64), sa.ForeignKey("users.name"), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_user_certificates_user", "user_certificates", ["user"])
    op.create_table(
        "login_failures",
        sa.Column("subject", sa.String(160), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("window_start", UTCDateTime, nullable=False),
        sa.Column("locked_until", UTCDateTime),
    )
    op.create_table(
        "module_paths",
        sa.Column("path", sa.String(255), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("group", sa.String(64)),
        sa.Column("rights", sa.JSON, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "quotas",
        sa.Column("subject", sa.String(80), primary_key=True),
        sa.Column("cloud", sa.String(64), primary_key=True),
        sa.Column("instances", sa.Integer),
        sa.Column("cpu", sa.Integer),
        sa.Column("ram_mb", sa.Integer),
        sa.Column("storage_gib", sa.Integer),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "usage",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("instance_id", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("cloud", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(36)),
        sa.Column("cpu", sa.Integer, nullable=False),
        sa.Column("ram_mb", sa.Integer, nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("ended_at", UTCDateTime),
    )
    op.create_index("ix_usage_owner_started", "usage", ["owner", "started_at"])
    op.create_index("ix_usage_instance", "usage", ["instance_id"])
    with op.batch_alter_table("runtime_parameters") as batch:
        batch.add_column(sa.Column("secret", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("runtime_parameters") as batch:
        batch.drop_column("secret")
    for index, table in (
        ("ix_usage_instance", "usage"),
        ("ix_usage_owner_started", "usage"),
        ("ix_user_certificates_user", "user_certificates"),
        ("ix_sessions_token", "sessions"),
        ("ix_api_keys_user", "api_keys"),
        ("ix_group_members_user", "group_members"),
    ):
        op.drop_index(index, table)
    for table in (
        "usage",
        "quotas",
        "module_paths",
        "login_failures",
        "user_certificates",
        "sessions",
        "api_keys",
        "group_members",
        "groups",
        "users",
    ):
        op.drop_table(table)
