"""`stratus instance save|snapshot` and `stratus image import|delete`, in-process against the
in-process API on the fake cloud (the CLI's user, alice, is the site's administrator here)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

from stratuslab.cloud.connectors.fake import FakeConnector
from tests.cloud.entries import signed_entry
from tests.cloud.imageserver import image_archive, serving
from tests.support import CliResult

Stratus = Callable[..., CliResult]


def running(stratus: Stratus, name: str) -> str:
    (view,) = json.loads(stratus("instance", "run", "debian-12", "--name", name, "-o", "json").out)
    return str(view["id"])


def test_save_gives_an_image_recorded_as_the_users_and_a_summary(
    stratus: Stratus, fake: FakeConnector
) -> None:
    ref = running(stratus, "box")
    saved = stratus("instance", "save", ref, "--name", "web", "--description", "nginx [bold]")
    assert saved.code == 0, saved.err
    assert saved.out.startswith(f"alice/web: saved from {ref} in ")
    assert "fingerprint " in saved.out and "MiB" in saved.out
    image = fake.get_image("alice/web")
    assert image.properties["stratus.instance"] == ref and image.description == "nginx [bold]"
    listed = json.loads(stratus("image", "list", "-o", "json").out)
    assert "alice/web" in [i["name"] for i in listed]
    again = stratus("instance", "save", ref, "--name", "web", "-o", "json")
    assert again.code == 67 and "already" in again.err
    as_json = json.loads(stratus("instance", "save", ref, "--name", "web2", "-o", "json").out)
    assert (as_json["origin"], as_json["details"]["instance"]) == ("save", ref)
    assert as_json["seconds"] >= 0 and as_json["size_bytes"] > 0
    gone = json.loads(stratus("image", "delete", "web", "-o", "json").out)
    assert (gone["name"], gone["owner"]) == ("alice/web", "alice")
    assert stratus("image", "delete", "alice/web").code == 66
    assert "alice/web" not in [i.name for i in fake.list_images()]


def test_snapshots_are_taken_listed_restored_and_deleted(stratus: Stratus) -> None:
    ref = running(stratus, "snappy")
    taken = stratus("instance", "snapshot", ref, "--name", "before")
    assert (taken.code, taken.out.strip()) == (0, f"{ref}: snapshot before taken")
    stamped = json.loads(stratus("instance", "snapshot", ref, "-o", "json").out)
    assert stamped["name"][:2] == "20" and len(stamped["name"]) == len("20250131-142501")
    listed = json.loads(stratus("instance", "snapshot", "list", ref, "-o", "json").out)
    assert [s["name"] for s in listed] == ["before", stamped["name"]]
    assert "before" in stratus("instance", "snapshot", "list", ref).out
    restored = json.loads(
        stratus("instance", "snapshot", "restore", ref, "before", "-o", "json").out
    )
    assert restored["state"] == "running"
    assert stratus("instance", "snapshot", "restore", ref, "nothing").code == 66
    assert stratus("instance", "snapshot", "delete", ref, "before").code == 0
    assert stratus("instance", "snapshot", "delete", ref, "before").code == 0  # idempotent
    listed = json.loads(stratus("instance", "snapshot", "list", ref, "-o", "json").out)
    assert [s["name"] for s in listed] == [stamped["name"]]
    bad = stratus("instance", "snapshot", ref, "--name", "stratus-mine")
    assert bad.code == 65 and "the server's" in bad.err


def test_import_shows_progress_then_a_summary(stratus: Stratus, tmp_path: Path) -> None:
    data = image_archive(seed="cli")
    entry = tmp_path / "entry.xml"
    entry.write_bytes(signed_entry(data))
    with serving(data, mode="cut", cuts=1) as served:
        result = stratus("image", "import", served.url, "--entry", str(entry), "--name", "far")
    assert result.code == 0, result.err
    assert "download..." in result.err and "verify..." in result.err
    assert result.out.startswith("alice/far: imported in ")
    with serving(image_archive(seed="cli-2")) as served:
        made = json.loads(stratus("image", "import", served.url, "-o", "json").out)
    assert (made["name"], made["origin"]) == ("alice/elsewhere", "import")


def test_import_refusals_are_one_line_with_their_exit_code(
    stratus: Stratus, tmp_path: Path
) -> None:
    data = image_archive(seed="refused")
    entry = tmp_path / "entry.xml"
    entry.write_bytes(signed_entry(data))
    with serving(data[:-1] + bytes([data[-1] ^ 1])) as served:
        tampered = stratus("image", "import", served.url, "--entry", str(entry))
    assert tampered.code == 77 and "the SHA-1 is " in tampered.err
    assert stratus("image", "import", "ftp://x.org/a.tar").code == 65
    neither = stratus("image", "import", "http://127.0.0.1:9/a.tar", "--entry", "nonsense")
    assert neither.code == 65 and "neither a file nor a Marketplace identifier" in neither.err


def test_site_images_are_deleted_only_with_site(stratus: Stratus, fake: FakeConnector) -> None:
    assert stratus("image", "delete", "debian-12").code == 66  # alice/debian-12: none
    gone = json.loads(stratus("image", "delete", "debian-12", "--site", "-o", "json").out)
    assert (gone["name"], gone["origin"]) == ("debian-12", "site")
    assert [i.name for i in fake.list_images()] == []


def test_an_import_by_identifier_checks_against_the_sites_own_entry_which_endorses_its_start(
    stratus: Stratus, tmp_path: Path
) -> None:
    from stratuslab.cloud.marketplace.identifier import checksums

    data = image_archive(seed="by-id")
    identifier = checksums(io.BytesIO(data)).identifier
    with serving(data) as served:
        missing = stratus("image", "import", served.url, "--entry", identifier)
        assert missing.code == 66 and f"no entry of {identifier}" in missing.err
        entry = tmp_path / "entry.xml"
        entry.write_bytes(signed_entry(data))
        assert stratus("marketplace", "upload", str(entry)).code == 0
        made = stratus("image", "import", served.url, "--entry", identifier, "-o", "json")
    assert made.code == 0, made.err
    assert json.loads(made.out)["name"] == "alice/elsewhere"
    verdict = json.loads(stratus("image", "verify", "alice/elsewhere", "-o", "json").out)
    assert (verdict["rule"], verdict["endorser"]) == ("endorsed", "jane@example.org")


def test_an_import_checked_against_an_entry_file_keeps_the_entry_in_the_marketplace(
    stratus: Stratus, tmp_path: Path
) -> None:
    data = image_archive(seed="kept")
    entry = tmp_path / "entry.xml"
    entry.write_bytes(signed_entry(data))
    with serving(data) as served:
        assert stratus("image", "import", served.url, "--entry", str(entry)).code == 0
    verdict = json.loads(stratus("image", "verify", "alice/elsewhere", "-o", "json").out)
    assert (verdict["allowed"], verdict["rule"]) == (True, "endorsed")
    listed = json.loads(stratus("marketplace", "list", "-o", "json").out)
    assert [e["endorser"]["email"] for e in listed] == ["jane@example.org"]
