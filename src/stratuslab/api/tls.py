"""TLS for users: HTTPS with optional client certificates, and the verified certificate handed
to the application.

The context asks for a client certificate but does not require one (a browser or a client with
an API key has none), verifies it against the CAs the site trusts for users, and, where the
site says so, accepts RFC 3820 proxy certificates (OpenSSL's proxy rules). uvicorn does not
put the peer certificate in the ASGI scope, so the HTTP protocol is extended by one step: when
a TLS connection is made, the verified leaf (DER) is put in the connection's copy of the
lifespan state, which every request on it finds in ``scope["state"]``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stratuslab.errors import Invalid

PEER_CERTIFICATE = "stratus.peer_certificate"  # key in scope["state"]: the leaf, DER


def context(
    *, cert_file: Path, key_file: Path, client_ca_file: Path | None, allow_proxies: bool
) -> ssl.SSLContext:
    """The server's TLS context: its certificate, and client certificates verified against
    ``client_ca_file`` when one is given."""
    made = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    made.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        made.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file))
        if client_ca_file is not None:
            made.load_verify_locations(cafile=str(client_ca_file))
            made.verify_mode = ssl.CERT_OPTIONAL
            if allow_proxies:
                made.verify_flags |= ssl.VERIFY_ALLOW_PROXY_CERTS
    except (OSError, ssl.SSLError) as exc:
        raise Invalid(f"TLS settings: cannot load the certificates: {exc}") from exc
    return made


def peer_certificate(scope: Mapping[str, Any]) -> bytes:
    """The verified client certificate of the request's connection (DER), or b""."""
    state = scope.get("state") or {}
    found = state.get(PEER_CERTIFICATE, b"")
    return found if isinstance(found, bytes) else b""


def protocol_class() -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools when installed, else h11), extended to hand the
    verified peer certificate to the application."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:  # pragma: no cover - uvicorn[standard] brings httptools
        from uvicorn.protocols.http.h11_impl import H11Protocol as Base  # type: ignore[assignment]

    class WithPeerCertificate(Base):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            ssl_object = transport.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            if der:
                self.app_state = {**self.app_state, PEER_CERTIFICATE: der}

    return WithPeerCertificate
