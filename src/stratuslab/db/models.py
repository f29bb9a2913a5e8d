"""Database models. Schemas that cross the API live apart from these (see ``api/``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, DateTime, ForeignKey, Index, String, Text, TypeDecorator
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps are stored in UTC and always come back timezone-aware (SQLite forgets)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value if value.tzinfo else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime,
        dict[str, Any]: JSON,
        list[str]: JSON,
    }


class CloudRecord(Base):
    """A cloud the site can start instances on: its connector kind and options."""

    __tablename__ = "clouds"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    connector: Mapped[str] = mapped_column(String(32))
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Placement tries enabled clouds in ascending priority (then name); ``max_instances`` is
    # the site's cap on live instances there (None: what the backend reports is the bound).
    priority: Mapped[int] = mapped_column(default=100)
    enabled: Mapped[bool] = mapped_column(default=True)
    max_instances: Mapped[int | None]
    note: Mapped[str | None] = mapped_column(Text)  # why it was disabled, for people
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class InstanceRecord(Base):
    """An instance this project created (or found carrying its tags)."""

    __tablename__ = "instances"
    __table_args__ = (
        Index("ix_instances_cloud_name", "cloud", "name"),
        Index("ix_instances_owner_state", "owner", "state"),
        Index("ix_instances_run", "run_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(63))
    cloud: Mapped[str] = mapped_column(ForeignKey("clouds.name"))
    owner: Mapped[str] = mapped_column(String(64))
    image: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16))
    addresses: Mapped[list[str]] = mapped_column(default=list)
    cpu: Mapped[int | None]
    ram_mb: Mapped[int | None]
    ssh_keys: Mapped[int] = mapped_column(default=0)
    user_data: Mapped[bool] = mapped_column(default=False)
    run_id: Mapped[str | None] = mapped_column(String(36))
    node_instance: Mapped[str | None] = mapped_column(String(128))
    error: Mapped[str | None] = mapped_column(Text)
    recovered: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]


class ModuleRecord(Base):
    """One immutable version of a module (image, component or application) as pushed."""

    __tablename__ = "modules"
    __table_args__ = (Index("ix_modules_path_version", "path", "version", unique=True),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    path: Mapped[str] = mapped_column(String(255))
    version: Mapped[int]
    kind: Mapped[str] = mapped_column(String(16))
    file: Mapped[str] = mapped_column(String(512))
    text: Mapped[str] = mapped_column(Text)
    digest: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(64))
    tag: Mapped[str | None] = mapped_column(String(64))  # "git:<sha>": what it was pushed from
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ServerRecord(Base):
    """A server process sharing the store, with its heartbeat: a claim held by one whose
    heartbeat stopped is taken over without waiting for the claim's lease to run out."""

    __tablename__ = "servers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)  # host:pid:start
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int]
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class RunRecord(Base):
    """A deployment run: its state machine, its plan, its policies."""

    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_owner_state", "owner", "state"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    module_path: Mapped[str] = mapped_column(String(255))
    module_version: Mapped[int]
    state: Mapped[str] = mapped_column(String(16))
    abort_reason: Mapped[str | None] = mapped_column(Text)
    timed_out: Mapped[bool] = mapped_column(default=False)
    cancelled: Mapped[bool] = mapped_column(default=False)
    keep_running: Mapped[str] = mapped_column(String(16))
    mutable: Mapped[bool] = mapped_column(default=False)
    tags: Mapped[str] = mapped_column(String(1024), default="")
    # Loaded only when read: most transactions on a run (a completion, a parameter) need its
    # state, not the JSON of what it deploys.
    plan: Mapped[dict[str, Any]] = mapped_column(default=dict, deferred=True)
    given: Mapped[dict[str, Any]] = mapped_column(default=dict, deferred=True)
    scaling: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the scale action under way
    timeout_s: Mapped[int | None]
    deadline: Mapped[datetime | None]
    state_deadline: Mapped[datetime | None]  # bounds a barrier that may never complete
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claimed_until: Mapped[datetime | None]
    waiting: Mapped[int] = mapped_column(default=0)  # node instances the barrier waits for
    teardown_attempts: Mapped[int] = mapped_column(default=0)  # failed ones, in this Finalizing
    teardown_error: Mapped[str | None] = mapped_column(Text)  # why the last one failed
    retry_at: Mapped[datetime | None]  # when the next teardown attempt is due
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_state_change: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]


class NodeInstanceRecord(Base):
    """One node instance of a run (``web.2``): its token, its instance, its barrier progress."""

    __tablename__ = "node_instances"
    __table_args__ = (Index("ix_node_instances_token", "run_id", "token_hash"),)

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    node: Mapped[str] = mapped_column(String(64))
    idx: Mapped[int]
    token_hash: Mapped[str] = mapped_column(String(64))
    instance_id: Mapped[str | None] = mapped_column(String(32))
    provisioning: Mapped[str] = mapped_column(String(16), default="pending")
    removed: Mapped[bool] = mapped_column(default=False)
    lost: Mapped[bool] = mapped_column(default=False)
    completed: Mapped[str | None] = mapped_column(String(16))  # the state it last completed
    log_lines: Mapped[int] = mapped_column(default=0)  # recipe output lines kept, up to a bound
    cloud: Mapped[str | None] = mapped_column(String(64))  # where placement put its machine
    placement: Mapped[str | None] = mapped_column(Text)  # why there, for people
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RuntimeParameterRecord(Base):
    """A runtime parameter of a run: ``web.1:hostname``, ``web:ids``, ``ss:state``."""

    __tablename__ = "runtime_parameters"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16))  # standard, input, output, node, global
    description: Mapped[str] = mapped_column(String(512), default="")
    set_at: Mapped[datetime | None]
    secret: Mapped[bool] = mapped_column(default=False)  # type: password; never shown unasked


