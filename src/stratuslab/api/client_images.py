"""The image resources of the API client: save and snapshot instances, import and delete
images, read a Marketplace entry.

A part of :class:`~stratuslab.api.client.ApiClient` (which inherits it), kept apart so that
each module stays small.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

from stratuslab.api.client_parts import ClientPart

SAVE_TIMEOUT = 900.0  # publishing a large root filesystem takes minutes on a dir pool
STREAM_TIMEOUT = 90.0  # between two lines of an import's stream (the server sends one every 15 s)


class ImageResources(ClientPart):
    def save_instance(
        self, ref: str, *, name: str, public: bool = False, description: str = ""
    ) -> dict[str, Any]:
        body = {"name": name, "public": public, "description": description}
        result: dict[str, Any] = self.request(
            "POST", f"/api/instances/{_seg(ref)}/save", json_body=body, timeout=SAVE_TIMEOUT
        )
        return result

    def snapshots(self, ref: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", f"/api/instances/{_seg(ref)}/snapshots")
        return result

    def take_snapshot(self, ref: str, name: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST", f"/api/instances/{_seg(ref)}/snapshots", json_body={"name": name}, timeout=360
        )
        return result

    def restore_snapshot(self, ref: str, name: str) -> dict[str, Any]:
        path = f"/api/instances/{_seg(ref)}/snapshots/{_seg(name)}/restore"
        result: dict[str, Any] = self.request("POST", path, timeout=360)
        return result

    def delete_snapshot(self, ref: str, name: str) -> None:
        self.request("DELETE", f"/api/instances/{_seg(ref)}/snapshots/{_seg(name)}", timeout=360)

    def delete_image(
        self, name: str, *, cloud: str = "local", site: bool = False
    ) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "DELETE",
            f"/api/images/{quote(name, safe='/')}",
            params={"cloud": cloud, "site": site},
            timeout=120,
        )
        return result

    def import_image(self, body: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """The lines of ``POST /api/images/import``: progress, then ``done`` or ``error``."""
        return self.lines(
            "/api/images/import", method="POST", json_body=dict(body), timeout=STREAM_TIMEOUT
        )


def _seg(value: str) -> str:
    return quote(value, safe="")
