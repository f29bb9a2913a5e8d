"""The store's records of the Marketplace: every endorsed entry ever uploaded, and the checksums
of images on the clouds (``cloud/marketplace/store.py``, ``cloud/imagesums.py``)."""

from __future__ import annotations

import builtins
from datetime import datetime

from sqlalchemy import BigInteger, Index, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from stratuslab.db.models import Base, utcnow


class MarketplaceEntryRecord(Base):
    """One upload: an entry as its endorser signed it. Never deleted, never changed but for
    ``current``: a newer entry of the same image by the same endorser takes that over (it may
    deprecate the image, or say what replaces it)."""

    __tablename__ = "marketplace_entries"
    __table_args__ = (
        # The address of an entry, /metadata/<identifier>/<email>/<endorsed>: one upload each.
        UniqueConstraint("identifier", "email", "endorsed_at", name="uq_marketplace_entries_at"),
        Index("ix_marketplace_entries_sha256", "sha256"),  # the policy's look-up, at every start
        Index("ix_marketplace_entries_email", "email", "endorsed_at"),
        Index("ix_marketplace_entries_uploaded_by", "uploaded_by"),
        Index("ix_marketplace_entries_current", "current", "endorsed_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    identifier: Mapped[str] = mapped_column(String(27))  # from the SHA-1 (identifier.py)
    bytes: Mapped[int] = mapped_column(BigInteger)
    md5: Mapped[str] = mapped_column(String(32))
    sha1: Mapped[str] = mapped_column(String(40))
    sha256: Mapped[str] = mapped_column(String(64))  # an LXD image's fingerprint
    sha512: Mapped[str] = mapped_column(String(128))
    # The endorsement, as the certificate names its holder (signing.verify checked it).
    email: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(Text)
    issuer: Mapped[str] = mapped_column(Text)
    endorsed_at: Mapped[datetime]
    not_after: Mapped[datetime]  # the endorser's certificate's end
    certificates: Mapped[list[str]] = mapped_column(default=list)  # base64 DER, the leaf first
    # The entry's terms.
    kind: Mapped[str] = mapped_column(Text)  # dcterms:type
    created: Mapped[datetime]
    valid: Mapped[datetime]
    deprecated: Mapped[str | None] = mapped_column(Text)  # the reason
    replaces: Mapped[str | None] = mapped_column(String(27))
    is_replaced_by: Mapped[str | None] = mapped_column(String(27))
    os: Mapped[str] = mapped_column(Text)
    os_version: Mapped[str] = mapped_column(Text)
    os_arch: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(Text)
    title: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text)
    creator: Mapped[str] = mapped_column(Text)
    locations: Mapped[list[str]] = mapped_column(default=list)
    tags: Mapped[list[str]] = mapped_column(default=list)
    # Whether this is its endorser's latest entry of the image (the one that counts).
    current: Mapped[bool] = mapped_column(default=True)
    uploaded_by: Mapped[str] = mapped_column(String(64))
    uploaded_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Exactly as uploaded, so that anyone can verify it (``builtins``: ``bytes`` is a column).
    xml: Mapped[builtins.bytes] = mapped_column(LargeBinary)


class ImageChecksumRecord(Base):
    """The size and digests of an image's bytes, by their SHA-256 (an LXD image's fingerprint):
    computed once, whatever cloud or alias the image has."""

    __tablename__ = "image_checksums"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    bytes: Mapped[int] = mapped_column(BigInteger)
    md5: Mapped[str] = mapped_column(String(32))
    sha1: Mapped[str] = mapped_column(String(40))
    sha512: Mapped[str] = mapped_column(String(128))
    computed_at: Mapped[datetime] = mapped_column(default=utcnow)