class RunEventRecord(Base):
    """What happened to a run, in order: state changes, aborts, completions, provisioning."""

    __tablename__ = "run_events"
    __table_args__ = (Index("ix_run_events_run", "run_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    node_instance: Mapped[str | None] = mapped_column(String(128))
    message: Mapped[str] = mapped_column(Text)  # the fields in a sentence, for people
    fields: Mapped[dict[str, Any]] = mapped_column(default=dict)  # see deploy/events.py


class RunLogRecord(Base):
    """A line a recipe printed, as the node's agent streamed it."""

    __tablename__ = "run_logs"
    __table_args__ = (Index("ix_run_logs_run", "run_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    node_instance: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(16))
    recipe: Mapped[str] = mapped_column(String(32))
    stream: Mapped[str] = mapped_column(String(8))
    text: Mapped[str] = mapped_column(Text)


class RunReportRecord(Base):
    """A node instance's report archive, kept on disk under the data directory."""

    __tablename__ = "run_reports"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    node_instance: Mapped[str] = mapped_column(String(128), primary_key=True)
    path: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int]
    uploaded_at: Mapped[datetime] = mapped_column(default=utcnow)


# -- accounts (docs/architecture.md, "Many users") -----------------------------------------


class UserRecord(Base):
    """A person (or their CI job) with an account: the owner of instances, runs and modules."""

    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(254))
    password_hash: Mapped[str | None] = mapped_column(String(255))  # argon2id; None: no password
    admin: Mapped[bool] = mapped_column(default=False)
    disabled: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class GroupRecord(Base):
    __tablename__ = "groups"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str] = mapped_column(String(512), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class GroupMemberRecord(Base):
    __tablename__ = "group_members"
    __table_args__ = (Index("ix_group_members_user", "user"),)

    group: Mapped[str] = mapped_column(ForeignKey("groups.name"), primary_key=True)
    user: Mapped[str] = mapped_column(ForeignKey("users.name"), primary_key=True)


class ApiKeyRecord(Base):
    """An API key: its id is public (``credential/<id>``), its secret is kept only hashed."""

    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_user", "user"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user: Mapped[str] = mapped_column(ForeignKey("users.name"))
    name: Mapped[str] = mapped_column(String(128), default="")
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class SessionRecord(Base):
    """A login session (SlipStream's session resource): its cookie is kept only hashed."""

    __tablename__ = "sessions"
    __table_args__ = (Index("ix_sessions_token", "token_hash", unique=True),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user: Mapped[str] = mapped_column(ForeignKey("users.name"))
    token_hash: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(16))  # internal, api-key, certificate
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class CertificateRecord(Base):
    """An X.509 subject DN a user registered: a client certificate with it logs them in."""

    __tablename__ = "user_certificates"
    __table_args__ = (Index("ix_user_certificates_user", "user"),)

    dn: Mapped[str] = mapped_column(String(512), primary_key=True)
    user: Mapped[str] = mapped_column(ForeignKey("users.name"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LoginFailureRecord(Base):
    """Failed logins of one account, counted in a window, for the rate limit."""

    __tablename__ = "login_failures"

    subject: Mapped[str] = mapped_column(String(160), primary_key=True)
    failures: Mapped[int] = mapped_column(default=0)
    window_start: Mapped[datetime] = mapped_column(default=utcnow)
    locked_until: Mapped[datetime | None]


class ModulePathRecord(Base):
    """Who owns a module path and SlipStream's rights on it (owner / group / public)."""

    __tablename__ = "module_paths"

    path: Mapped[str] = mapped_column(String(255), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    group: Mapped[str | None] = mapped_column(String(64))
    rights: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {"group": "rx", "public": "r"}
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class QuotaRecord(Base):
    """A limit on what a user or a group may hold at once, on one cloud or (``*``) all."""

    __tablename__ = "quotas"

    subject: Mapped[str] = mapped_column(String(80), primary_key=True)  # user:alice, group:x
    cloud: Mapped[str] = mapped_column(String(64), primary_key=True, default="*")
    instances: Mapped[int | None]
    cpu: Mapped[int | None]
    ram_mb: Mapped[int | None]
    storage_gib: Mapped[int | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class UsageRecord(Base):
    """One interval an instance ran: what accounting adds up (a stopped instance costs
    nothing)."""

    __tablename__ = "usage"
    __table_args__ = (
        Index("ix_usage_owner_started", "owner", "started_at"),
        Index("ix_usage_instance", "instance_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    instance_id: Mapped[str] = mapped_column(String(32))
    owner: Mapped[str] = mapped_column(String(64))
    cloud: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(String(36))
    cpu: Mapped[int]
    ram_mb: Mapped[int]
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
