"""`stratus marketplace sign` and `deprecate`: endorsements made here, with your certificate
and key. The key is read from its file on this machine and used here only: what leaves is the
signed entry.

An entry of a local image file gets its checksums from the file (read once, with progress); an
entry of an image on a cloud gets them from the server, which reads the image's bytes
(``GET /api/images/<name>/checksums``). What the image says of itself (its os, release,
architecture, description: LXD's ``metadata.yaml`` or image properties) fills what is not given.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import tarfile
import time
from dataclasses import replace
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import click

from stratuslab.cli.output import emit_json, err, out
from stratuslab.cli.runtime import Runtime, pass_runtime
from stratuslab.errors import Invalid, NotFound

MAX_PEM = 64 * 1024  # bytes of a certificate or key file
MAX_METADATA = 1 << 20  # bytes of an image tarball's metadata.yaml that are read

_CERT = click.option(
    "--cert",
    "cert_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="your certificate (PEM); it names the e-mail the entry is filed under",
)
_KEY = click.option(
    "--key",
    "key_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="its private key (unencrypted PEM): read here, sent nowhere",
)
_OUT = click.option(
    "-o",
    "--output",
    "output",
    default=None,
    metavar="FILE|-|json",
    help="write the signed entry to FILE (default ID.xml here, none with --upload), or to"
    " standard output (-); json: a summary holding the entry, for machines",
)


@click.command("sign")
@click.argument("image")
@_CERT
@_KEY
@click.option("--valid", "days", type=click.IntRange(1, 3650), default=180, show_default=True)
@click.option("--tag", "tags", multiple=True, help="a tag (dcterms:alternative); repeatable")
@click.option("--title", help="default: the image's name")
@click.option("--description", help="default: the image's own description")
@click.option("--os", "os_name", help="default: the image's os property")
@click.option("--os-version", help="default: the image's release property")
@click.option("--os-arch", help="default: the image's architecture")
@click.option("--format", "image_format", help="default: lxd for LXD images, else the suffix")
@click.option("--creator", help="default: your certificate's common name")
@click.option("--location", "locations", multiple=True, help="a URL it can be fetched from")
@click.option("--replaces", metavar="ID", help="the identifier of the image this one replaces")
@click.option("--cloud", default="local", show_default=True, help="where IMAGE is, by name")
@click.option("--upload", is_flag=True, help="upload the signed entry at once")
@_OUT
@pass_runtime
def sign(rt: Runtime, /, image: str, cert_file: str, key_file: str, **given: Any) -> None:
    """Make and sign an entry of IMAGE: a local image file, or the name of an image on a cloud
    (the server reads its bytes for the checksums)."""
    from stratuslab.cloud.marketplace.entry import Entry, to_xml
    from stratuslab.cloud.marketplace.identifier import Checksums

    cert_pem, key_pem = _pem(cert_file), _pem(key_file)
    path = Path(image)
    if path.is_file():
        sums, said = _local(path)
    elif os.sep in image or image.endswith((".tar", ".gz", ".xz", ".img", ".qcow2")):
        raise NotFound(f"{image}: no such file")
    else:
        err.print(
            f"checksums of {image} on {given['cloud']}: the server reads the image the first time",
            markup=False,
            highlight=False,
        )
        started = time.monotonic()
        found = rt.client.image_checksums(image, given["cloud"])
        how = "known already" if found["cached"] else f"read in {time.monotonic() - started:.1f} s"
        err.print(f"{image}: {found['size'] / 2**20:.1f} MiB, {how}", markup=False, highlight=False)
        sums = Checksums(
            **{k: found[k] for k in ("md5", "sha1", "sha256", "sha512")}, size=found["size"]
        )
        said = _said(found["properties"], name=image, image_format="lxd")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    entry = Entry(
        checksums=sums,
        os=_needed("os", given["os_name"] or said.get("os")),
        os_version=_needed("os-version", given["os_version"] or said.get("os_version")),
        os_arch=_needed("os-arch", given["os_arch"] or said.get("os_arch")),
        format=given["image_format"] or said["format"],
        title=given["title"] or said["title"],
        description=given["description"] or said.get("description", ""),
        creator=given["creator"] or _common_name(cert_pem),
        created=now,
        valid=now + dt.timedelta(days=given["days"]),
        locations=tuple(given["locations"]),
        tags=tuple(given["tags"]),
        replaces=given["replaces"],
    )
    _endorse(rt, to_xml(entry), cert_pem, key_pem, output=given["output"], upload=given["upload"])


@click.command("deprecate")
@click.argument("identifier", metavar="ID")
@click.option("--reason", required=True, help="why nobody should start it any more")
@_CERT
@_KEY
@_OUT
@pass_runtime
def deprecate(
    rt: Runtime, identifier: str, reason: str, cert_file: str, key_file: str, output: str | None
) -> None:
    """Deprecate image ID: your latest entry of it, endorsed again with the reason, and
    uploaded (nothing is deleted: the newer entry says it is deprecated)."""
    from stratuslab.cloud.marketplace import signing
    from stratuslab.cloud.marketplace.entry import from_xml, to_xml

    cert_pem, key_pem = _pem(cert_file), _pem(key_file)
    email = signing.endorser_email(cert_pem)
    latest = from_xml(rt.client.marketplace_xml(identifier, email=email))
    if latest.endorser is not None:
        _after(latest.endorser.created)
    entry = replace(latest, deprecated=reason, endorser=None)
    _endorse(rt, to_xml(entry), cert_pem, key_pem, output=output, upload=True)


def _endorse(
    rt: Runtime, xml: bytes, cert_pem: bytes, key_pem: bytes, *, output: str | None, upload: bool
) -> None:
    from stratuslab.cloud.marketplace import signing
    from stratuslab.cloud.marketplace.entry import from_xml

    signed = signing.sign(xml, cert_pem, key_pem)
    entry = from_xml(signed)
    assert entry.endorser is not None
    written = None
    if output not in (None, "json", "-") or (output is None and not upload):
        written = Path(output or f"{entry.identifier}.xml")
        written.write_bytes(signed)
    elif output == "-":
        write_bytes(signed)
    kept = rt.client.marketplace_upload(signed) if upload else None
    if output == "json":
        emit_json(
            {
                "identifier": entry.identifier,
                "email": entry.endorser.email,
                "endorsed": entry.endorser.created,
                "deprecated": entry.deprecated,
                "file": str(written) if written else None,
                "uploaded": kept,
                "xml": signed.decode("utf-8"),
            }
        )
        return
    say = out.print if output != "-" else err.print
    where = f": written to {written}" if written else ""
    say(
        f"Signed {entry.identifier} ({entry.title}) as {entry.endorser.email}"
        f" at {entry.endorser.created:%Y-%m-%dT%H:%M:%SZ}{where}"
        + (f"; deprecated: {entry.deprecated}" if entry.deprecated else ""),
        markup=False,
        highlight=False,
    )
    if kept is not None:
        say(f"Uploaded: {kept['href']}", markup=False, highlight=False)


def write_bytes(data: bytes) -> None:
    """``data`` on standard output as it is (a signed entry: its bytes are what is signed)."""
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _after(latest: dt.datetime) -> None:
    """Endorsement times have one-second steps and a newer one must be later: wait for the
    next second when the latest is this one (a deprecation right after an upload)."""
    wait = (latest + dt.timedelta(seconds=1) - dt.datetime.now(dt.UTC)).total_seconds()
    if 0 < wait <= 2:
        time.sleep(wait)


def _pem(path: str) -> bytes:
    with Path(path).open("rb") as handle:
        data = handle.read(MAX_PEM + 1)
    if len(data) > MAX_PEM:
        raise Invalid(f"{path}: over {MAX_PEM} bytes, it is no PEM certificate or key")
    return data


def _common_name(cert_pem: bytes) -> str:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise Invalid("the endorser's certificate is not a PEM X.509 certificate") from None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def _needed(option: str, value: str | None) -> str:
    if not value:
        raise Invalid(f"the image does not say its {option}: give --{option}")
    return value


def _said(properties: dict[str, Any], *, name: str, image_format: str) -> dict[str, str]:
    """What an image says of itself, in the entry's terms (LXD's properties)."""
    said = {"title": name, "format": image_format}
    for ours, theirs in (
        ("os", "os"),
        ("os_version", "release"),
        ("os_arch", "architecture"),
        ("description", "description"),
    ):
        if properties.get(theirs):
            said[ours] = str(properties[theirs])
    return said


def _local(path: Path) -> tuple[Any, dict[str, str]]:
    """A local file's checksums, read once with progress, and what its LXD metadata says."""
    from stratuslab.cloud.marketplace.identifier import checksums

    size = path.stat().st_size
    started = time.monotonic()
    with path.open("rb") as handle:
        if err.is_terminal:
            from rich.progress import Progress

            with Progress(console=err, transient=True) as bar:
                task = bar.add_task(f"reading {path.name}", total=size)
                reader = _Counting(handle, lambda n: bar.advance(task, n))
                sums = checksums(cast(BinaryIO, reader))
        else:
            sums = checksums(handle)
    err.print(
        f"read {path} ({size / 2**20:.1f} MiB) in {time.monotonic() - started:.1f} s",
        markup=False,
        highlight=False,
    )
    metadata = _tar_metadata(path)
    stem = path.name.split(".")[0] or path.name
    suffix = path.name.partition(".")[2] or "raw"
    said = _said(metadata.get("properties") or {}, name=stem, image_format=suffix)
    if metadata:
        said["format"] = "lxd"
        if metadata.get("architecture") and "os_arch" not in said:
            said["os_arch"] = str(metadata["architecture"])
    return sums, said


def _tar_metadata(path: Path) -> dict[str, Any]:
    """An LXD image tarball's metadata.yaml, when it is its first member; else nothing."""
    import yaml

    try:
        with tarfile.open(path, "r|*") as tar:
            first = tar.next()
            if first is None or first.name.lstrip("./") != "metadata.yaml":
                return {}
            if not first.isfile() or first.size > MAX_METADATA:
                return {}
            member = tar.extractfile(first)
            found = yaml.safe_load(member.read()) if member else None
    except (tarfile.TarError, OSError, EOFError, yaml.YAMLError):
        return {}
    return found if isinstance(found, dict) else {}


class _Counting:
    """A file that tells how much of it was read."""

    def __init__(self, handle: IO[bytes], seen: Any) -> None:
        self.handle, self.seen = handle, seen

    def read(self, size: int = -1) -> bytes:
        block = self.handle.read(size)
        self.seen(len(block))
        return block
