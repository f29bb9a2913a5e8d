"""The store's record of volumes and of what they are attached to.

A volume is recorded before the backend is asked to create it and outlives it (state ``gone``),
as instances are. ``live_name`` is the user's name while the volume is not gone and NULL after,
so that a name is unique among an owner's live volumes and free again once one is deleted.
An attachment counts while its instance is not gone (see :mod:`stratuslab.cloud.volume_claims`:
claims are made holding the volume's row lock, so two racing attaches cannot both win).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from stratuslab.db.models import Base, utcnow


class VolumeRecord(Base):
    """A volume a user (or a run, for a node instance) made."""

    __tablename__ = "volumes"
    __table_args__ = (
        Index("ix_volumes_owner_live_name", "owner", "live_name", unique=True),
        Index("ix_volumes_cloud_state", "cloud", "state"),
        Index("ix_volumes_run", "run_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(63))
    live_name: Mapped[str | None] = mapped_column(String(63))
    cloud: Mapped[str] = mapped_column(ForeignKey("clouds.name"))
    backend_name: Mapped[str] = mapped_column(String(63))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    public: Mapped[bool] = mapped_column(default=False)
    description: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(16))  # pending, ready, deleting, gone, error
    source: Mapped[str | None] = mapped_column(String(160))  # what it was cloned from
    run_id: Mapped[str | None] = mapped_column(String(36))  # made by a run, deleted with it
    error: Mapped[str | None] = mapped_column(Text)
    recovered: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None]


class VolumeAttachmentRecord(Base):
    """Volume ``volume_id`` attached to instance ``instance_id`` at ``path``."""

    __tablename__ = "volume_attachments"
    __table_args__ = (Index("ix_volume_attachments_instance", "instance_id"),)

    volume_id: Mapped[str] = mapped_column(ForeignKey("volumes.id"), primary_key=True)
    instance_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    path: Mapped[str] = mapped_column(String(255))
    read_only: Mapped[bool] = mapped_column(default=False)
    state: Mapped[str] = mapped_column(String(16))  # attaching, attached, detaching
    attached_at: Mapped[datetime] = mapped_column(default=utcnow)
