"""The connector contract's volume operations (capability VOLUMES) and their value objects.

A volume is a filesystem that lives on the backend apart from any instance (an LXD custom
storage volume): created on its own, attached to running instances at a path and detached
again, kept when the instances it was attached to are destroyed. Like instances, volumes carry
``tags`` on the backend, so that whatever this project creates can be found again even if the
store loses it. The connector only does what the backend does: who may attach what, quotas and
the one-writer rule are the volume service's (:mod:`stratuslab.cloud.volumes`), which records
every volume and every attachment before it asks the backend.

Names given to these methods are backend names (unique per backend), never the names users
type. Sizes are bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar

from stratuslab.cloud.types import Capability
from stratuslab.errors import Invalid, NotSupported


@dataclass(frozen=True)
class Mount:
    """Volume ``volume`` (its backend name) mounted in an instance at ``path``."""

    volume: str
    path: str
    read_only: bool = False

    def __post_init__(self) -> None:
        if not self.path.startswith("/") or self.path == "/":
            raise Invalid(f"mount path {self.path[:80]!r}: give an absolute path below /")


@dataclass(frozen=True)
class VolumeSpec:
    """What to create: an empty filesystem of ``size_bytes``, or with ``source`` a copy of
    another volume (``"name"``) or of one of its snapshots (``"name/snapshot"``), at least as
    large as ``size_bytes`` (the source's size when that is larger)."""

    name: str
    size_bytes: int
    tags: Mapping[str, str] = field(default_factory=dict)
    source: str | None = None


@dataclass(frozen=True)
class Volume:
    """A volume as the backend sees it. ``used_by`` names the instances it is attached to
    (attached in their configuration, running or not)."""

    name: str
    size_bytes: int
    tags: Mapping[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    used_by: tuple[str, ...] = ()


class VolumeContract:
    """Volume operations; a connector without capability VOLUMES raises ``NotSupported``.

    Every method may raise ``BackendUnavailable`` when the backend cannot be reached and
    ``BackendError`` when it refuses for a reason of its own.
    """

    kind: ClassVar[str]
    capabilities: ClassVar[frozenset[Capability]] = frozenset()

    def create_volume(self, spec: VolumeSpec) -> Volume:
        """Create volume ``spec.name``.

        Post-conditions: the volume exists with ``spec.tags`` and a quota of at least
        ``spec.size_bytes``, empty or a copy of ``spec.source`` as it is now (a copy-on-write
        clone where the backend can make one: later writes to either do not show in the
        other). Raises ``Conflict`` when the name is taken and ``NotFound`` when the source
        volume or snapshot does not exist (nothing is created then). Not idempotent.
        """
        raise NotSupported(f"the {self.kind} connector has no volumes")

    def get_volume(self, name: str) -> Volume:
        """The volume called ``name``; ``NotFound`` when there is none."""
        raise NotSupported(f"the {self.kind} connector has no volumes")

    def list_volumes(self, *, tags: Mapping[str, str] | None = None) -> list[Volume]:
        """The volumes that carry every one of ``tags`` (values compared exactly, as for
        instances), each with its tags and ``used_by``."""
        raise NotSupported(f"the {self.kind} connector has no volumes")

    def delete_volume(self, name: str) -> None:
        """Delete volume ``name`` and its snapshots.

        Idempotent: deleting a volume that is gone succeeds. Raises ``Conflict`` naming the
        instances when it is attached to any (nothing is deleted then).
        """
        raise NotSupported(f"the {self.kind} connector has no volumes")

    def resize_volume(self, name: str, size_bytes: int) -> Volume:
        """Set volume ``name``'s size, attached or not; the volume as it is after.

        Raises ``NotFound`` when there is no such volume and ``Conflict`` when it is asked to
        shrink below what its files take, or to shrink at all while it has snapshots (which
        share its blocks: btrfs would apply the quota and then fail, leaving the volume
        unwritable); nothing is changed then.
        """
        raise NotSupported(f"the {self.kind} connector has no volumes")

    def attach_volume(self, instance: str, mount: Mount) -> None:
        """Attach ``mount.volume`` to ``instance`` at ``mount.path``, read-only if asked.

        Post-conditions: on a running instance the filesystem is mounted at the path when the
        call returns (hot, no restart); on a stopped one it is mounted at its next start; the
        volume's ``used_by`` names the instance. Attaching a volume to the instance it is
        attached to at the same path and mode succeeds and changes nothing; at another path or
        mode, or at a path where another volume is mounted, it raises ``Conflict``. Raises
        ``NotFound`` when the instance or the volume does not exist. The connector does not
        decide who may share a volume: the volume service does.
        """
        raise NotSupported(f"the {self.kind} connector has no volumes")

    def detach_volume(self, instance: str, volume: str) -> None:
        """Detach ``volume`` from ``instance``; on a running instance it is unmounted when the
        call returns. Idempotent: detaching a volume that is not attached there, or from an
        instance that is gone, succeeds. The volume and its files are kept."""
        raise NotSupported(f"the {self.kind} connector has no volumes")

    def create_volume_snapshot(self, volume: str, snapshot: str) -> VolumeSnapshot:
        """Take snapshot ``snapshot`` of ``volume``, attached or not. Raises ``NotFound`` for
        no such volume, ``Conflict`` when it has a snapshot of that name. Not idempotent."""
        raise NotSupported(f"the {self.kind} connector has no volumes")

    def list_volume_snapshots(self, volume: str) -> list[VolumeSnapshot]:
        """``volume``'s snapshots, oldest first; ``NotFound`` for no such volume."""
        raise NotSupported(f"the {self.kind} connector has no volumes")

    def restore_volume_snapshot(self, volume: str, snapshot: str) -> None:
        """Put ``volume``'s files back as they were at ``snapshot``, which is kept. Raises
        ``NotFound`` for no such volume or snapshot and ``Conflict`` when the volume is
        attached to a running instance (nothing is changed then)."""
        raise NotSupported(f"the {self.kind} connector has no volumes")

    def delete_volume_snapshot(self, volume: str, snapshot: str) -> None:
        """Delete ``volume``'s snapshot ``snapshot``. Idempotent: deleting one that is gone
        succeeds; ``NotFound`` only for no such volume."""
        raise NotSupported(f"the {self.kind} connector has no volumes")


@dataclass(frozen=True)
class VolumeSnapshot:
    """A saved state of a volume's files, kept with the volume (and deleted with it)."""

    name: str
    created_at: datetime | None = None
