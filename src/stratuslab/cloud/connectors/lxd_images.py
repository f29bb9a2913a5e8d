"""LXD's images and snapshots, for the LXD connector (``lxd.py``, which inherits them).

Images: listed and found by alias or fingerprint, imported from a unified tarball, published
from an instance (a running one through a snapshot taken for the purpose), exported, deleted.
Snapshots of an instance's root filesystem: taken, listed, restored in place, deleted. Apart
from ``lxd.py`` because they are a concept of their own and the connector had grown past 600
lines with them.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stratuslab.cloud.base import UNKNOWN_IMAGE_HINT, Image, Instance, Snapshot
from stratuslab.cloud.connectors.lxd_api import LxdApi
from stratuslab.cloud.types import InstanceState
from stratuslab.errors import BackendError, Conflict, NotFound, NotSupported

FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Publishing a 200 MiB root filesystem takes about 3 s with zstd (72 MB), 5 s uncompressed
# (205 MB) and 15 s with LXD's default gzip (81 MB), on this kind of machine.
PUBLISH_COMPRESSION = "zstd"
PUBLISH_TIMEOUT = 900.0
# A snapshot is a copy-on-write clone on btrfs (well under a second); on a dir pool it copies
# the whole root filesystem, and a restore copies it back.
SNAPSHOT_TIMEOUT = 300.0
# An image's export is streamed to a file at disk speed: 15 min covers tens of GiB.
EXPORT_TIMEOUT = 900.0
EXPORT_LIMIT = 64 * 2**30  # bytes, for an image whose size LXD does not say


class LxdImages:
    """The image and snapshot operations of the LXD connector."""

    api: LxdApi

    if TYPE_CHECKING:

        def get(self, name: str) -> Instance: ...  # the connector's

    def list_images(self) -> list[Image]:
        images: list[Image] = []
        for raw in self.api.get("/1.0/images", recursion=1):
            aliases = [a["name"] for a in raw.get("aliases") or []] or [raw["fingerprint"][:12]]
            images.extend(self._to_image(raw, alias) for alias in aliases)
        return images

    def get_image(self, name: str) -> Image:
        if FINGERPRINT.match(name):
            with contextlib.suppress(NotFound):
                return self._to_image(self.api.get(LxdApi.path("images", name)), name[:12])
        try:
            alias = self.api.get(LxdApi.path("images", "aliases", name))
            return self._to_image(self.api.get(LxdApi.path("images", alias["target"])), name)
        except NotFound:
            pass
        if len(name) >= 12:
            for raw in self.api.get("/1.0/images", recursion=1):
                if raw["fingerprint"].startswith(name):
                    return self._to_image(raw, name)
        raise NotFound(f"no image called {name!r}", hint=UNKNOWN_IMAGE_HINT)

    def import_image(self, archive: Path, *, name: str, sha256: str) -> Image:
        try:
            self.api.get(LxdApi.path("images", sha256))
        except NotFound:
            self.api.request(
                "POST",
                "/1.0/images",
                content=_chunks(archive),
                headers={"Content-Type": "application/octet-stream", "X-LXD-public": "0"},
                timeout=900,
            )
        alias_path = LxdApi.path("images", "aliases", name)
        try:
            previous = self.api.get(alias_path)["target"]
        except NotFound:
            self.api.post("/1.0/images/aliases", {"name": name, "target": sha256})
            previous = sha256
        else:
            self.api.put(alias_path, {"target": sha256, "description": ""})
        if previous != sha256:
            with contextlib.suppress(NotFound):
                self.api.delete(LxdApi.path("images", previous))
        return self.get_image(name)

    def publish_image(
        self,
        name: str,
        *,
        alias: str,
        properties: Mapping[str, str] | None = None,
        description: str = "",
    ) -> Image:
        with contextlib.suppress(NotFound):
            self.api.get(LxdApi.path("images", "aliases", alias))
            raise Conflict(f"an image called {alias!r} exists already")
        try:
            running = self.get(name).state != InstanceState.STOPPED
        except NotFound as exc:
            raise NotFound(f"LXD has no instance called {name!r}") from exc
        source = {"type": "instance", "name": name}
        snapshot = f"stratus-publish-{secrets.token_hex(4)}" if running else None
        if snapshot:
            # LXD publishes only what is not running: a snapshot of it is not, and costs a
            # copy-on-write clone on btrfs.
            self.api.post(LxdApi.path("instances", name, "snapshots"), {"name": snapshot})
            source = {"type": "snapshot", "name": f"{name}/{snapshot}"}
        body = {
            "source": source,
            "aliases": [{"name": alias, "description": description}],
            "properties": {**(properties or {}), "description": description},
            "public": False,
            "compression_algorithm": PUBLISH_COMPRESSION,
        }
        try:
            self.api.post("/1.0/images", body, timeout=PUBLISH_TIMEOUT)
        finally:
            if snapshot:
                with contextlib.suppress(NotFound):
                    self.api.delete(LxdApi.path("instances", name, "snapshots", snapshot))
        return self.get_image(alias)

    def delete_image(self, name: str) -> None:
        fingerprint = name
        if not FINGERPRINT.match(name):
            try:
                fingerprint = self.api.get(LxdApi.path("images", "aliases", name))["target"]
            except NotFound:
                return
        with contextlib.suppress(NotFound):
            self.api.delete(LxdApi.path("images", fingerprint))

    def create_snapshot(self, name: str, snapshot: str) -> Snapshot:
        path = LxdApi.path("instances", name, "snapshots")
        try:
            self.api.post(path, {"name": snapshot, "stateful": False}, timeout=SNAPSHOT_TIMEOUT)
        except NotFound as exc:
            raise NotFound(f"LXD has no instance called {name!r}") from exc
        except BackendError as exc:
            if "already exists" in exc.message:
                raise Conflict(
                    f"instance {name} has a snapshot called {snapshot!r} already"
                ) from exc
            raise
        return self._to_snapshot(self._snapshot(name, snapshot))

    def list_snapshots(self, name: str) -> list[Snapshot]:
        try:
            raw = self.api.get(LxdApi.path("instances", name, "snapshots"), recursion=1)
        except NotFound as exc:
            raise NotFound(f"LXD has no instance called {name!r}") from exc
        found = [self._to_snapshot(r) for r in raw or []]
        return sorted(found, key=lambda s: (s.created_at or _EPOCH, s.name))

    def restore_snapshot(self, name: str, snapshot: str) -> None:
        self._snapshot(name, snapshot)  # NotFound, for the instance or the snapshot
        # LXD stops a running container, restores and starts it again, in one operation.
        self.api.put(
            LxdApi.path("instances", name), {"restore": snapshot}, timeout=SNAPSHOT_TIMEOUT
        )

    def delete_snapshot(self, name: str, snapshot: str) -> None:
        try:
            self.api.delete(
                LxdApi.path("instances", name, "snapshots", snapshot), timeout=SNAPSHOT_TIMEOUT
            )
        except NotFound:
            self.get(name)  # NotFound when the instance is gone; a missing snapshot is fine

    def export_image(self, name: str, dest: Path) -> Image:
        image = self.get_image(name)

        def unified(headers: Mapping[str, str]) -> None:
            # LXD answers a split image (metadata and rootfs apart) as a multipart form.
            if headers.get("content-type", "").startswith("multipart/"):
                raise NotSupported(
                    f"image {name!r} ({image.fingerprint[:12]}) is a split image (metadata and"
                    " root file system apart): only a unified image is one tarball whose"
                    " SHA-256 is its fingerprint"
                )

        self.api.download(
            LxdApi.path("images", image.fingerprint, "export"),
            dest,
            limit=image.size_bytes or EXPORT_LIMIT,
            timeout=EXPORT_TIMEOUT,
            check=unified,
        )
        return image

    def _snapshot(self, name: str, snapshot: str) -> Any:
        try:
            return self.api.get(LxdApi.path("instances", name, "snapshots", snapshot))
        except NotFound as exc:
            self.get(name)  # NotFound naming the instance when that is what is missing
            raise NotFound(f"instance {name} has no snapshot called {snapshot!r}") from exc

    @staticmethod
    def _to_image(raw: Mapping[str, Any], name: str) -> Image:
        properties = {str(k): str(v) for k, v in (raw.get("properties") or {}).items()}
        if raw.get("architecture"):  # LXD keeps it beside the properties, not among them
            properties.setdefault("architecture", str(raw["architecture"]))
        return Image(
            name=name,
            fingerprint=raw["fingerprint"],
            size_bytes=int(raw.get("size", 0)),
            description=properties.get("description", ""),
            created_at=lxd_time(raw.get("created_at")),
            properties=properties,
        )

    @staticmethod
    def _to_snapshot(raw: Mapping[str, Any]) -> Snapshot:
        size = raw.get("size")
        return Snapshot(
            name=str(raw["name"]).rsplit("/", 1)[-1],
            created_at=lxd_time(raw.get("created_at")),
            stateful=bool(raw.get("stateful")),
            size_bytes=int(size) if isinstance(size, int) and size >= 0 else None,
        )


def _chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while block := handle.read(size):
            yield block


def lxd_time(value: str | None) -> datetime | None:
    if not value or value.startswith("0001-"):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
