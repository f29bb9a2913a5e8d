"""/api/certificates: the X.509 subject DNs users registered, with which a TLS client
certificate logs them in (``accounts/certificates.py``)."""

from __future__ import annotations

from typing import Annotated, Any

from cryptography import x509
from fastapi import APIRouter, Query, status
from pydantic import BaseModel, Field

from stratuslab.accounts.certificates import MAX_DN, dn_of
from stratuslab.api.deps import ServicesDep, UserDep
from stratuslab.errors import Invalid

router = APIRouter(prefix="/api/certificates", tags=["certificates"])
MAX_PEM = 64 * 1024


class CertificateAdd(BaseModel):
    user: Annotated[str | None, Field(max_length=64)] = None  # default: the caller
    dn: Annotated[str | None, Field(max_length=MAX_DN)] = None
    pem: Annotated[str | None, Field(max_length=MAX_PEM)] = None  # or the certificate itself


@router.post("", status_code=status.HTTP_201_CREATED)
def register(body: CertificateAdd, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    """Register a DN, given as text or read from a PEM certificate (never its key)."""
    if (body.dn is None) == (body.pem is None):
        raise Invalid("give the DN or the certificate (PEM), one of the two")
    dn = body.dn if body.dn is not None else _subject(body.pem or "")
    return services.certificates.register(body.user or user.user or "", dn, caller=user)


@router.get("")
def list_certificates(
    services: ServicesDep,
    user: UserDep,
    of: Annotated[str | None, Query(alias="user", max_length=64)] = None,
) -> list[dict[str, Any]]:
    return services.certificates.list(caller=user, user=of)


@router.delete("", status_code=status.HTTP_204_NO_CONTENT)
def remove(
    services: ServicesDep, user: UserDep, dn: Annotated[str, Query(max_length=MAX_DN)]
) -> None:
    services.certificates.remove(dn, caller=user)


def _subject(pem: str) -> str:
    try:
        certificate = x509.load_pem_x509_certificate(pem.encode())
    except ValueError as exc:
        raise Invalid(f"the certificate cannot be read as PEM: {exc}") from None
    return dn_of(certificate.subject)
