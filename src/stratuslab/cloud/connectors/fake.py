"""An in-memory backend for fast unit tests and control-plane benchmarks.

It keeps the contract's promises (it passes the same contract suite as LXD) but nothing runs:
an instance is a record with an address from a private range. Instances of one ``namespace``
are shared by every connector object in the process, so that several CLI invocations in one
test see the same backend. Faults are injected with :meth:`FakeConnector.ex_fail_next`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import tarfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import yaml

from stratuslab.cloud.base import (
    UNKNOWN_IMAGE_HINT,
    Capacity,
    Connector,
    ExecResult,
    Image,
    Instance,
    InstanceSpec,
    Snapshot,
)
from stratuslab.cloud.connectors.fake_volumes import FakeVolumes, VolumeState
from stratuslab.cloud.types import Capability, InstanceState
from stratuslab.errors import (
    BackendError,
    BackendUnavailable,
    CapacityExceeded,
    Conflict,
    NotFound,
    NotSupported,
    StratusError,
)

ExecHandler = Callable[[Instance, Sequence[str]], ExecResult]


@dataclass
class _Backend:
    instances: dict[str, Instance] = field(default_factory=dict)
    images: dict[str, Image] = field(default_factory=dict)
    failures: dict[str, StratusError] = field(default_factory=dict)
    next_host: int = 10
    ram_used: int = 0  # MiB held by the instances: kept, not summed, at every create
    outage: str | None = None  # every call fails with this while set (ex_outage)
    published: int = 0  # images published, so that each gets a fingerprint of its own
    # An instance's snapshots, oldest first, each with the instance's record as it was.
    snapshots: dict[str, dict[str, tuple[Snapshot, Instance]]] = field(default_factory=dict)
    archives: dict[str, bytes] = field(default_factory=dict)  # imported images' bytes, by sha256
    exec_handler: ExecHandler | None = None  # what every connector of the backend runs
    volume_state: VolumeState = field(default_factory=VolumeState)
    lock: threading.Lock = field(default_factory=threading.Lock)


ARCHIVES_BYTES = 64 * 2**20  # what one backend keeps of the archives it imported, in all
_BACKENDS: dict[str, _Backend] = {}
_BACKENDS_LOCK = threading.Lock()


class FakeConnector(FakeVolumes, Connector):
    """Instances that exist only in this process."""

    kind = "fake"
    capabilities = frozenset(
        {
            Capability.EXEC,
            Capability.IMPORT_IMAGE,
            Capability.EXPORT_IMAGE,
            Capability.PUBLISH_IMAGE,
            Capability.SNAPSHOT,
            Capability.VOLUMES,
        }
    )

    _backend: _Backend

    def __init__(
        self,
        *,
        namespace: str = "default",
        cpus: int = 8,
        memory_mb: int = 16384,
        disk_mb: int = 100_000,
        subnet: str = "10.99.0.0/16",
        images: Sequence[str] = ("debian-12",),
        exec_handler: ExecHandler | None = None,
    ) -> None:
        with _BACKENDS_LOCK:
            self._backend = _BACKENDS.setdefault(namespace, _Backend())
        self._cpus, self._memory_mb, self._disk_mb = cpus, memory_mb, disk_mb
        self._network = ipaddress.ip_network(subnet)
        self._exec = exec_handler or _default_exec
        with self._backend.lock:
            for name in images:
                self._backend.images.setdefault(
                    name,
                    Image(
                        name=name, fingerprint=f"{abs(hash(name)):064x}"[:64], size_bytes=1 << 20
                    ),
                )

    # -- the contract ---------------------------------------------------------------------

    def create(self, spec: InstanceSpec) -> Instance:
        self._maybe_fail("create")
        image = self.get_image(spec.image)
        with self._backend.lock:
            if spec.name in self._backend.instances:
                raise Conflict(
                    f"an instance called {spec.name!r} already exists on the fake backend"
                )
            for mount in spec.volumes:
                self._volume(mount.volume)
            used = self._backend.ram_used
            if used + (spec.ram_mb or 0) > self._memory_mb:
                raise CapacityExceeded(
                    f"the fake backend has {self._memory_mb - used} MiB of memory left"
                )
            self._backend.next_host += 1
            instance = Instance(
                name=spec.name,
                state=InstanceState.RUNNING,
                image=image.name,
                cpu=spec.cpu,
                ram_mb=spec.ram_mb,
                tags={k: v for k, v in spec.tags.items() if v},  # as LXD: no empty keys
                created_at=datetime.now(UTC),
                extra={
                    "address": str(self._network.network_address + self._backend.next_host),
                    "user_data": spec.user_data,
                    "ssh_keys": list(spec.ssh_keys),
                },
            )
            self._backend.instances[spec.name] = instance
            self._backend.ram_used += spec.ram_mb or 0
            self._backend.volume_state.mounts[spec.name] = {m.volume: m for m in spec.volumes}
            return instance

    def wait_for_address(self, name: str, timeout: float) -> Instance:
        self._maybe_fail("wait_for_address")
        instance = self.get(name)
        if instance.state != InstanceState.RUNNING:
            raise BackendError(f"instance {name} is {instance.state.value}, it will get no address")
        return instance

    def start(self, name: str) -> Instance:
        self._maybe_fail("start")
        return self._set_state(name, InstanceState.RUNNING)

    def stop(self, name: str, *, timeout: float = 30.0) -> Instance:
        self._maybe_fail("stop")
        return self._set_state(name, InstanceState.STOPPED)

    def destroy(self, name: str) -> None:
        self._maybe_fail("destroy")
        with self._backend.lock:
            gone = self._backend.instances.pop(name, None)
            self._backend.snapshots.pop(name, None)  # as LXD: they go with their instance
            self.ex_forget_instance(name)
            if gone is not None:
                self._backend.ram_used -= gone.ram_mb or 0

    def get(self, name: str) -> Instance:
        with self._backend.lock:
            instance = self._backend.instances.get(name)
        if instance is None:
            raise NotFound(f"the fake backend has no instance called {name!r}")
        return _with_addresses(instance)

    def list_instances(
        self,
        *,
        tags: Mapping[str, str] | None = None,
        has_tag: str | None = None,
        addresses: bool = True,
    ) -> list[Instance]:
        self._maybe_fail("list")
        with self._backend.lock:
            found = list(self._backend.instances.values())
        wanted = dict(tags or {})
        return [_with_addresses(i) if addresses else i for i in found if i.carries(wanted, has_tag)]

    def list_images(self) -> list[Image]:
        with self._backend.lock:
            return list(self._backend.images.values())

    def get_image(self, name: str) -> Image:
        self._maybe_fail("get_image")
        with self._backend.lock:
            image = self._backend.images.get(name) or next(
                (i for i in self._backend.images.values() if i.fingerprint == name), None
            )
        if image is None:
            raise NotFound(f"no image called {name!r}", hint=UNKNOWN_IMAGE_HINT)
        return image

    def capacity(self) -> Capacity:
        self._maybe_fail("capacity")
        with self._backend.lock:
            used = self._backend.ram_used
        return Capacity(
            cpus=self._cpus,
            memory_total_mb=self._memory_mb,
            memory_free_mb=self._memory_mb - used,
            disk_total_mb=self._disk_mb,
            disk_free_mb=self._disk_mb,
        )

    def exec(
        self,
        name: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        instance = self.get(name)
        if instance.state != InstanceState.RUNNING:
            raise BackendError(f"instance {name} is not running")
        with self._backend.lock:
            handler = self._backend.exec_handler or self._exec
        return handler(instance, command)

    def import_image(self, archive: Path, *, name: str, sha256: str) -> Image:
        self._maybe_fail("import_image")
        with tarfile.open(archive) as tar:
            member = tar.extractfile("metadata.yaml")
            metadata = yaml.safe_load(member.read()) if member else {}
        properties = {str(k): str(v) for k, v in (metadata.get("properties") or {}).items()}
        image = Image(
            name=name,
            fingerprint=sha256,
            size_bytes=archive.stat().st_size,
            description=properties.get("description", ""),
            properties=properties,
        )
        size = archive.stat().st_size
        with self._backend.lock:
            self._backend.images[name] = image
            kept = sum(len(data) for data in self._backend.archives.values())
            if sha256 not in self._backend.archives and kept + size <= ARCHIVES_BYTES:
                self._backend.archives[sha256] = archive.read_bytes()
        return image

    def export_image(self, name: str, dest: Path) -> Image:
        self._maybe_fail("export_image")
        image = self.get_image(name)
        with self._backend.lock:
            data = self._backend.archives.get(image.fingerprint)
        if data is None:
            raise NotSupported(
                f"the fake backend has no bytes for image {name!r}: it keeps those of the images"
                f" it imported (at most {ARCHIVES_BYTES // 2**20} MiB), not of those it was"
                " made with"
            )
        dest.write_bytes(data)
        return image

    def publish_image(
        self,
        name: str,
        *,
        alias: str,
        properties: Mapping[str, str] | None = None,
        description: str = "",
    ) -> Image:
        self._maybe_fail("publish_image")
        instance = self.get(name)
        with self._backend.lock:
            if alias in self._backend.images:
                raise Conflict(f"an image called {alias!r} exists already")
            self._backend.published += 1
            fingerprint = hashlib.sha256(
                f"{name}/{alias}/{self._backend.published}".encode()
            ).hexdigest()
            source = self._backend.images.get(instance.image)
            image = Image(
                name=alias,
                fingerprint=fingerprint,
                size_bytes=source.size_bytes if source else 1 << 20,
                description=description,
                created_at=datetime.now(UTC),
                # As LXD does, the image inherits the properties of the one the instance
                # came from (its `image.*` keys), then takes those given.
                properties={
                    **(source.properties if source else {}),
                    **(properties or {}),
                    "description": description,
                },
            )
            self._backend.images[alias] = image
        return image

    def delete_image(self, name: str) -> None:
        self._maybe_fail("delete_image")
        with self._backend.lock:
            for alias, image in list(self._backend.images.items()):
                if name in (alias, image.fingerprint):
                    del self._backend.images[alias]

    def create_snapshot(self, name: str, snapshot: str) -> Snapshot:
        self._maybe_fail("create_snapshot")
        with self._backend.lock:
            instance = self._instance(name)
            taken = self._backend.snapshots.setdefault(name, {})
            if snapshot in taken:
                raise Conflict(f"instance {name} has a snapshot called {snapshot!r} already")
            made = Snapshot(name=snapshot, created_at=datetime.now(UTC), size_bytes=0)
            taken[snapshot] = (made, instance)
            return made

    def list_snapshots(self, name: str) -> list[Snapshot]:
        with self._backend.lock:
            self._instance(name)
            return [made for made, _ in self._backend.snapshots.get(name, {}).values()]

    def restore_snapshot(self, name: str, snapshot: str) -> None:
        self._maybe_fail("restore_snapshot")
        with self._backend.lock:
            current = self._instance(name)
            kept = self._backend.snapshots.get(name, {}).get(snapshot)
            if kept is None:
                raise NotFound(f"instance {name} has no snapshot called {snapshot!r}")
            # What the instance held comes back; its state (running or not) stays as it is.
            self._backend.instances[name] = replace(kept[1], state=current.state)

    def delete_snapshot(self, name: str, snapshot: str) -> None:
        self._maybe_fail("delete_snapshot")
        with self._backend.lock:
            self._instance(name)
            self._backend.snapshots.get(name, {}).pop(snapshot, None)

    # -- fake-only extras -----------------------------------------------------------------

    def ex_fail_next(self, operation: str, error: StratusError) -> None:
        """Make the next call of ``operation`` (create, start, stop, destroy, list, ...) raise."""
        with self._backend.lock:
            self._backend.failures[operation] = error

    def ex_on_exec(self, handler: ExecHandler | None) -> None:
        """Make every connector of this backend run ``handler`` for exec (None: the default),
        for a test whose server makes its connectors itself."""
        with self._backend.lock:
            self._backend.exec_handler = handler

    def ex_vanish(self, name: str) -> None:
        """Remove an instance behind the project's back, as an operator with `lxc delete` would."""
        with self._backend.lock:
            gone = self._backend.instances.pop(name, None)
            self.ex_forget_instance(name)
            if gone is not None:
                self._backend.ram_used -= gone.ram_mb or 0

    @staticmethod
    def ex_reset(namespace: str = "default") -> None:
        with _BACKENDS_LOCK:
            _BACKENDS.pop(namespace, None)

    # -- helpers --------------------------------------------------------------------------

    def ex_outage(self, why: str | None) -> None:
        """Make every call to this backend fail with ``BackendUnavailable(why)`` until it is
        called again with None: a host that is down, or cut off by the network."""
        with self._backend.lock:
            self._backend.outage = why

    def _maybe_fail(self, operation: str) -> None:
        with self._backend.lock:
            error = self._backend.failures.pop(operation, None)
            outage = self._backend.outage
        if outage is not None:
            raise BackendUnavailable(outage)
        if error is not None:
            raise error

    def _instance(self, name: str) -> Instance:
        """The instance called ``name``; the caller holds the lock."""
        instance = self._backend.instances.get(name)
        if instance is None:
            raise NotFound(f"the fake backend has no instance called {name!r}")
        return instance

    def _set_state(self, name: str, state: InstanceState) -> Instance:
        with self._backend.lock:
            instance = self._backend.instances.get(name)
            if instance is None:
                raise NotFound(f"the fake backend has no instance called {name!r}")
            self._backend.instances[name] = replace(instance, state=state)
        return self.get(name)


def _with_addresses(instance: Instance) -> Instance:
    running = instance.state == InstanceState.RUNNING
    return replace(instance, addresses=(str(instance.extra["address"]),) if running else ())


def _default_exec(instance: Instance, command: Sequence[str]) -> ExecResult:
    program, *args = list(command) or [""]
    if program == "echo":
        return ExecResult(0, " ".join(args) + "\n", "")
    if program == "hostname":
        return ExecResult(0, instance.name + "\n", "")
    if program in ("true", "false"):
        return ExecResult(0 if program == "true" else 1, "", "")
    return ExecResult(127, "", f"{program}: command not found\n")
