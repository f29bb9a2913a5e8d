"""The store's record of the images users made (saved, baked, imported): whose each is.

An image the store does not record is the site's (a base image from ``stratus image build``,
or one an administrator added to the backend by hand), and anybody may start it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from stratuslab.db.models import Base, utcnow


class ImageRecord(Base):
    """An image a user made, under the alias ``<owner>/<name>`` on its cloud."""

    __tablename__ = "images"
    __table_args__ = (Index("ix_images_cloud_fingerprint", "cloud", "fingerprint"),)

    cloud: Mapped[str] = mapped_column(String(64), primary_key=True)
    alias: Mapped[str] = mapped_column(String(160), primary_key=True)  # "<owner>/<name>"
    fingerprint: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(64), index=True)
    origin: Mapped[str] = mapped_column(String(16))  # save, bake, import
    public: Mapped[bool] = mapped_column(default=False)
    description: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)  # what the origin says of it
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
