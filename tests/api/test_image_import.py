"""`POST /api/images/import`: images from elsewhere, downloaded from a real HTTP server on
loopback, checked against their signed entry before anything is imported, the user's alone."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from stratuslab import config
from stratuslab.api.app import create_app
from stratuslab.cloud import clouds
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.config import Settings
from stratuslab.db.session import engine_for
from stratuslab.services import Services
from tests.api.owners import accounts, client
from tests.cloud.entries import signed_entry
from tests.cloud.imageserver import image_archive, serving
from tests.support import environment

DATA = image_archive()


@dataclass
class World:
    services: Services
    settings: Settings
    fake: FakeConnector
    site: TestClient  # the site token: an administrator
    alice: TestClient
    bob: TestClient


def world_of(tmp_path: Path, store: str, **overrides: Any) -> Iterator[World]:
    namespace = f"test-{secrets.token_hex(4)}"
    settings = config.load(environment(tmp_path, STRATUS_DATABASE_URL=store)).with_overrides(
        token="test-token", **overrides
    )
    clouds.record(
        engine_for(store), name="local", connector="fake", options={"namespace": namespace}
    )
    app = create_app(settings)
    try:
        with client(app, "test-token") as site:
            services: Services = app.state.services
            keys = accounts(services)
            yield World(
                services,
                settings,
                FakeConnector(namespace=namespace, images=()),
                site,
                client(app, keys["alice"]["token"]),
                client(app, keys["bob"]["token"]),
            )
    finally:
        FakeConnector.ex_reset(namespace)


@pytest.fixture
def world(tmp_path: Path, store: str) -> Iterator[World]:
    """Users may make the server reach loopback here (the test servers are there)."""
    yield from world_of(tmp_path, store, image_import_private_addresses=True)


def imported(http: TestClient, **body: Any) -> tuple[int, list[dict[str, Any]]]:
    answer = http.post("/api/images/import", json=body)
    if answer.status_code != 200:
        return answer.status_code, [answer.json()]
    return 200, [json.loads(line) for line in answer.text.splitlines() if line.strip()]


def parts(world: World) -> list[Path]:
    return list(world.settings.imports_dir.glob("*.part"))


def test_a_download_cut_off_half_way_resumes_and_is_imported_as_the_users_own(
    world: World,
) -> None:
    entry = signed_entry(DATA)
    with serving(DATA, mode="cut", cuts=1) as served:
        status, lines = imported(world.alice, source=served.url, entry=entry.decode(), name="web")
    assert status == 200, lines
    assert served.ranges == [None, f"bytes={len(DATA) // 2}-"]
    stages = [line.get("stage") for line in lines if line["what"] == "progress"]
    assert stages.index("download") < stages.index("verify") < stages.index("import")
    done = lines[-1]
    assert done["what"] == "done", done
    image = done["image"]
    assert (image["name"], image["owner"], image["origin"]) == ("alice/web", "alice", "import")
    details = image["details"]
    assert details["source"] == served.url
    assert details["endorser"]["email"] == "jane@example.org"
    assert details["identifier"] == details["identifier"] and len(details["identifier"]) == 27
    assert image["fingerprint"] == details["checksums"]["sha256"]  # imported as it was signed
    assert parts(world) == []  # nothing of the download is left

    # Alice's alone: bob neither sees it, nor starts it, nor deletes it.
    assert "alice/web" in [i["name"] for i in world.alice.get("/api/images").json()]
    assert "alice/web" not in [i["name"] for i in world.bob.get("/api/images").json()]
    started = world.bob.post("/api/instances", json={"image": "alice/web"})
    assert started.status_code == 404, started.text
    assert world.bob.delete("/api/images/alice/web").status_code == 404
    mine = world.alice.post("/api/instances", json={"image": "alice/web"})
    assert mine.status_code == 202, mine.text


def test_a_tampered_image_is_refused_and_deleted_naming_the_checksum(world: World) -> None:
    entry = signed_entry(DATA)
    tampered = bytearray(DATA)
    tampered[len(DATA) // 3] ^= 0x01  # one byte changed
    with serving(bytes(tampered)) as served:
        status, lines = imported(world.alice, source=served.url, entry=entry.decode(), name="t")
    assert status == 200
    error = lines[-1]["error"]
    assert error["type"] == "Forbidden"
    assert "the SHA-1 is " in error["message"] and ", the entry says " in error["message"]
    assert "it was deleted" in error["message"]
    assert parts(world) == []
    assert [i.name for i in world.fake.list_images()] == ["debian-12"]  # nothing imported


def test_an_entry_whose_signature_no_longer_verifies_is_refused_before_downloading(
    world: World,
) -> None:
    entry = signed_entry(DATA).replace(b"webapp-base", b"webapp-evil")
    with serving(DATA) as served:
        status, lines = imported(world.alice, source=served.url, entry=entry.decode(), name="e")
        assert served.ranges == []  # refused before a byte was asked for
    assert status == 403
    assert "changed after it was signed" in lines[0]["error"]["message"]


def test_an_entry_of_another_identifier_or_expired_is_refused(world: World) -> None:
    entry = signed_entry(DATA)
    status, lines = imported(
        world.alice, source="http://127.0.0.1:9/x.tar", entry=entry.decode(), identifier="A" * 27
    )
    assert status == 403 and "not AAAA" in lines[0]["error"]["message"]
    import datetime as dt

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    old = signed_entry(DATA, created=now - dt.timedelta(days=9), valid=now - dt.timedelta(days=1))
    status, lines = imported(world.alice, source="http://127.0.0.1:9/x.tar", entry=old.decode())
    assert status == 403 and "expired" in lines[0]["error"]["message"]


def test_sizes_over_the_bound_are_refused(tmp_path: Path, store: str) -> None:
    big = image_archive(filler=(1 << 20) + 50_000)
    for world in world_of(
        tmp_path, store, image_import_private_addresses=True, image_import_max_bytes=1 << 20
    ):
        with serving(big) as served:
            status, lines = imported(world.alice, source=served.url, name="big")
            assert status == 200
            assert lines[-1]["error"]["type"] == "TooLarge"
            assert f"at most {1 << 20}" in lines[-1]["error"]["message"]
            # An entry that describes more than the site imports is refused before downloading.
            asked = len(served.ranges)
            status, lines = imported(
                world.alice, source=served.url, entry=signed_entry(big).decode()
            )
            assert status == 413 and "image_import_max_bytes" in lines[0]["error"]["message"]
            assert len(served.ranges) == asked
        assert parts(world) == []


def test_an_import_may_not_claim_what_the_server_sets(world: World) -> None:
    claiming = image_archive(properties={"stratus.recipe": "f" * 64, "stratus.name": "debian-12"})
    with serving(claiming) as served:
        status, lines = imported(world.alice, source=served.url, name="poser")
    assert status == 200 and lines[-1]["what"] == "done", lines[-1]
    image = lines[-1]["image"]
    assert image["stripped"] == ["stratus.name", "stratus.recipe"]
    properties = world.fake.get_image("alice/poser").properties
    assert not [k for k in properties if k.startswith("stratus.")]
    assert properties["os"] == "debian"  # the rest is kept


def test_users_may_not_make_the_server_reach_its_private_addresses(
    tmp_path: Path, store: str
) -> None:
    for world in world_of(tmp_path, store):  # the site's default
        with serving(DATA) as served:
            status, lines = imported(world.alice, source=served.url, name="x")
            assert status == 403 and "private address" in lines[0]["error"]["message"]
            assert served.ranges == []
            status, lines = imported(world.site, source=served.url, name="x")  # administrator
            assert status == 200 and lines[-1]["what"] == "done", lines[-1]
        for bad in ("ftp://example.org/x.tar", "file:///etc/passwd"):
            status, lines = imported(world.alice, source=bad)
            assert status == 422 and "only http:// and https://" in lines[0]["error"]["message"]


def test_a_file_on_the_servers_host_is_for_an_administrator(world: World, tmp_path: Path) -> None:
    archive = tmp_path / "local-image.tar.gz"
    archive.write_bytes(DATA)
    status, lines = imported(world.alice, source=str(archive))
    assert status == 403 and "only an administrator" in lines[0]["error"]["message"]
    status, lines = imported(world.site, source=str(archive), entry=signed_entry(DATA).decode())
    assert status == 200 and lines[-1]["what"] == "done", lines[-1]
    assert lines[-1]["image"]["name"] == "alice/local-image"  # the site token's user: alice
    assert archive.read_bytes() == DATA  # the administrator's file is left as it was
    status, lines = imported(world.site, source=str(archive), name="again")
    assert (
        status == 200
        and "this very image is on local already as alice/local-image"
        in (lines[-1]["error"]["message"])
    )
    status, lines = imported(world.site, source="relative/path.tar")
    assert status == 422 and "absolute path" in lines[0]["error"]["message"]


def test_another_users_instance_is_not_found_to_save_or_snapshot(world: World) -> None:
    accepted = world.alice.post("/api/instances", json={"image": "debian-12", "name": "hers"})
    assert accepted.status_code == 202, accepted.text
    ref = accepted.json()["instances"][0]["id"]
    for method, path, body in (
        ("POST", f"/api/instances/{ref}/save", {"name": "stolen"}),
        ("POST", f"/api/instances/{ref}/snapshots", {"name": "peek"}),
        ("GET", f"/api/instances/{ref}/snapshots", None),
        ("POST", f"/api/instances/{ref}/snapshots/peek/restore", None),
        ("DELETE", f"/api/instances/{ref}/snapshots/peek", None),
    ):
        answer = world.bob.request(method, path, json=body)
        assert answer.status_code == 404, (path, answer.text)
    saved = world.alice.post(f"/api/instances/{ref}/save", json={"name": "mine", "public": True})
    assert saved.status_code == 201, saved.text
    assert world.bob.delete("/api/images/alice/mine").status_code == 403  # seen, not his
    assert world.site.delete("/api/images/alice/mine").status_code == 200  # an administrator
