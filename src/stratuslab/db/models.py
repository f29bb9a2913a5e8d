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
