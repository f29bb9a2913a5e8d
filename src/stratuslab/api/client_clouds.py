"""The cloud resources of the API client: list, show, add, change and remove the site's clouds.

A part of :class:`~stratuslab.api.client.ApiClient` (which inherits it), kept apart so that
each module stays small. Adding a cloud waits for the server to probe it (and, for a remote
LXD, to enrol with it).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from stratuslab.api.client_parts import ClientPart

PROBE_TIMEOUT = 120.0  # enrolment and the probe are bounded by the server (seconds each)


class CloudResources(ClientPart):
    def clouds(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", "/api/clouds")
        return result

    def cloud(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", _path(name), timeout=PROBE_TIMEOUT)
        return result

    def add_cloud(self, body: dict[str, Any]) -> dict[str, Any]:
        """``body``: ``name``, and ``connector`` with ``options`` or ``lxd`` (an enrolment);
        ``priority``, ``max_instances``."""
        result: dict[str, Any] = self.request(
            "POST", "/api/clouds", json_body=body, timeout=PROBE_TIMEOUT
        )
        return result

    def change_cloud(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "PATCH", _path(name), json_body=changes, timeout=PROBE_TIMEOUT
        )
        return result

    def remove_cloud(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("DELETE", _path(name))
        return result


def _path(name: str) -> str:
    return f"/api/clouds/{quote(name, safe='')}"
