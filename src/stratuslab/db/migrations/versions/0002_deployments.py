"""Modules, runs, node instances, runtime parameters, events, logs and reports.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from stratuslab.db.models import UTCDateTime

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "modules",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("path", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("file", sa.String(512), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_modules_path_version", "modules", ["path", "version"], unique=True)
    op.create_table(
        "runs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("module_path", sa.String(255), nullable=False),
        sa.Column("module_version", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("abort_reason", sa.Text),
        sa.Column("timed_out", sa.Boolean, nullable=False),
        sa.Column("cancelled", sa.Boolean, nullable=False),
        sa.Column("keep_running", sa.String(16), nullable=False),
        sa.Column("mutable", sa.Boolean, nullable=False),
        sa.Column("tags", sa.String(1024), nullable=False),
        sa.Column("plan", sa.JSON, nullable=False),
        sa.Column("timeout_s", sa.Integer),
        sa.Column("deadline", UTCDateTime),
        sa.Column("state_deadline", UTCDateTime),
        sa.Column("claimed_by", sa.String(128)),
        sa.Column("claimed_until", UTCDateTime),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("last_state_change", UTCDateTime, nullable=False),
        sa.Column("ended_at", UTCDateTime),
    )
    op.create_index("ix_runs_owner_state", "runs", ["owner", "state"])
    op.create_table(
        "node_instances",
        sa.Column("run_id", sa.String(36), sa.ForeignKey("runs.id"), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("node", sa.String(64), nullable=False),
        sa.Column("idx", sa.Integer, nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("instance_id", sa.String(32)),
        sa.Column("provisioning", sa.String(16), nullable=False),
        sa.Column("removed", sa.Boolean, nullable=False),
        sa.Column("lost", sa.Boolean, nullable=False),
        sa.Column("completed", sa.String(16)),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "runtime_parameters",
        sa.Column("run_id", sa.String(36), sa.ForeignKey("runs.id"), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("value", sa.Text),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("description", sa.String(512), nullable=False),
        sa.Column("set_at", UTCDateTime),
    )
    op.create_table(
        "run_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(36), sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("node_instance", sa.String(128)),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_index("ix_run_events_run", "run_events", ["run_id", "id"])
    op.create_table(
        "run_logs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(36), sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("node_instance", sa.String(128), nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("recipe", sa.String(32), nullable=False),
        sa.Column("stream", sa.String(8), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
    )
    op.create_index("ix_run_logs_run", "run_logs", ["run_id", "id"])
    op.create_table(
        "run_reports",
        sa.Column("run_id", sa.String(36), sa.ForeignKey("runs.id"), primary_key=True),
        sa.Column("node_instance", sa.String(128), primary_key=True),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("uploaded_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "run_reports",
        "run_logs",
        "run_events",
        "runtime_parameters",
        "node_instances",
        "runs",
        "modules",
    ):
        op.drop_table(table)
