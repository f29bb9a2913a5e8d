"""X.509 certificates as credentials: a user registers the subject DN of the certificate they
already hold (a grid user's, from their CA), and a TLS client certificate with that DN logs
them in.

The chain itself is verified by TLS, against the CAs the site trusts (``tls_client_ca_file``),
before the application sees the request (``api/tls.py``). What reaches here is the verified
leaf. When the site also trusts RFC 3820 proxy certificates (``tls_allow_proxies``: OpenSSL
checks that each proxy is signed by the certificate it extends and that its subject is that
certificate's subject plus one CN), the identity is the end-entity certificate's DN, found by
taking CN components off the proxy's issuer, and only a DN somebody registered counts.

DNs are written as grid tools print them: ``/DC=org/DC=example/O=Grid/CN=Alice Smith``, in the
certificate's own order. A DN may be registered in that form or in RFC 4514's
(``CN=Alice Smith,O=Grid,DC=example,DC=org``); both are kept in the first (``stratuslab/dn.py``,
which the site's image policy compares endorsers' DNs with too).
"""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier
from sqlalchemy import select
from sqlalchemy.engine import Engine

from stratuslab.db.models import CertificateRecord, UserRecord
from stratuslab.db.session import session_scope
from stratuslab.dn import MAX_DN, dn_of, normalized

__all__ = ["MAX_DN", "Certificates", "dn_of", "identities", "is_proxy", "normalized"]
from stratuslab.errors import Conflict, Forbidden, Invalid, NotFound
from stratuslab.principal import Principal

PROXY_CERT_INFO = ObjectIdentifier("1.3.6.1.5.5.7.1.14")  # RFC 3820's proxyCertInfo
MAX_PROXY_DEPTH = 10  # proxies of proxies a login may present
MAX_PER_USER = 20
_LEGACY_PROXY_CN = {"proxy", "limited proxy"}  # Globus proxies before RFC 3820


def is_proxy(certificate: x509.Certificate) -> bool:
    try:
        certificate.extensions.get_extension_for_oid(PROXY_CERT_INFO)
        return True
    except x509.ExtensionNotFound:
        pass
    subject = certificate.subject.rdns
    last = subject[-1] if subject else None
    if last is None or len(last) != 1:
        return False
    (attribute,) = last
    return (
        attribute.oid == NameOID.COMMON_NAME
        and str(attribute.value).lower() in _LEGACY_PROXY_CN
        and certificate.issuer.rdns == subject[:-1]
    )


def identities(certificate: x509.Certificate, *, allow_proxies: bool) -> list[str]:
    """The DNs a verified leaf may stand for, most specific first: its own subject; for a
    proxy (when the site allows them), its issuer's subject and, while that ends with a proxy's
    CN, the subjects of the proxies above it, up to the end-entity certificate's."""
    if not is_proxy(certificate):
        return [dn_of(certificate.subject)]
    if not allow_proxies:
        return []
    rdns = list(certificate.issuer.rdns)
    out = []
    for _ in range(MAX_PROXY_DEPTH):
        if not rdns:
            break
        out.append(dn_of(x509.Name(rdns)))
        if not _proxy_cn(rdns[-1]):
            break
        rdns = rdns[:-1]
    return out


def _proxy_cn(rdn: x509.RelativeDistinguishedName) -> bool:
    """Whether ``rdn`` is the CN a proxy adds (RFC 3820's number, or Globus' "proxy"): only
    those are taken off, so that a DN never matches a shorter DN somebody else registered."""
    if len(rdn) != 1:
        return False
    (attribute,) = rdn
    value = str(attribute.value).lower()
    return attribute.oid == NameOID.COMMON_NAME and (value.isdigit() or value in _LEGACY_PROXY_CN)


class Certificates:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def register(self, user: str, dn: str, *, caller: Principal) -> dict[str, Any]:
        """Register ``dn`` for ``user`` (themselves, or anyone by an administrator). A DN is
        one user's: registering one held by somebody else is a conflict."""
        if not (caller.sees_all or caller.user == user):
            raise Forbidden("only an administrator registers a certificate for another user")
        canonical = normalized(dn)
        with session_scope(self.engine) as session:
            if session.get(UserRecord, user) is None:
                raise NotFound(f"no user {user[:70]!r}")
            held = session.get(CertificateRecord, canonical)
            if held is not None:
                if held.user == user:
                    return _dict(held)
                raise Conflict(f"the DN {canonical[:120]} is registered to another user")
            count = len(
                session.scalars(
                    select(CertificateRecord.dn).where(CertificateRecord.user == user)
                ).all()
            )
            if count >= MAX_PER_USER:
                raise Invalid(f"at most {MAX_PER_USER} certificates per user")
            row = CertificateRecord(dn=canonical, user=user)
            session.add(row)
            session.flush()
            return _dict(row)

    def list(self, *, caller: Principal, user: str | None = None) -> list[dict[str, Any]]:
        with session_scope(self.engine) as session:
            query = select(CertificateRecord).order_by(CertificateRecord.user, CertificateRecord.dn)
            if not caller.sees_all:
                query = query.where(CertificateRecord.user == (caller.user or ""))
            elif user is not None:
                query = query.where(CertificateRecord.user == user)
            return [_dict(row) for row in session.scalars(query)]

    def remove(self, dn: str, *, caller: Principal) -> None:
        canonical = normalized(dn)
        with session_scope(self.engine) as session:
            row = session.get(CertificateRecord, canonical)
            if row is None or not caller.owns(row.user):
                raise NotFound(f"no registered certificate {canonical[:120]}")
            session.delete(row)

    def user_for(self, der: bytes, *, allow_proxies: bool) -> str | None:
        """The user a verified client certificate (DER) logs in, if its DN is registered."""
        try:
            certificate = x509.load_der_x509_certificate(der)
        except ValueError:
            return None
        candidates = identities(certificate, allow_proxies=allow_proxies)
        if not candidates:
            return None
        with session_scope(self.engine) as session:
            rows = {
                row.dn: row.user
                for row in session.scalars(
                    select(CertificateRecord).where(CertificateRecord.dn.in_(candidates))
                )
            }
        return next((rows[dn] for dn in candidates if dn in rows), None)


def _dict(row: CertificateRecord) -> dict[str, Any]:
    return {"dn": row.dn, "user": row.user, "created_at": row.created_at.isoformat()}
