"""The site's trust store: the CAs whose endorsers the site trusts, and their revocation lists.

The store is a PEM bundle file, or a directory whose files hold PEM certificates (a grid
site's ``/etc/grid-security/certificates``: files without a certificate are skipped, one
certificate reached under two names counts once). Revocation lists are PEM or DER files, each
verified when loaded against the CA of the store that issued it: a list whose issuer is not in
the store, or whose signature does not verify, is an error that names the file (a site that
wants the lists of intermediate CAs puts those CAs in the store).

:class:`TrustStore` reads the files on first use and again when one changed (its
modification time or size, or the directory's listing), looking at most once per
``recheck_s``; a reading is an :class:`Anchors`, immutable, which answers
:meth:`Anchors.check`: does a chain of certificates (DER, leaf first, then the intermediates
the signature carried) reach a trusted CA, is every certificate on the way valid at a given
time, and has none been revoked. The chain is walked with :mod:`signing`'s
:func:`~stratuslab.cloud.marketplace.signing.chain_to`, the one the signature check uses.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from stratuslab.cloud.marketplace.signing import chain_to, date_problem, issued_by
from stratuslab.errors import Invalid, TooLarge

MAX_FILES = 10_000  # files in a trust store directory
MAX_FILE = 16 << 20  # bytes in one file (every IGTF CA in one bundle is about 1 MiB)
_PEM_CERT = b"-----BEGIN CERTIFICATE-----"
_PEM_CRL = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.DOTALL)
Stamp = tuple[object, ...]


@dataclass(frozen=True)
class Problem:
    """Why a chain is not trusted: ``rule`` is ``untrusted`` or ``revoked``."""

    rule: str
    reason: str


@dataclass(frozen=True)
class _Crl:
    path: Path
    crl: x509.CertificateRevocationList


def _fingerprint(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


class Anchors:
    """One reading of the trust store: its CA certificates, and the revocation lists each
    issued (verified with its key)."""

    def __init__(
        self, cas: Sequence[x509.Certificate], crls: Mapping[bytes, Sequence[_Crl]]
    ) -> None:
        self.cas = tuple(cas)
        self._crls = crls  # a CA's SHA-256 fingerprint -> its lists

    def check(self, certificates: Sequence[bytes], at: dt.datetime) -> str | None:
        """None when the chain reaches a trusted CA, every certificate on it valid at ``at``
        and none revoked; else why not, in words."""
        problem = self.problem(certificates, at)
        return None if problem is None else problem.reason

    def problem(self, certificates: Sequence[bytes], at: dt.datetime) -> Problem | None:
        """:meth:`check`, saying also which rule refuses: ``revoked`` for a certificate a
        list revokes, ``untrusted`` for anything else."""
        if not certificates:
            return Problem("untrusted", "the endorsement carries no certificate")
        try:
            chain = [x509.load_der_x509_certificate(der) for der in certificates]
        except ValueError:
            return Problem("untrusted", "a certificate of the endorsement is not DER X.509")
        path, reached = chain_to(chain[0], chain[1:], self.cas)
        if not reached:
            top = path[-1]
            return Problem(
                "untrusted",
                f"certificate {_subject(top)} is issued by {top.issuer.rfc4514_string()},"
                " which the site does not trust",
            )
        path = self._up_the_store(path)
        for index, cert in enumerate(path):
            who = (
                "the endorser's"
                if index == 0
                else "the trusted CA's"
                if cert in self.cas
                else "an intermediate CA's"
            )
            wrong = date_problem(cert, at, who)
            if wrong is not None:
                return Problem("untrusted", wrong)
        for cert, issuer in itertools.pairwise(path):
            for found in self._crls.get(_fingerprint(issuer), ()):
                crl = found.crl
                due = crl.next_update_utc
                if due is not None and due < at:
                    return Problem(
                        "untrusted",
                        f"the revocation list of {_subject(issuer)} ({found.path}) was due for"
                        f" renewal on {due:%Y-%m-%d %H:%M}Z: whether certificate serial"
                        f" {cert.serial_number} is revoked is not known",
                    )
                revoked = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
                if revoked is not None and revoked.revocation_date_utc <= at:
                    return Problem(
                        "revoked",
                        f"certificate serial {cert.serial_number} ({_subject(cert)}) revoked by"
                        f" {_subject(issuer)} on {revoked.revocation_date_utc:%Y-%m-%d}",
                    )
        return None

    def _up_the_store(self, path: list[x509.Certificate]) -> list[x509.Certificate]:
        """``path`` continued through the store's own CAs up to a root, so that an
        intermediate CA the site trusts is checked against its issuer's list too."""
        while not _self_issued(path[-1]) and len(path) < 2 * len(self.cas) + 2:
            above = next((c for c in self.cas if c not in path and issued_by(path[-1], c)), None)
            if above is None:
                break
            path = [*path, above]
        return path


