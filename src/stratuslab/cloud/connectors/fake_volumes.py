"""The fake backend's volumes: records in memory that keep the contract's promises (it passes
the volume part of the contract suite), for unit tests and control-plane benchmarks.

A volume holds no files: what a volume's filesystem does is proven on LXD. What the fake keeps
is what the service relies on: names, sizes, tags, snapshots, and which instance mounts which
volume where, so that a double attach, a delete of an attached volume or a path taken twice is
refused as LXD refuses it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from stratuslab.cloud.base import Instance, Mount, Volume, VolumeSnapshot, VolumeSpec
from stratuslab.errors import Conflict, NotFound

if TYPE_CHECKING:
    from stratuslab.errors import StratusError


@dataclass
class VolumeState:
    """What one fake backend holds of volumes; guarded by the backend's lock."""

    volumes: dict[str, Volume] = field(default_factory=dict)
    snapshots: dict[str, dict[str, VolumeSnapshot]] = field(default_factory=dict)
    mounts: dict[str, dict[str, Mount]] = field(default_factory=dict)  # instance -> volume -> mount


class _Backend(Protocol):
    instances: dict[str, Instance]
    volume_state: VolumeState
    lock: threading.Lock
    failures: dict[str, StratusError]


class FakeVolumes:
    """The volume operations of :class:`~stratuslab.cloud.connectors.fake.FakeConnector`."""

    _backend: _Backend

    if TYPE_CHECKING:

        def _maybe_fail(self, operation: str) -> None: ...  # the connector's

    def create_volume(self, spec: VolumeSpec) -> Volume:
        self._maybe_fail("create_volume")
        with self._backend.lock:
            state = self._backend.volume_state
            if spec.name in state.volumes:
                raise Conflict(f"a volume called {spec.name!r} already exists on the fake backend")
            size = spec.size_bytes
            if spec.source is not None:
                origin, _, snapshot = spec.source.partition("/")
                source = self._volume(origin)
                if snapshot and snapshot not in state.snapshots.get(origin, {}):
                    raise NotFound(f"volume {origin} has no snapshot called {snapshot!r}")
                size = max(size, source.size_bytes)
            made = Volume(
                name=spec.name,
                size_bytes=size,
                tags={k: v for k, v in spec.tags.items() if v},
                created_at=datetime.now(UTC),
            )
            state.volumes[spec.name] = made
            return made

    def get_volume(self, name: str) -> Volume:
        with self._backend.lock:
            return self._with_users(self._volume(name))

    def list_volumes(self, *, tags: Mapping[str, str] | None = None) -> list[Volume]:
        self._maybe_fail("list_volumes")
        wanted = dict(tags or {})
        with self._backend.lock:
            return [
                self._with_users(v)
                for v in self._backend.volume_state.volumes.values()
                if all(v.tags.get(k) == value for k, value in wanted.items())
            ]

    def delete_volume(self, name: str) -> None:
        self._maybe_fail("delete_volume")
        with self._backend.lock:
            state = self._backend.volume_state
            if name not in state.volumes:
                return
            users = self._users(name)
            if users:
                raise Conflict(f"volume {name} is attached to {', '.join(users)}")
            del state.volumes[name]
            state.snapshots.pop(name, None)

    def resize_volume(self, name: str, size_bytes: int) -> Volume:
        self._maybe_fail("resize_volume")
        with self._backend.lock:
            volume = self._volume(name)
            if size_bytes < volume.size_bytes and self._backend.volume_state.snapshots.get(name):
                raise Conflict(f"volume {name} has snapshots: it can grow, not shrink")
            resized = replace(volume, size_bytes=size_bytes)
            self._backend.volume_state.volumes[name] = resized
            return self._with_users(resized)

    def attach_volume(self, instance: str, mount: Mount) -> None:
        self._maybe_fail("attach_volume")
        with self._backend.lock:
            if instance not in self._backend.instances:
                raise NotFound(f"the fake backend has no instance called {instance!r}")
            self._volume(mount.volume)
            held = self._backend.volume_state.mounts.setdefault(instance, {})
            there = held.get(mount.volume)
            if there == mount:
                return
            if there is not None:
                raise Conflict(f"volume {mount.volume} is attached to {instance} at {there.path}")
            if any(m.path == mount.path for m in held.values()):
                raise Conflict(f"instance {instance} has a volume at {mount.path} already")
            held[mount.volume] = mount

    def detach_volume(self, instance: str, volume: str) -> None:
        self._maybe_fail("detach_volume")
        with self._backend.lock:
            self._backend.volume_state.mounts.get(instance, {}).pop(volume, None)

    def create_volume_snapshot(self, volume: str, snapshot: str) -> VolumeSnapshot:
        self._maybe_fail("create_volume_snapshot")
        with self._backend.lock:
            self._volume(volume)
            taken = self._backend.volume_state.snapshots.setdefault(volume, {})
            if snapshot in taken:
                raise Conflict(f"volume {volume} has a snapshot called {snapshot!r} already")
            made = VolumeSnapshot(name=snapshot, created_at=datetime.now(UTC))
            taken[snapshot] = made
            return made

    def list_volume_snapshots(self, volume: str) -> list[VolumeSnapshot]:
        with self._backend.lock:
            self._volume(volume)
            return list(self._backend.volume_state.snapshots.get(volume, {}).values())

    def restore_volume_snapshot(self, volume: str, snapshot: str) -> None:
        self._maybe_fail("restore_volume_snapshot")
        with self._backend.lock:
            self._volume(volume)
            if snapshot not in self._backend.volume_state.snapshots.get(volume, {}):
                raise NotFound(f"volume {volume} has no snapshot called {snapshot!r}")
            running = [
                user
                for user in self._users(volume)
                if self._backend.instances[user].state.value == "running"
            ]
            if running:
                raise Conflict(f"volume {volume} is attached to running {', '.join(running)}")

    def delete_volume_snapshot(self, volume: str, snapshot: str) -> None:
        self._maybe_fail("delete_volume_snapshot")
        with self._backend.lock:
            self._volume(volume)
            self._backend.volume_state.snapshots.get(volume, {}).pop(snapshot, None)

    # -- helpers (the caller holds the lock) ----------------------------------------------

    def ex_forget_instance(self, instance: str) -> None:
        """What destroying an instance does to its mounts: they go with it."""
        self._backend.volume_state.mounts.pop(instance, None)

    def ex_vanish_volume(self, name: str) -> None:
        """Remove a volume behind the project's back, as an operator with `lxc` would."""
        with self._backend.lock:
            self._backend.volume_state.volumes.pop(name, None)
            self._backend.volume_state.snapshots.pop(name, None)

    def ex_mounts(self, instance: str) -> dict[str, Mount]:
        """The volumes ``instance`` mounts, by volume: what the instance would see."""
        with self._backend.lock:
            return dict(self._backend.volume_state.mounts.get(instance, {}))

    def _volume(self, name: str) -> Volume:
        volume = self._backend.volume_state.volumes.get(name)
        if volume is None:
            raise NotFound(f"the fake backend has no volume called {name!r}")
        return volume

    def _users(self, volume: str) -> list[str]:
        return sorted(
            instance
            for instance, held in self._backend.volume_state.mounts.items()
            if volume in held and instance in self._backend.instances
        )

    def _with_users(self, volume: Volume) -> Volume:
        return replace(volume, used_by=tuple(self._users(volume.name)))
