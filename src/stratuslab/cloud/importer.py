"""Images from elsewhere: downloaded (or read from the server's host), checked against their
Marketplace entry before anything is imported, imported as the user's own.

:meth:`Importer.check` refuses everything that can be refused before a byte is downloaded:
the source (an http(s) URL of a bounded length, not one of the site's private addresses unless
the site allows it or the caller is an administrator; a path on the server's host, for an
administrator only), the name, and the entry (its signature verified, not expired, not
deprecated, the identifier the one asked for). :meth:`Importer.run` then downloads with resume
(``download.py``) at most the entry's byte count (or the site's bound), checks the size and
the four digests against the entry and deletes a download that does not match, takes the
server's ``stratus.*`` properties out of the archive's metadata (``archive.py``), and imports
it as ``<owner>/<name>``, recorded in the catalog (origin ``import``; the source, the
identifier, the endorser and the checksums in its details) before the backend has it, so that
it is never for a moment an unrecorded image anybody could start.

The entry's endorser is recorded, not judged: whether the site trusts them is the site's trust
policy's question, asked at every start.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from stratuslab.cloud import archive, download
from stratuslab.cloud.base import Image
from stratuslab.cloud.catalog import alias_for
from stratuslab.cloud.imaging import ImageService, Made, description_of
from stratuslab.cloud.marketplace import signing
from stratuslab.cloud.marketplace.identifier import Checksums, checksums
from stratuslab.cloud.marketplace.signing import Verified
from stratuslab.cloud.types import Capability
from stratuslab.errors import (
    BackendError,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    NotSupported,
    TooLarge,
    Unauthorized,
)


class EntryBook(Protocol):
    """The site's Marketplace, as an import uses it."""

    def usable_xml(self, identifier: str) -> bytes:
        """The signed entry of ``identifier`` to check an import against; else NotFound."""
        ...

    def keep(self, xml: bytes) -> None:
        """Keep the signed entry an import was checked against (one kept already is fine)."""
        ...


MAX_IMPORT_BYTES = 8 << 30  # the default of the setting image_import_max_bytes
Stage = Callable[[str, int, int | None], None]  # stage, bytes done, bytes in all (when known)
_SUFFIXES = (".tar.gz", ".tar.xz", ".tar.zst", ".tar.bz2", ".tgz", ".tar", ".zst", ".gz", ".xz")
_SAFE = re.compile(r"[^a-z0-9._-]+")


@dataclass(frozen=True)
class ImportRequest:
    source: str  # an http(s) URL, or an absolute path on the server's host
    name: str | None = None  # default: from the source's file name
    cloud: str = "local"
    entry: bytes | None = None  # a signed Marketplace entry (its XML, as signed)
    identifier: str | None = None  # the Marketplace identifier the entry was fetched by
    public: bool = False
    description: str = ""


@dataclass(frozen=True)
class Checked:
    """An import that may go ahead."""

    request: ImportRequest
    alias: str
    url: str | None
    path: Path | None
    endorsed: Verified | None
    max_bytes: int


