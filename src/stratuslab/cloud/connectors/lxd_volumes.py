"""LXD custom storage volumes, for the LXD connector (``lxd.py``, which inherits them).

A volume is a custom storage volume (``/1.0/storage-pools/<pool>/volumes/custom/<name>``) on
the pool of the connector's profile's root disk, so that it lives beside the instances' root
disks and a clone or a snapshot is a copy-on-write subvolume on btrfs. Its tags are
``user.stratus.<key>`` keys of its configuration, as an instance's are; its size is its
``size`` key (on btrfs a quota on what it references, which is why ``df`` inside an instance
shows the pool's size, not the volume's); ``used_by`` is LXD's, instances only.

A volume is attached as a ``disk`` device of the instance (``pool``, ``source``, ``path``,
``readonly``) called ``vol-<volume>`` (see :func:`device_name`); LXD mounts it at once in a
running container and at the next start of a stopped one. An attachment is found by what the
device mounts (this pool, this volume), not by its name, so a volume attached by hand with
``lxc config device add`` counts too. Changes to an instance's devices are sent with the
ETag of what was read (``If-Match``): a change made meanwhile by anyone (another attach, LXD
updating its volatile keys) makes LXD refuse ours, and the instance is read and the decision
taken again, so that no attachment is ever lost to a concurrent one.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from stratuslab.cloud.base import TAG_KEY, Mount, Volume, VolumeSnapshot, VolumeSpec
from stratuslab.cloud.connectors.lxd_api import LxdApi, Stale
from stratuslab.cloud.connectors.lxd_images import lxd_time
from stratuslab.errors import BackendError, Conflict, Invalid, NotFound, NotSupported

TAG_PREFIX = "user.stratus."
DEVICE_PREFIX = "vol-"
# A copy, a snapshot, a restore or a delete is a copy-on-write subvolume operation on btrfs
# (well under a second); on a dir pool it copies every file.
VOLUME_TIMEOUT = 300.0
# Attempts at changing an instance's devices that LXD refuses because the instance changed
# since it was read. Each is a GET and a PATCH or PUT (milliseconds): only a storm of changes
# to one instance outlasts them, and then the caller is told to try again.
_ETAG_ATTEMPTS = 8
_DEVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,59}$")
_LXD_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKMGTPE]?)(i?)B?\s*$")
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}
_PUT_KEYS = ("architecture", "config", "devices", "ephemeral", "profiles", "stateful")


def device_name(volume: str) -> str:
    """The instance device that attaches ``volume``: ``vol-<volume>``, or, for a volume name
    that is not a device name LXD takes (letters, digits, ``.``, ``_``, ``-``; 64 at most),
    ``vol-`` and the first 16 hex digits of the name's SHA-256."""
    if _DEVICE_NAME.match(volume):
        return DEVICE_PREFIX + volume
    return DEVICE_PREFIX + hashlib.sha256(volume.encode()).hexdigest()[:16]


