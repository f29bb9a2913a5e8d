"""The LXD connector's volumes where real LXD cannot be made to show it: names it would refuse
as device names, sizes written by hand, and an instance that never stops changing. What
volumes do on real LXD is in test_contract_volumes.py."""

from __future__ import annotations

import json

import httpx
import pytest

from stratuslab.cloud.base import Mount
from stratuslab.cloud.connectors.lxd import LxdConnector
from stratuslab.cloud.connectors.lxd_api import LxdApi
from stratuslab.cloud.connectors.lxd_volumes import (
    _ETAG_ATTEMPTS,
    _instances,
    _size_of,
    device_name,
)
from stratuslab.errors import Conflict


def test_a_device_is_named_after_its_volume_or_a_digest_of_a_name_lxd_would_refuse() -> None:
    assert device_name("pgdata-1f2e") == "vol-pgdata-1f2e"
    long = "x" * 63
    assert device_name(long) == device_name(long)  # the same volume, the same device
    assert device_name(long).startswith("vol-") and len(device_name(long)) == 20
    assert device_name("a/b") != device_name("a:b")
    assert len(device_name("x" * 60)) == 64  # the longest kept as it is


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("67108864", 64 << 20),
        ("64MiB", 64 << 20),
        ("2GiB", 2 << 30),
        ("10GB", 10 * 1000**3),
        ("500kB", 500_000),
        ("1.5TiB", 3 << 39),
        ("", 0),  # no quota
        ("lots", 0),
    ],
)
def test_sizes_are_read_as_lxd_writes_them(text: str, size: int) -> None:
    assert _size_of({"config": {"size": text}}) == size


def test_used_by_names_instances_only() -> None:
    used_by = [
        "/1.0/instances/web-1",
        "/1.0/instances/db%2D2?project=default",
        "/1.0/profiles/default",
        "/1.0/instances/web-1/snapshots/snap0",
    ]
    assert _instances(used_by) == ["web-1", "db-2"]


def test_an_instance_that_keeps_changing_is_given_up_on_with_a_conflict() -> None:
    """Every write is refused as stale (412): the connector reads again each time, and after
    its attempts says so rather than looping, having never written without the ETag."""
    matches: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/1.0/profiles/stratus":
            root = {"type": "disk", "path": "/", "pool": "stratus"}
            return httpx.Response(
                200, json={"type": "sync", "metadata": {"devices": {"root": root}}}
            )
        if path == "/1.0/instances/box" and request.method == "GET":
            etag = f'"{len(matches)}"'
            box = {"name": "box", "devices": {}, "expanded_devices": {}, "config": {}}
            return httpx.Response(
                200, json={"type": "sync", "metadata": box}, headers={"ETag": etag}
            )
        if path == "/1.0/instances/box" and request.method == "PATCH":
            matches.append(request.headers.get("if-match"))
            assert json.loads(request.content)["devices"]["vol-data"]["source"] == "data"
            error = {"type": "error", "error_code": 412, "error": "ETag doesn't match"}
            return httpx.Response(412, json=error)
        return httpx.Response(404, json={"type": "error", "error": "not found", "error_code": 404})

    api = LxdApi("unix:///x", transport=httpx.MockTransport(handler))
    connector = LxdConnector(endpoint="unix:///x", profile="stratus", api=api)
    with pytest.raises(Conflict, match="kept changing"):
        connector.attach_volume("box", Mount("data", "/srv/data"))
    assert matches == [f'"{i}"' for i in range(_ETAG_ATTEMPTS)]