class Importer:
    def __init__(
        self,
        images: ImageService,
        *,
        folder: Path,
        max_bytes: int = MAX_IMPORT_BYTES,
        private_allowed: bool = False,
        is_private: download.HostCheck,
        attempts: int = download.ATTEMPTS,
        transport: Any = None,
        entries: EntryBook | None = None,
    ) -> None:
        self.images = images
        # The site's Marketplace: the entry of an identifier, and where the entry an import
        # was checked against is kept (so that the site's policy finds it at every start).
        self.entries = entries
        self.folder = folder
        self.max_bytes = max_bytes
        # A site's administrator may reach what the site's users may not.
        self.private_allowed = private_allowed or images.admin
        self.is_private = is_private
        self.attempts = attempts
        self.transport = transport

    def check(self, request: ImportRequest, *, now: dt.datetime | None = None) -> Checked:
        """Everything refused before a byte is downloaded (see the module)."""
        description_of(request.description)
        url = path = None
        if "://" in request.source[:16]:
            url = download.check_url(request.source)
            download.guard_host(url, is_private=self.is_private, allowed=self.private_allowed)
        else:
            path = self._local(request.source)
        name = request.name or _name_from(request.source)
        alias = alias_for(self.images.owner, name)
        connector = self.images.connector(request.cloud)
        connector.require(Capability.IMPORT_IMAGE)
        self.images.check_free(request.cloud, alias)
        endorsed = None
        bound = self.max_bytes
        if request.entry is None and request.identifier is not None:
            if self.entries is None:
                raise NotSupported("this server has no Marketplace to find the entry in")
            request = replace(request, entry=self.entries.usable_xml(request.identifier))
        if request.entry is not None:
            endorsed = endorsement(request.entry, identifier=request.identifier, now=now)
            size = endorsed.entry.checksums.size
            if size > self.max_bytes:
                raise TooLarge(
                    f"the entry describes {size} bytes: this site imports at most "
                    f"{self.max_bytes} (setting image_import_max_bytes)"
                )
            bound = size
        if path is not None and path.stat().st_size > bound:
            raise TooLarge(f"{path} has {path.stat().st_size} bytes: at most {bound}")
        return Checked(replace(request, name=name), alias, url, path, endorsed, bound)

    def run(self, checked: Checked, *, progress: Stage | None = None) -> Made:
        """Download, check, clean and import (see the module); what was imported."""
        started = time.monotonic()
        say = progress or (lambda _stage, _done, _total: None)
        request = checked.request
        resumed = 0
        if checked.url is not None:
            got = download.download(
                checked.url,
                folder=self.folder,
                max_bytes=checked.max_bytes,
                is_private=self.is_private,
                private_allowed=self.private_allowed,
                progress=lambda done, total: say("download", done, total),
                attempts=self.attempts,
                transport=self.transport,
            )
            source, resumed = got.path, got.resumed_from
        else:
            assert checked.path is not None
            source = checked.path
        size = source.stat().st_size
        cleaned = self.folder / f"{hashlib.sha256(request.source.encode()).hexdigest()[:40]}.tar"
        try:
            say("verify", 0, size)
            with source.open("rb") as handle:
                found = checksums(handle)
            if checked.endorsed is not None:
                self._compare(checked, found)
                if self.entries is not None and request.entry is not None:
                    self.entries.keep(request.entry)  # the policy decides starts by it
            say("inspect", 0, None)
            archive_path, stripped = archive.without_server_properties(source, cleaned)
            sha256 = found.sha256 if archive_path == source else _sha256(archive_path)
            say("import", 0, None)
            made = self._import(checked, archive_path, sha256, found, stripped, started)
        except (Forbidden, Invalid, Conflict):
            self._forget(checked)  # a download that is not what it should be is not kept
            raise
        finally:
            cleaned.unlink(missing_ok=True)
        self._forget(checked)
        return replace(made, extra={**made.extra, "resumed_from": resumed})

    # -- steps ----------------------------------------------------------------------------

    def _local(self, source: str) -> Path:
        if not self.images.admin:
            raise Forbidden(
                "a path names a file on the server's host: only an administrator imports one",
                hint="put the image on an http(s) server and import its URL",
            )
        path = Path(source)
        if not path.is_absolute():
            raise Invalid(f"{source[:200]!r}: give the file's absolute path on the server's host")
        if not path.is_file():
            raise NotFound(f"no file {source[:200]!r} on the server's host")
        return path

    def _compare(self, checked: Checked, found: Checksums) -> None:
        assert checked.endorsed is not None
        wrong = checked.endorsed.entry.checksums.mismatches(found)
        if wrong:
            what = "download" if checked.url else "file"
            gone = "; it was deleted" if checked.url else ""
            raise Forbidden(
                f"refused: the {what} is not the image its entry describes: "
                + "; ".join(wrong)
                + gone
            )

    def _import(
        self,
        checked: Checked,
        archive_path: Path,
        sha256: str,
        found: Checksums,
        stripped: list[str],
        started: float,
    ) -> Made:
        request, images = checked.request, self.images
        connector = images.connector(request.cloud)
        try:
            present = connector.get_image(sha256)
        except NotFound:
            present = None
        if present is not None:
            seen = [i.name for i in images.instances.list_images(request.cloud)]
            where = f" as {present.name}" if present.name in seen else ""
            raise Conflict(f"this very image is on {request.cloud} already{where}")
        images.check_free(request.cloud, checked.alias)
        details = _details(checked, found, stripped, sha256)
        planned = Image(
            name=checked.alias,
            fingerprint=sha256,
            size_bytes=archive_path.stat().st_size,
            description=request.description,
        )
        # Recorded first: the moment the backend has it, it is the owner's.
        owned = images.catalog.record(
            cloud=request.cloud,
            image=planned,
            owner=images.owner,
            origin="import",
            public=request.public,
            details=details,
        )
        try:
            image = connector.import_image(archive_path, name=checked.alias, sha256=sha256)
            if image.fingerprint != sha256:
                connector.delete_image(image.fingerprint)
                raise BackendError(
                    f"the cloud fingerprinted the image {image.fingerprint[:12]}, not "
                    f"{sha256[:12]} (its SHA-256): only unified tarballs are imported"
                )
        except BaseException:
            images.catalog.forget(cloud=request.cloud, alias=checked.alias)
            raise
        extra = {"source": request.source, "stripped": stripped}
        return Made(image, owned, time.monotonic() - started, extra)

    def _forget(self, checked: Checked) -> None:
        if checked.url is not None:
            download.forget(checked.url, self.folder)


