"""Continuous verification: watches, watched branches, verifications, the notification outbox,
and the tag of a module version (the commit it was pushed from).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from stratuslab.db.models import UTCDateTime

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    op.create_table(
        "watches",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("repository", sa.Text, nullable=False),
        sa.Column("module", sa.String(255), nullable=False),
        sa.Column("branches", sa.JSON, nullable=False),
        sa.Column("every_s", sa.Integer, nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("notify", sa.JSON, nullable=False),
        sa.Column("keep_running", sa.String(16), nullable=False),
        sa.Column("secret", sa.String(64), nullable=False),
        sa.Column("mail_every_failure", sa.Boolean, nullable=False),
        sa.Column("forge", sa.JSON),
        sa.Column("deploy_key", sa.Text),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("removed", sa.Boolean, nullable=False),
        sa.Column("wake", sa.Boolean, nullable=False),
        sa.Column("polled_at", UTCDateTime),
        sa.Column("poll_error", sa.Text),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("owner", "name", name="uq_watches_owner_name"),
    )
    op.create_table(
        "watch_branches",
        sa.Column(
            "watch_id",
            sa.String(32),
            sa.ForeignKey("watches.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("branch", sa.String(255), primary_key=True),
        sa.Column("head", sa.String(40)),
        sa.Column("verdict", sa.String(16)),
        sa.Column("verdict_commit", sa.String(40)),
        sa.Column("since", UTCDateTime),
        sa.Column("since_commit", sa.String(40)),
        sa.Column("broken_by", sa.String(40)),
        sa.Column("last_good", sa.String(40)),
    )
    op.create_table(
        "verifications",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "watch_id",
            sa.String(32),
            sa.ForeignKey("watches.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("branch", sa.String(255), nullable=False),
        sa.Column("commit", sa.String(40), nullable=False),
        sa.Column("author", sa.String(255), nullable=False),
        sa.Column("email", sa.String(255), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("committed_at", UTCDateTime),
        sa.Column("why", sa.String(16), nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("verdict", sa.String(16)),
        sa.Column("reason", sa.Text),
        sa.Column("node", sa.String(128)),
        sa.Column("run_id", sa.String(36)),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("queued_at", UTCDateTime, nullable=False),
        sa.Column("started_at", UTCDateTime),
        sa.Column("ended_at", UTCDateTime),
    )
    op.create_index("ix_verifications_watch_branch", "verifications", ["watch_id", "branch", "id"])
    op.create_index("ix_verifications_phase", "verifications", ["phase"])
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("watch_id", sa.String(32)),
        sa.Column("verification_id", sa.Integer),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_at", UTCDateTime, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("sent_at", UTCDateTime),
    )
    op.create_index("ix_notifications_due", "notifications", ["state", "next_at"])
    with op.batch_alter_table("modules") as batch:
        batch.add_column(sa.Column("tag", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("modules") as batch:
        batch.drop_column("tag")
    op.drop_table("notifications")
    op.drop_table("verifications")
    op.drop_table("watch_branches")
    op.drop_table("watches")
