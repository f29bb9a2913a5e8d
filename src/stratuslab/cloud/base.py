"""The connector contract and the value objects that cross it.

A connector drives one backend (LXD, a public cloud through Libcloud, an in-memory fake). It
knows nothing of the store, the API or the deployment engine: the instance service records and
reconciles, the connector only does what the backend does. One contract test suite
(``tests/cloud/connectors/test_contract.py``) runs against every connector; a connector is done
when it passes that suite.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from stratuslab.cloud.base_volumes import Mount, Volume, VolumeContract, VolumeSnapshot, VolumeSpec
from stratuslab.cloud.types import Capability, InstanceState
from stratuslab.errors import Invalid, NotSupported

__all__ = [
    "TAG_KEY",
    "UNKNOWN_IMAGE_HINT",
    "Capacity",
    "Connector",
    "ExecResult",
    "Image",
    "Instance",
    "InstanceSpec",
    "Mount",
    "Snapshot",
    "Volume",
    "VolumeSnapshot",
    "VolumeSpec",
]

TAG_KEY = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
# What every connector says of an image it has not (and the catalog of one a user may not see).
UNKNOWN_IMAGE_HINT = "see `stratus image list`, or build one with `stratus image build debian-12`"


@dataclass(frozen=True)
class InstanceSpec:
    """What to create. ``tags`` travel with the instance on the backend, so that whatever this
    project creates can always be found again, even if the store loses it. A tag with an empty
    value is not kept (LXD drops empty configuration keys)."""

    name: str
    image: str
    cpu: int | None = None
    ram_mb: int | None = None
    ssh_keys: tuple[str, ...] = ()
    user_data: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    volumes: tuple[Mount, ...] = ()  # attached before it first starts (capability VOLUMES)

    def __post_init__(self) -> None:
        for key in self.tags:
            if not TAG_KEY.match(key):
                raise Invalid(f"tag {key!r}: use lowercase letters, digits, '.', '_' and '-'")
        paths = [m.path for m in self.volumes]
        if len(set(paths)) != len(paths):
            raise Invalid(f"instance {self.name}: two volumes at one path")


@dataclass(frozen=True)
class Instance:
    """An instance as the backend sees it."""

    name: str
    state: InstanceState
    image: str = ""
    addresses: tuple[str, ...] = ()
    cpu: int | None = None
    ram_mb: int | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def carries(self, tags: Mapping[str, str], has_tag: str | None = None) -> bool:
        """Whether it carries every one of ``tags`` (values compared exactly) and, with
        ``has_tag``, a tag of that key: what ``Connector.list_instances`` lists."""
        return all(self.tags.get(k) == v for k, v in tags.items()) and (
            has_tag is None or has_tag in self.tags
        )


@dataclass(frozen=True)
class Image:
    """A startable image: ``name`` is the alias users type, ``fingerprint`` its content hash."""

    name: str
    fingerprint: str
    size_bytes: int = 0
    description: str = ""
    created_at: datetime | None = None
    properties: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Snapshot:
    """A saved state of an instance's root filesystem, kept with the instance on the backend
    (and destroyed with it). ``size_bytes`` is None when the backend does not say."""

    name: str
    created_at: datetime | None = None
    stateful: bool = False  # with the memory of its processes: never, for now
    size_bytes: int | None = None


@dataclass(frozen=True)
class Capacity:
    """What the backend can still host. ``None`` means the backend does not say."""

    cpus: int | None
    memory_total_mb: int | None
    memory_free_mb: int | None
    disk_total_mb: int | None
    disk_free_mb: int | None


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str


class Connector(VolumeContract, ABC):
    """One backend behind the contract.

    Names are the backend's instance names and are unique per backend. Every method may raise
    ``BackendUnavailable`` when the backend cannot be reached and ``BackendError`` when it
    refuses for a reason of its own.
    """

    kind: ClassVar[str]
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    # Whether its instances are on the site's networks, where nodes reach the server at the
    # address their bootstrap gives (the bridge gateway, through NAT from another LXD host).
    # A public cloud's are not: the engine places no run's node instance there unasked.
    on_site_network: ClassVar[bool] = True

    @abstractmethod
    def create(self, spec: InstanceSpec) -> Instance:
        """Create an instance from ``spec`` and start it.

        Post-conditions: the instance exists, carries ``spec.tags``, has its ssh keys and
        user-data delivered, ``spec.volumes`` attached and mounted before anything in it starts
        (``NotSupported`` without capability VOLUMES, ``NotFound`` for a volume that does not
        exist), and is RUNNING (it may not have an address yet: see
        :meth:`wait_for_address`). Raises ``NotFound`` for an unknown image and ``Conflict``
        when the name is taken. Not idempotent. On failure, whatever was created is destroyed
        before the error propagates.
        """

    @abstractmethod
    def wait_for_address(self, name: str, timeout: float) -> Instance:
        """Wait until the instance has an IPv4 address and return it.

        Raises ``NotFound`` when the instance disappears, ``BackendError`` on timeout.
        """

    @abstractmethod
    def start(self, name: str) -> Instance:
        """Start a stopped instance. Idempotent: starting a running one succeeds."""

    @abstractmethod
    def stop(self, name: str, *, timeout: float = 30.0) -> Instance:
        """Stop an instance cleanly, forcing it after ``timeout`` seconds. Idempotent."""

    @abstractmethod
    def destroy(self, name: str) -> None:
        """Destroy an instance, running or not. Idempotent: destroying what is gone succeeds."""

    @abstractmethod
    def get(self, name: str) -> Instance:
        """The instance called ``name``; raises ``NotFound`` when there is none."""

    @abstractmethod
    def list_instances(
        self,
        *,
        tags: Mapping[str, str] | None = None,
        has_tag: str | None = None,
        addresses: bool = True,
    ) -> list[Instance]:
        """The instances on the backend that carry every one of ``tags`` and, with
        ``has_tag``, a tag of that key whatever its value (all runs' machines in one call).

        Post-conditions: an instance is listed if and only if it matches, values compared
        exactly (case and every character count, whatever the value holds: a backend that
        filters for us more loosely is checked after). Each listed instance carries its state
        and tags. With ``addresses=False`` no address is looked up and ``addresses`` is empty:
        the cheap listing for callers that need only names or states.
        """

    @abstractmethod
    def list_images(self) -> list[Image]:
        """The images instances can be created from."""

    @abstractmethod
    def get_image(self, name: str) -> Image:
        """The image called ``name`` (alias) or with that fingerprint prefix; else ``NotFound``."""

    @abstractmethod
    def capacity(self) -> Capacity:
        """What the backend can still host."""

    def exec(
        self,
        name: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        """Run ``command`` in the instance and wait for it (capability EXEC)."""
        raise NotSupported(f"the {self.kind} connector cannot run commands in instances")

    def import_image(self, archive: Path, *, name: str, sha256: str) -> Image:
        """Add the image in ``archive`` under the alias ``name`` (capability IMPORT_IMAGE).

        ``sha256`` is the archive's digest: an archive already imported is not sent again.
        The alias moves to the new image; the image it pointed to before is deleted.
        """
        raise NotSupported(f"the {self.kind} connector cannot import images")

    def publish_image(
        self,
        name: str,
        *,
        alias: str,
        properties: Mapping[str, str] | None = None,
        description: str = "",
    ) -> Image:
        """Make an image of instance ``name`` under the new alias ``alias`` (capability
        PUBLISH_IMAGE).

        Post-conditions: the image holds the instance's root filesystem as it is now, with
        ``properties`` (and ``description``) among its properties; a running instance is
        published from a snapshot taken for the purpose and removed after, so it keeps running;
        the instance is left as it was found. Raises ``NotFound`` when there is no such
        instance and ``Conflict`` when the alias is taken (nothing is published then). Not
        idempotent: publishing twice makes two images.
        """
        raise NotSupported(f"the {self.kind} connector cannot publish instances as images")

    def delete_image(self, name: str) -> None:
        """Delete the image called ``name`` (alias) or with that fingerprint, and its aliases
        (capability PUBLISH_IMAGE). Idempotent: deleting an image that is gone succeeds.
        Instances created from it are not affected."""
        raise NotSupported(f"the {self.kind} connector cannot delete images")

    def create_snapshot(self, name: str, snapshot: str) -> Snapshot:
        """Take a snapshot called ``snapshot`` of instance ``name``'s root filesystem
        (capability SNAPSHOT), running or not.

        Post-conditions: the snapshot is listed by :meth:`list_snapshots`; it is stateless
        (files only, no memory); a running instance keeps running. Raises ``NotFound`` when
        there is no such instance and ``Conflict`` when the instance has a snapshot of that
        name (nothing is taken then). Not idempotent.
        """
        raise NotSupported(f"the {self.kind} connector cannot take snapshots")

    def list_snapshots(self, name: str) -> list[Snapshot]:
        """Instance ``name``'s snapshots, oldest first (capability SNAPSHOT); ``NotFound``
        when there is no such instance."""
        raise NotSupported(f"the {self.kind} connector cannot take snapshots")

    def restore_snapshot(self, name: str, snapshot: str) -> None:
        """Put instance ``name``'s root filesystem back as it was when ``snapshot`` was taken
        (capability SNAPSHOT).

        Post-conditions: what was written after the snapshot is gone and what was deleted is
        back; the snapshot is kept (it can be restored again). A stopped instance stays
        stopped. A running instance is restored in place and is running after: it is stopped,
        restored and started again, so its processes start afresh, as after a reboot. Raises
        ``NotFound`` when there is no such instance or snapshot (nothing is changed then).
        """
        raise NotSupported(f"the {self.kind} connector cannot take snapshots")

    def delete_snapshot(self, name: str, snapshot: str) -> None:
        """Delete instance ``name``'s snapshot ``snapshot`` (capability SNAPSHOT). Idempotent:
        deleting a snapshot that is gone succeeds; ``NotFound`` only when there is no such
        instance."""
        raise NotSupported(f"the {self.kind} connector cannot take snapshots")

    def export_image(self, name: str, dest: Path) -> Image:
        """Write the image called ``name`` (alias or fingerprint, as :meth:`get_image`) to
        ``dest`` and return it (capability EXPORT_IMAGE).

        Post-conditions: ``dest`` holds the image's unified tarball, whole, whose SHA-256 is the
        image's fingerprint (what a Marketplace entry's checksums are of); on failure ``dest``
        does not exist. The image is left as it was. Raises ``NotFound`` for an unknown image,
        ``NotSupported`` for one that is not a single tarball (an LXD split image) or whose
        bytes the backend cannot give, and ``BackendError`` when the backend sends more than the
        image's size or takes too long.
        """
        raise NotSupported(f"the {self.kind} connector cannot export images")

    def close(self) -> None:  # optional hook, most connectors hold nothing
        """Release connections. Safe to call twice."""

    def require(self, capability: Capability) -> None:
        if capability not in self.capabilities:
            raise NotSupported(f"the {self.kind} connector does not support {capability.value}")
