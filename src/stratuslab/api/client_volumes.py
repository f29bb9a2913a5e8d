"""The volume resources of the API client: make, list, attach, detach, resize, snapshot and
delete volumes.

A part of :class:`~stratuslab.api.client.ApiClient` (which inherits it), kept apart so that
each module stays small. A volume is named as users name it (``NAME``, ``OWNER/NAME``, or its
id); ``OWNER/NAME`` travels as two path segments, as the routes read it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from stratuslab.api.client_parts import ClientPart

WORK_TIMEOUT = 600.0  # a copy of a large volume where the pool cannot clone copies its files


class VolumeResources(ClientPart):
    def create_volume(
        self,
        name: str,
        *,
        size: str | int | None,
        public: bool = False,
        description: str = "",
        source: str | None = None,
        cloud: str = "local",
    ) -> dict[str, Any]:
        body = {
            "name": name,
            "size": size,
            "public": public,
            "description": description,
            "source": source,
            "cloud": cloud,
        }
        result: dict[str, Any] = self.request(
            "POST", "/api/volumes", json_body=body, timeout=WORK_TIMEOUT
        )
        return result

    def volumes(self, *, public: bool = False, all_owners: bool = False) -> list[dict[str, Any]]:
        params = {"public": public or None, "all": all_owners or None}
        result: list[dict[str, Any]] = self.request("GET", "/api/volumes", params=params)
        return result

    def volume(self, ref: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", _path(ref))
        return result

    def delete_volume(self, ref: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("DELETE", _path(ref), timeout=WORK_TIMEOUT)
        return result

    def attach_volume(
        self, ref: str, instance: str, *, path: str | None = None, read_only: bool = False
    ) -> dict[str, Any]:
        body = {"instance": instance, "path": path, "read_only": read_only}
        result: dict[str, Any] = self.request(
            "POST", _path(ref, "attach"), json_body=body, timeout=300
        )
        return result

    def detach_volume(self, ref: str, instance: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST", _path(ref, "detach"), json_body={"instance": instance}, timeout=300
        )
        return result

    def resize_volume(self, ref: str, size: str | int) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST", _path(ref, "resize"), json_body={"size": size}, timeout=300
        )
        return result

    def volume_snapshots(self, ref: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", _path(ref, "snapshots"))
        return result

    def take_volume_snapshot(self, ref: str, name: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST", _path(ref, "snapshots"), json_body={"name": name}, timeout=300
        )
        return result

    def restore_volume_snapshot(self, ref: str, snapshot: str) -> dict[str, Any]:
        path = _path(ref, "snapshots", snapshot, "restore")
        result: dict[str, Any] = self.request("POST", path, timeout=WORK_TIMEOUT)
        return result

    def delete_volume_snapshot(self, ref: str, snapshot: str) -> None:
        self.request("DELETE", _path(ref, "snapshots", snapshot), timeout=300)


def _path(ref: str, *rest: str) -> str:
    """``/api/volumes/<ref>/<rest...>``: the reference's one slash kept, everything else of it
    and of ``rest`` quoted."""
    parts = [quote(part, safe="") for part in ref.split("/", 1)]
    return "/".join(["/api/volumes", *parts, *(quote(part, safe="") for part in rest)])