def _self_issued(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject


class TrustStore:
    """The trust store at ``path`` with the lists ``crls``, read again when they change."""

    def __init__(
        self,
        path: Path,
        crls: Sequence[Path] = (),
        *,
        recheck_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.crl_paths = tuple(crls)
        self.recheck_s = recheck_s
        self._clock = clock
        self._lock = threading.Lock()
        self._anchors: Anchors | None = None
        self._stamp: Stamp | None = None
        self._looked_at = 0.0

    def current(self) -> Anchors:
        """The store as its files are now: read on first use, and again when a file changed.
        Raises ``Invalid`` (``TooLarge``) naming the file that cannot be used; the next call
        tries again."""
        with self._lock:
            now = self._clock()
            if self._anchors is not None and now - self._looked_at < self.recheck_s:
                return self._anchors
            stamp = self._stamp_now()
            if self._anchors is None or stamp != self._stamp:
                self._anchors = None
                self._anchors = load(self.path, self.crl_paths)
                self._stamp = stamp
            self._looked_at = now
            return self._anchors

    def check(self, certificates: Sequence[bytes], at: dt.datetime) -> str | None:
        """:meth:`Anchors.check` on the store as it is now."""
        return self.current().check(certificates, at)

    def _stamp_now(self) -> Stamp:
        def of(path: Path) -> object:
            try:
                st = path.stat()
            except OSError:
                return None
            return (st.st_mtime_ns, st.st_size, st.st_ino)

        own = of(self.path)
        listing: object = ()
        if self.path.is_dir():
            try:
                members = sorted(self.path.iterdir())[: MAX_FILES + 1]
            except OSError:
                members = []
            listing = tuple((member.name, of(member)) for member in members)
        return (own, listing, tuple(of(p) for p in self.crl_paths))


def _read(path: Path, what: str) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_FILE:
            raise TooLarge(f"{what} {path}: {size} bytes, at most {MAX_FILE}")
        return path.read_bytes()
    except OSError as exc:
        raise Invalid(f"{what} {path}: cannot be read: {exc.strerror or exc}") from None


def _certificates(data: bytes, path: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise Invalid(f"trust store {path}: not a PEM certificate (or a damaged one)") from None


def load_cas(path: Path) -> list[x509.Certificate]:
    """The CA certificates of a bundle file or a directory, each once."""
    if path.is_dir():
        try:
            members = sorted(path.iterdir())
        except OSError as exc:
            raise Invalid(f"trust store {path}: cannot be listed: {exc.strerror or exc}") from None
        if len(members) > MAX_FILES:
            raise TooLarge(f"trust store {path}: more than {MAX_FILES} files")
        found: list[x509.Certificate] = []
        for member in members:
            if not member.is_file():
                continue
            data = _read(member, "trust store")
            if _PEM_CERT in data:
                found.extend(_certificates(data, member))
    else:
        found = _certificates(_read(path, "trust store"), path)
    unique = list({_fingerprint(c): c for c in found}.values())
    cas = [c for c in unique if _is_ca(c)]
    if not cas:
        raise Invalid(f"trust store {path}: holds no CA certificate")
    return cas


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def load_crls(path: Path) -> list[x509.CertificateRevocationList]:
    data = _read(path, "CRL")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            blocks = _PEM_CRL.findall(data)
            if not blocks:
                raise ValueError
            return [x509.load_pem_x509_crl(block) for block in blocks]
        return [x509.load_der_x509_crl(data)]
    except ValueError:
        raise Invalid(f"CRL {path}: neither a PEM nor a DER certificate revocation list") from None


def load(path: Path, crl_paths: Sequence[Path] = ()) -> Anchors:
    """Read the trust store and its lists, verifying each list with its issuer's key."""
    cas = load_cas(path)
    crls: dict[bytes, list[_Crl]] = {}
    for crl_path in crl_paths:
        for crl in load_crls(crl_path):
            named = [ca for ca in cas if ca.subject == crl.issuer]
            if not named:
                raise Invalid(
                    f"CRL {crl_path}: issued by {crl.issuer.rfc4514_string()}, which is not a CA"
                    f" of the trust store {path}"
                )
            signers = [ca for ca in named if crl.is_signature_valid(ca.public_key())]  # type: ignore[arg-type]
            if not signers:
                raise Invalid(
                    f"CRL {crl_path}: its signature does not verify with the key of"
                    f" {crl.issuer.rfc4514_string()} (the trust store's)"
                )
            for ca in signers:
                crls.setdefault(_fingerprint(ca), []).append(_Crl(crl_path, crl))
    return Anchors(cas, crls)
