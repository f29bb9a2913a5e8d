"""`stratus image verify`, and what `stratus instance run` says when the site refuses."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.config import Settings
from tests.api.policies import CA, JANE, TODAY, policy_api, trusting
from tests.cloud.marketplace.support import (
    Shelf,
    endorse,
    file_checksums,
    image_archive,
    make_ca,
    make_crl,
    make_person,
)
from tests.support import CliResult, cli_on

Stratus = Callable[..., CliResult]


def test_an_image_nobody_endorsed_may_start_by_default(
    stratus: Stratus, fake: FakeConnector
) -> None:
    result = stratus("image", "verify", "debian-12")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == "debian-12 on local: may start (rule unsigned)"
    assert "  identifier  unknown: no Marketplace entry names these bytes" in lines
    assert any("the site allows unsigned images" in line for line in lines)


def test_a_refused_image_exits_77_and_instance_run_says_which_rule(
    settings: Settings, fake: FakeConnector, capsys: pytest.CaptureFixture[str]
) -> None:
    fingerprint = fake.get_image("debian-12").fingerprint
    message = (
        "image debian-12 on local refused by the site's policy (rule unsigned): no Marketplace"
        f" entry endorses it (sha256 {fingerprint[:8]}...)"
    )
    with policy_api(settings, Shelf(), policy_unsigned="refuse") as api:
        stratus = cli_on(api, settings, capsys)
        verdict = stratus("image", "verify", "debian-12", "-o", "json")
        assert verdict.code == 77
        body = json.loads(verdict.out)
        assert (body["allowed"], body["rule"], body["message"]) == (False, "unsigned", message)
        shown = stratus("image", "verify", "debian-12")
        assert shown.code == 77
        assert shown.out.splitlines()[0] == "debian-12 on local: refused (rule unsigned)"
        started = stratus("instance", "run", "debian-12")
        assert started.code == 77
        assert started.err.strip() == f"error: {message}"
        assert fake.list_instances() == []


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    return image_archive(tmp_path / "webapp-base.tar.gz", payload=b"nginx and friends\n" * 500)


def write_entry(path: Path, xml: bytes) -> Path:
    path.write_bytes(xml)
    return path


def verify_file(
    stratus: Stratus, image: Path, entry: Path, *extra: str
) -> tuple[int, dict[str, object]]:
    result = stratus(
        "image", "verify", "--file", str(image), "--entry", str(entry), "-o", "json", *extra
    )
    return result.code, json.loads(result.out) if result.out else {"err": result.err}


def test_a_file_that_matches_its_signed_entry_may_start(
    stratus: Stratus, image_file: Path, tmp_path: Path
) -> None:
    sums = file_checksums(image_file)
    entry = write_entry(tmp_path / "entry.xml", endorse(sums, JANE, now=TODAY)[0])
    code, body = verify_file(stratus, image_file, entry)
    assert code == 0
    assert (body["rule"], body["endorser"], body["identifier"]) == (
        "endorsed",
        "jane@example.org",
        sums.identifier,
    )
    result = stratus("image", "verify", "--file", str(image_file), "--entry", str(entry))
    assert result.code == 0
    assert result.out.startswith(f"file {image_file}: may start (rule endorsed)")


def test_a_file_with_one_byte_changed_is_refused_naming_the_checksums_that_differ(
    stratus: Stratus, image_file: Path, tmp_path: Path
) -> None:
    entry = write_entry(
        tmp_path / "entry.xml", endorse(file_checksums(image_file), JANE, now=TODAY)[0]
    )
    data = bytearray(image_file.read_bytes())
    data[len(data) // 2] ^= 0x01
    image_file.write_bytes(bytes(data))
    code, body = verify_file(stratus, image_file, entry)
    assert code == 77
    assert body["rule"] == "size"
    (reason,) = body["reasons"]  # type: ignore[misc]
    assert "the bytes do not match the entry" in reason
    for name in ("MD5", "SHA-1", "SHA-256", "SHA-512"):
        assert f"the {name} is " in reason
    image_file.write_bytes(bytes(data) + b"\0")
    code, body = verify_file(stratus, image_file, entry)
    assert code == 77 and "the size is" in body["reasons"][0]  # type: ignore[index]


def test_a_tampered_entry_is_refused_before_the_file_is_read(
    stratus: Stratus, image_file: Path, tmp_path: Path
) -> None:
    xml = endorse(file_checksums(image_file), JANE, now=TODAY)[0]
    entry = write_entry(tmp_path / "entry.xml", xml.replace(b"webapp-base", b"webapp-evil"))
    result = stratus("image", "verify", "--file", str(image_file), "--entry", str(entry))
    assert result.code == 77
    assert result.err.strip() == (
        f"error: {entry}: the entry was changed after it was signed (its digest no longer matches)"
    )


def test_expired_deprecated_untrusted_and_revoked_entries_are_refused_by_their_rule(
    settings: Settings,
    fake: FakeConnector,
    image_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sums = file_checksums(image_file)
    stranger = make_person(make_ca("Someone Else's CA"), "Eve", san_email="eve@example.net")
    revoked = make_person(
        CA, "Mallory", san_email="mallory@example.org", not_after=TODAY + dt.timedelta(days=30)
    )
    (tmp_path / "ca.crl").write_bytes(
        make_crl(
            CA, [(revoked, TODAY - dt.timedelta(days=1))], next_update=TODAY + dt.timedelta(days=7)
        )
    )
    site = trusting(settings, tmp_path, crls=(str(tmp_path / "ca.crl"),))
    cases = {
        "expired": endorse(
            sums,
            JANE,
            now=TODAY,
            created=TODAY - dt.timedelta(days=9),
            valid=TODAY - dt.timedelta(days=1),
        ),
        "deprecated": endorse(sums, JANE, now=TODAY, deprecated="use webapp-base-2"),
        "untrusted": endorse(sums, stranger, now=TODAY),
        "revoked": endorse(sums, revoked, now=TODAY),
    }
    with policy_api(site, Shelf()) as api:
        stratus = cli_on(api, site, capsys)
        for rule, (xml, _) in cases.items():
            entry = write_entry(tmp_path / f"{rule}.xml", xml)
            code, body = verify_file(stratus, image_file, entry)
            assert (code, body["rule"], body["allowed"]) == (77, rule, False), body
            assert str(body["message"]).startswith(
                f"image {image_file.name} on file refused by the site's policy (rule {rule}): "
            )


@pytest.mark.parametrize(
    "args",
    [
        ("image", "verify"),
        ("image", "verify", "debian-12", "--file", "/etc/hostname", "--entry", "/etc/hostname"),
        ("image", "verify", "--file", "/etc/hostname"),
        ("image", "verify", "debian-12", "--entry", "/etc/hostname"),
    ],
)
def test_verify_asks_for_an_image_or_a_file_with_its_entry(
    stratus: Stratus, args: tuple[str, ...]
) -> None:
    result = stratus(*args)
    assert result.code == 64