class LxdVolumes:
    """The volume operations of the LXD connector."""

    api: LxdApi
    profile: str
    _pool: str | None  # the profile's root disk pool, read once

    if TYPE_CHECKING:

        def _profile_pool(self) -> str | None: ...  # the connector's

    def create_volume(self, spec: VolumeSpec) -> Volume:
        config = _tag_config(spec.tags)
        size = spec.size_bytes
        body: dict[str, Any] = {"name": spec.name, "type": "custom", "config": config}
        if spec.source is not None:
            origin, _, snapshot = spec.source.partition("/")
            copied = self._raw_volume(origin)
            if snapshot:
                copied = self._volume_snapshot(origin, snapshot)
            size = max(size, _size_of(copied))
            # volume_only: the clone starts with no snapshots of its own.
            source = {"type": "copy", "name": spec.source, "volume_only": True}
            body["source"] = {**source, "pool": self._volume_pool()}
        config["size"] = str(size)
        try:
            self.api.post(self._volume_path(), body, timeout=VOLUME_TIMEOUT)
        except Conflict as exc:
            raise Conflict(f"a volume called {spec.name!r} already exists on LXD") from exc
        return self.get_volume(spec.name)

    def get_volume(self, name: str) -> Volume:
        return _to_volume(self._raw_volume(name))

    def list_volumes(self, *, tags: Mapping[str, str] | None = None) -> list[Volume]:
        wanted = dict(tags or {})
        found = []
        for raw in self.api.get(self._volume_path(), recursion=1) or []:
            if "/" in raw.get("name", "/") or raw.get("type", "custom") != "custom":
                continue  # a snapshot, listed beside its volume by some LXD versions
            volume = _to_volume(raw)
            if all(volume.tags.get(k) == v for k, v in wanted.items()):
                found.append(volume)
        return found

    def delete_volume(self, name: str) -> None:
        try:
            users = _to_volume(self._raw_volume(name)).used_by
        except NotFound:
            return
        if users:
            raise Conflict(f"volume {name} is attached to {', '.join(users)}")
        try:  # its snapshots go with it
            self.api.delete(self._volume_path(name), timeout=VOLUME_TIMEOUT)
        except NotFound:
            return
        except Invalid as exc:  # "The storage volume is still in use": attached meanwhile
            if "in use" not in exc.message:
                raise
            users = _to_volume(self._raw_volume(name)).used_by
            raise Conflict(f"volume {name} is attached to {', '.join(users)}") from exc

    def resize_volume(self, name: str, size_bytes: int) -> Volume:
        raw = self._raw_volume(name)
        if size_bytes < _size_of(raw):
            self._check_shrink(name, size_bytes)
        body = {"config": {"size": str(size_bytes)}, "description": raw.get("description", "")}
        try:
            self.api.patch(self._volume_path(name), body)
        except BackendError as exc:
            if "quota exceeded" not in exc.message.lower():
                raise
            raise Conflict(
                f"volume {name}: its files take more than {size_bytes} bytes (btrfs refused)"
            ) from exc
        return self.get_volume(name)

    def attach_volume(self, instance: str, mount: Mount) -> None:
        device = self._device(mount)

        def add(raw: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
            devices: Mapping[str, Mapping[str, str]] = raw.get("expanded_devices") or {}
            for held in devices.values():
                if self._mounts(held, mount.volume):
                    if _same_mount(held, device):
                        return None
                    mode = " read-only" if _read_only(held) else ""
                    where = f"{held.get('path')}{mode}"
                    raise Conflict(f"volume {mount.volume} is attached to {instance} at {where}")
            for held in devices.values():
                if held.get("type") == "disk" and _same_path(held.get("path"), mount.path):
                    raise Conflict(f"instance {instance} has a volume at {mount.path} already")
            name = device_name(mount.volume)
            if name in devices:
                raise Conflict(f"instance {instance} has a device called {name} already")
            # PATCH merges devices by name; LXD mounts the new one before it answers.
            return "PATCH", {"devices": {name: device}, "description": raw.get("description")}

        try:
            self._change_devices(instance, add)
        except NotFound:  # LXD has no such volume, or no such instance
            self._raw_volume(mount.volume)  # NotFound naming the volume when it is missing
            raise

    def detach_volume(self, instance: str, volume: str) -> None:
        def remove(raw: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
            devices = dict(raw.get("devices") or {})
            attached = [name for name, held in devices.items() if self._mounts(held, volume)]
            if not attached:
                return None
            for name in attached:
                del devices[name]
            # PATCH cannot remove a device: the instance is PUT back without it, LXD
            # unmounting it before the operation ends.
            body = {key: raw[key] for key in _PUT_KEYS if key in raw}
            return "PUT", {**body, "devices": devices, "description": raw.get("description")}

        with contextlib.suppress(NotFound):  # no such instance: nothing attached there
            self._change_devices(instance, remove)

    def create_volume_snapshot(self, volume: str, snapshot: str) -> VolumeSnapshot:
        try:
            self.api.post(
                self._volume_path(volume, "snapshots"),
                {"name": snapshot},
                timeout=VOLUME_TIMEOUT,
            )
        except NotFound as exc:
            raise NotFound(f"LXD has no volume called {volume!r}") from exc
        except Conflict as exc:
            raise Conflict(f"volume {volume} has a snapshot called {snapshot!r} already") from exc
        return _to_snapshot(self._volume_snapshot(volume, snapshot))

    def list_volume_snapshots(self, volume: str) -> list[VolumeSnapshot]:
        try:
            raw = self.api.get(self._volume_path(volume, "snapshots"), recursion=1)
        except NotFound as exc:
            raise NotFound(f"LXD has no volume called {volume!r}") from exc
        if not raw:
            self._raw_volume(volume)  # LXD lists no snapshots of a volume it does not have
        # In the order they were taken, as LXD lists them (LXD 5.0 keeps no creation time of a
        # volume or its snapshots: it says 0001-01-01, read as None).
        return [_to_snapshot(r) for r in raw or []]

    def restore_volume_snapshot(self, volume: str, snapshot: str) -> None:
        self._volume_snapshot(volume, snapshot)  # NotFound, for the volume or the snapshot
        running = self._running_users(volume)
        if running:
            raise Conflict(f"volume {volume} is attached to running {', '.join(running)}")
        try:
            self.api.put(self._volume_path(volume), {"restore": snapshot}, timeout=VOLUME_TIMEOUT)
        except BackendError as exc:  # an instance using it started meanwhile
            if "running" not in exc.message:
                raise
            running = self._running_users(volume)
            raise Conflict(f"volume {volume} is attached to running {', '.join(running)}") from exc

    def delete_volume_snapshot(self, volume: str, snapshot: str) -> None:
        try:
            self.api.delete(
                self._volume_path(volume, "snapshots", snapshot), timeout=VOLUME_TIMEOUT
            )
        except NotFound:
            self._raw_volume(volume)  # NotFound when the volume is gone; a missing one is fine

    # -- extensions -----------------------------------------------------------------------

    def ex_volume_devices(self, mounts: Sequence[Mount]) -> dict[str, dict[str, str]]:
        """The disk devices that attach ``mounts`` in an instance's create body, so that they
        are mounted before its first start; ``NotFound`` for a volume LXD does not have."""
        devices = {}
        for mount in mounts:
            self._raw_volume(mount.volume)
            devices[device_name(mount.volume)] = self._device(mount)
        return devices

    # -- helpers --------------------------------------------------------------------------

    def _volume_pool(self) -> str:
        if self._pool is None:
            pool = self._profile_pool()
            if pool is None:
                raise NotSupported(
                    f"LXD profile {self.profile!r} has no root disk on a storage pool: volumes"
                    " live on that pool"
                )
            self._pool = pool
        return self._pool

    def _volume_path(self, *parts: str) -> str:
        return LxdApi.path("storage-pools", self._volume_pool(), "volumes", "custom", *parts)

    def _raw_volume(self, name: str) -> Any:
        try:
            return self.api.get(self._volume_path(name))
        except NotFound as exc:
            raise NotFound(f"LXD has no volume called {name!r}") from exc

    def _volume_snapshot(self, volume: str, snapshot: str) -> Any:
        try:
            return self.api.get(self._volume_path(volume, "snapshots", snapshot))
        except NotFound as exc:
            self._raw_volume(volume)  # NotFound naming the volume when that is what is missing
            raise NotFound(f"volume {volume} has no snapshot called {snapshot!r}") from exc

    def _change_devices(
        self,
        instance: str,
        change: Callable[[Mapping[str, Any]], tuple[str, dict[str, Any]] | None],
    ) -> None:
        """Read ``instance`` with its ETag, let ``change`` decide what to send (None: nothing)
        and send it with ``If-Match``; while LXD refuses because the instance changed since it
        was read, read it and decide again."""
        path = LxdApi.path("instances", instance)
        for _ in range(_ETAG_ATTEMPTS):
            try:
                raw, etag = self.api.get_with_etag(path)
            except NotFound as exc:
                raise NotFound(f"LXD has no instance called {instance!r}") from exc
            request = change(raw)
            if request is None:
                return
            method, body = request
            try:
                self.api.request(method, path, json=body, headers={"If-Match": etag})
                return
            except BackendError as exc:
                if not _changed_meanwhile(exc):
                    raise
        raise Conflict(f"instance {instance} kept changing while its volumes were: try again")

    def _device(self, mount: Mount) -> dict[str, str]:
        device = {"type": "disk", "pool": self._volume_pool(), "source": mount.volume}
        device["path"] = mount.path
        if mount.read_only:
            device["readonly"] = "true"
        return device

    def _mounts(self, device: Mapping[str, str], volume: str) -> bool:
        """Whether ``device`` is a disk that mounts ``volume`` of the connector's pool."""
        return (
            device.get("type") == "disk"
            and device.get("source") == volume
            and device.get("pool") == self._volume_pool()
        )

    def _check_shrink(self, name: str, size_bytes: int) -> None:
        """Refuse a shrink below what the volume's files take, before LXD is asked: btrfs
        applies a quota below its usage and then fails, leaving the volume over its quota
        (every write and every later resize refused) while LXD still says the old size."""
        if self.list_volume_snapshots(name):
            # LXD reports a btrfs volume's exclusive usage, what no snapshot shares, while its
            # quota bounds all it references: with snapshots, what its files take is unknown.
            raise Conflict(
                f"volume {name} has snapshots: LXD cannot tell what its files take, so it is"
                " shrunk only without them (delete them first, or give a size no smaller)"
            )
        with contextlib.suppress(NotFound, BackendError):  # a pool without usage figures
            usage = self.api.get(self._volume_path(name, "state")) or {}
            used = int((usage.get("usage") or {}).get("used", -1))
            if used > size_bytes:
                raise Conflict(
                    f"volume {name}: its files take {used} bytes, more than {size_bytes}"
                )

    def _running_users(self, volume: str) -> list[str]:
        running = []
        for user in _to_volume(self._raw_volume(volume)).used_by:
            with contextlib.suppress(NotFound):
                status = self.api.get(LxdApi.path("instances", user)).get("status")
                if status not in ("Stopped", None):
                    running.append(user)
        return running


# -- converters ---------------------------------------------------------------------------


def _to_volume(raw: Mapping[str, Any]) -> Volume:
    config: Mapping[str, str] = raw.get("config") or {}
    return Volume(
        name=raw["name"],
        size_bytes=_size_of(raw),
        tags={k.removeprefix(TAG_PREFIX): v for k, v in config.items() if k.startswith(TAG_PREFIX)},
        created_at=lxd_time(raw.get("created_at")),
        used_by=tuple(sorted(_instances(raw.get("used_by") or []))),
    )


def _to_snapshot(raw: Mapping[str, Any]) -> VolumeSnapshot:
    return VolumeSnapshot(
        name=str(raw["name"]).rsplit("/", 1)[-1], created_at=lxd_time(raw.get("created_at"))
    )


def _instances(used_by: Sequence[str]) -> list[str]:
    """The instance names in LXD's ``used_by`` (``/1.0/instances/<name>[?project=...]``);
    profiles and anything else left out."""
    names = []
    for url in used_by:
        parts = urlsplit(url).path.split("/")
        if len(parts) == 4 and parts[:3] == ["", "1.0", "instances"]:
            names.append(unquote(parts[3]))
    return names


def _size_of(raw: Mapping[str, Any]) -> int:
    """A volume's (or snapshot's) ``size`` key in bytes; 0 when it has none (no quota)."""
    text = str((raw.get("config") or {}).get("size") or "")
    match = _LXD_SIZE.match(text)
    if match is None:
        return 0
    number, unit, binary = match.groups()
    base = 1024 if binary or not unit else 1000
    return int(float(number) * base ** _POWERS[unit.lower()])


def _tag_config(tags: Mapping[str, str]) -> dict[str, str]:
    for key in tags:
        if not TAG_KEY.match(key):
            raise Invalid(f"tag {key!r}: use lowercase letters, digits, '.', '_' and '-'")
    return {TAG_PREFIX + k: v for k, v in tags.items() if v}  # LXD keeps no empty keys


def _changed_meanwhile(error: BackendError) -> bool:
    """Whether LXD refused a change to an instance because another changed it since it was
    read (``Stale``), or was changing it at that moment: LXD runs one update of an instance at
    a time and fails the others ("Failed to create instance update operation")."""
    return isinstance(error, Stale) or "instance update operation" in error.message


def _read_only(device: Mapping[str, str]) -> bool:
    return device.get("readonly", "false").lower() in ("true", "1", "yes", "on")


def _same_path(one: str | None, other: str) -> bool:
    return one is not None and one.rstrip("/") == other.rstrip("/")


def _same_mount(held: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return _same_path(held.get("path"), wanted["path"]) and _read_only(held) == _read_only(wanted)
