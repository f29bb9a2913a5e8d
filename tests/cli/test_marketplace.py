"""`stratus marketplace` as people use it, in-process against the in-process server: sign an
image file, upload, list, search, show, deprecate; an image on a cloud; and every refusal as
one line with its exit code."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.cloud.marketplace import signing
from stratuslab.cloud.marketplace.entry import from_xml
from stratuslab.cloud.marketplace.identifier import Checksums, checksums
from tests.cloud.connectors.test_contract import image_archive
from tests.cloud.marketplace.support import NOW, Party
from tests.cloud.marketplace.uploads import CA, JANE, OLD, signed
from tests.support import CliResult

Stratus = Callable[..., CliResult]


def sums_of(path: Path) -> Checksums:
    with path.open("rb") as handle:
        return checksums(handle)


def keys(tmp_path: Path, who: Party = JANE) -> list[str]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(who.cert_pem)
    key.write_bytes(who.key_pem)
    return ["--cert", str(cert), "--key", str(key)]


def test_sign_upload_list_search_show_and_deprecate_an_image_file(
    stratus: Stratus, tmp_path: Path
) -> None:
    image = image_archive(tmp_path / "webapp.tar")
    ident = sums_of(image).identifier
    entry_file = tmp_path / "entry.xml"
    made = stratus(
        "marketplace", "sign", str(image), *keys(tmp_path), "--os-version", "12",
        "--tag", "web", "--location", "https://images.example.org/webapp.tar",
        "-o", str(entry_file),
    )  # fmt: skip
    assert made.code == 0, made.err
    assert made.out.startswith(f"Signed {ident} (webapp) as jane@example.org at ")
    assert made.out.rstrip().endswith(f": written to {entry_file}")
    assert "read " in made.err  # progress, on stderr
    xml = entry_file.read_bytes()
    verified = signing.verify(xml, trusted_cas=[CA.cert_pem])
    entry = verified.entry
    assert (entry.os, entry.os_version, entry.os_arch, entry.format) == (
        "debian",
        "12",
        "x86_64",
        "lxd",
    )
    assert (entry.title, entry.creator, entry.tags) == ("webapp", "Jane Tester", ("web",))
    assert entry.valid - entry.created == dt.timedelta(days=180)

    uploaded = stratus("marketplace", "upload", str(entry_file))
    assert uploaded.code == 0, uploaded.err
    assert uploaded.out.startswith(f"Uploaded {ident} (webapp), endorsed by jane@example.org")

    listed = stratus("marketplace", "list")
    assert "debian 12" in listed.out and "valid until" in listed.out  # (80 columns here)
    for asked in (("list",), ("search", "WEB")):
        found = json.loads(stratus("marketplace", *asked, "-o", "json").out)
        assert [e["identifier"] for e in found] == [ident]
    assert stratus("marketplace", "search", "nothing-like-it").err.startswith("No entry matches")

    shown = stratus("marketplace", "show", ident, "--endorser", "jane@example.org", "--xml")
    assert shown.code == 0 and shown.out.encode() == xml  # as signed, byte for byte
    assert (
        "endorser     jane@example.org (CN=Jane Tester" in stratus("marketplace", "show", ident).out
    )

    gone = stratus(
        "marketplace", "deprecate", ident, "--reason", "security issue with app", *keys(tmp_path)
    )
    assert gone.code == 0, gone.err
    assert (
        "; deprecated: security issue with app" in gone.out and "Uploaded: /metadata/" in gone.out
    )
    described = stratus("marketplace", "show", ident).out
    assert "state        deprecated: security issue with app" in described
    assert "https://images.example.org/webapp.tar" in described  # the same entry otherwise
    assert stratus("marketplace", "list").err.startswith("No entries yet")
    assert "deprecated:" in stratus("marketplace", "list", "--all").out
    every = json.loads(stratus("marketplace", "list", "--all", "-o", "json").out)
    assert [(e["identifier"], e["deprecated"]) for e in every] == [
        (ident, "security issue with app")
    ]
    history = json.loads(stratus("marketplace", "show", ident, "-o", "json").out)
    assert [e["deprecated"] for e in history] == ["security issue with app"]


def test_sign_an_image_on_a_cloud_and_upload_at_once(
    stratus: Stratus, fake: FakeConnector, tmp_path: Path
) -> None:
    archive = image_archive(tmp_path / "archive.tar")
    data = archive.read_bytes()
    fake.import_image(archive, name="webapp", sha256=hashlib.sha256(data).hexdigest())
    args = ["marketplace", "sign", "webapp", "--cloud", "local", *keys(tmp_path)]
    missing = stratus(*args, "--os-version", "12")
    assert missing.code == 65
    asking, read, refused = missing.err.splitlines()
    assert asking == "checksums of webapp on local: the server reads the image the first time"
    assert read.startswith("webapp: 0.0 MiB, read in ")
    assert refused == "error: the image does not say its os-arch: give --os-arch"
    made = stratus(*args, "--os-version", "12", "--os-arch", "x86_64", "--upload", "-o", "json")
    assert made.code == 0, made.err
    summary = json.loads(made.out)
    entry = from_xml(summary["xml"].encode())
    assert entry.checksums == sums_of(archive)
    assert (entry.title, entry.os, entry.format) == ("webapp", "debian", "lxd")
    assert summary["file"] is None and summary["uploaded"]["href"].startswith("/metadata/")
    listed = json.loads(stratus("marketplace", "list", "--os", "debian", "-o", "json").out)
    assert [e["identifier"] for e in listed] == [entry.identifier]
    to_stdout = stratus(*args, "--os-version", "12", "--os-arch", "x86_64", "-o", "-")
    assert to_stdout.code == 0 and signing.verify(to_stdout.out.encode(), trusted_cas=None)
    assert to_stdout.err.splitlines()[1:] == [
        "webapp: 0.0 MiB, known already",  # read once, kept by fingerprint
        f"Signed {entry.identifier} (webapp) as jane@example.org at "
        + to_stdout.err.rsplit(" at ", 1)[1].strip(),
    ]


@pytest.mark.parametrize(
    ("xml", "code", "words"),
    [
        (lambda: signed(JANE).replace(b"webapp-base", b"webapp-evil"), 77, "changed after it"),
        (lambda: signed(OLD, when=NOW - dt.timedelta(days=5)), 77, ") expired on "),
        (lambda: b"<rdf:RDF", 65, "not well-formed XML"),
    ],
    ids=["tampered", "expired-certificate", "not-xml"],
)
def test_an_upload_refused_says_why_in_one_line(
    stratus: Stratus, tmp_path: Path, xml: Callable[[], bytes], code: int, words: str
) -> None:
    path = tmp_path / "entry.xml"
    path.write_bytes(xml())
    refused = stratus("marketplace", "upload", str(path))
    assert refused.code == code
    assert refused.err.startswith("error: ") and words in refused.err
    assert refused.err.count("\n") == 1 and refused.out == ""


def test_an_older_entry_and_a_missing_one_are_refused(stratus: Stratus, tmp_path: Path) -> None:
    newer, older = tmp_path / "newer.xml", tmp_path / "older.xml"
    newer.write_bytes(signed(JANE, minutes_ago=1))
    older.write_bytes(signed(JANE, minutes_ago=2))
    assert stratus("marketplace", "upload", str(newer)).code == 0
    refused = stratus("marketplace", "upload", str(older))
    assert refused.code == 67
    assert "is not newer than the latest one kept" in refused.err
    assert "sign the entry again" in refused.err
    nothing = stratus("marketplace", "show", "A" * 27)
    assert (nothing.code, nothing.err) == (
        66,
        f"error: the Marketplace has no entry of {'A' * 27}\n",
    )
    nobody = stratus("marketplace", "deprecate", "A" * 27, "--reason", "x", *keys(tmp_path))
    assert nobody.code == 66 and "by jane@example.org" in nobody.err
    no_file = stratus("marketplace", "sign", "./missing.tar", *keys(tmp_path))
    assert (no_file.code, no_file.err) == (66, "error: ./missing.tar: no such file\n")
