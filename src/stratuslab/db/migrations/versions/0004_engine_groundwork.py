"""Engine groundwork: events carry their fields, barriers keep a count, teardowns their
failures, node tokens are found by index, node instances count the log lines kept.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("waiting", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("teardown_attempts", sa.Integer, nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("teardown_error", sa.Text, nullable=True))
        batch.add_column(sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("run_events") as batch:
        batch.add_column(sa.Column("fields", sa.JSON, nullable=False, server_default="{}"))
    with op.batch_alter_table("node_instances") as batch:
        batch.add_column(sa.Column("log_lines", sa.Integer, nullable=False, server_default="0"))
    op.create_index("ix_node_instances_token", "node_instances", ["run_id", "token_hash"])


def downgrade() -> None:
    op.drop_index("ix_node_instances_token", "node_instances")
    with op.batch_alter_table("node_instances") as batch:
        batch.drop_column("log_lines")
    with op.batch_alter_table("run_events") as batch:
        batch.drop_column("fields")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("retry_at")
        batch.drop_column("teardown_error")
        batch.drop_column("teardown_attempts")
        batch.drop_column("waiting")