def endorsement(
    entry: bytes, *, identifier: str | None = None, now: dt.datetime | None = None
) -> Verified:
    """The endorsed entry an import is checked against, refused (``Forbidden``) when its
    signature does not verify, it has expired or been deprecated, or it is not the entry of
    ``identifier``."""
    when = now or dt.datetime.now(dt.UTC)
    try:
        verified = signing.verify(entry, trusted_cas=None, now=when)
    except Unauthorized as exc:
        raise Forbidden(f"the entry is refused: {exc.message}") from None
    found = verified.entry
    if identifier is not None and found.identifier != identifier:
        raise Forbidden(f"the entry is {found.identifier}'s, not {identifier}'s")
    if found.valid <= when:
        raise Forbidden(f"the entry expired on {found.valid:%Y-%m-%d %H:%M}Z")
    if found.deprecated is not None:
        newer = f" (replaced by {found.is_replaced_by})" if found.is_replaced_by else ""
        raise Forbidden(f"the entry is deprecated: {found.deprecated[:300]}{newer}")
    return verified


def _details(
    checked: Checked, found: Checksums, stripped: list[str], sha256: str
) -> dict[str, Any]:
    details: dict[str, Any] = {
        "source": checked.request.source,
        "identifier": found.identifier,
        "bytes": found.size,
        "checksums": {"md5": found.md5, "sha1": found.sha1, "sha256": found.sha256},
        "archive_sha256": sha256,
        "stripped": stripped,
    }
    if checked.endorsed is not None:
        endorsed = checked.endorsed
        details["endorser"] = {
            "email": endorsed.email,
            "subject": endorsed.subject,
            "issuer": endorsed.issuer,
        }
        details["entry_valid"] = endorsed.entry.valid.isoformat()
    return details


def _name_from(source: str) -> str:
    """A name from the source's file name: ``.../debian-12.tar.gz`` is ``debian-12``."""
    path = urlsplit(source).path if "://" in source[:16] else source
    base = unquote(path.rstrip("/").rsplit("/", 1)[-1]).lower()
    for suffix in _SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    name = _SAFE.sub("-", base).strip("-._")[:63]
    if not name:
        raise Invalid(f"no image name in {source[:200]!r}", hint="give one with --name")
    return name


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
