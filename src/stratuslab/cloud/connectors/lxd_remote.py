"""Another LXD (or Incus) host over its HTTPS API: enrolment of a client certificate, and the
TLS that pins the host's own certificate.

An LXD server's certificate is self-signed, and the names in it need not match the address it
is reached at, so it is not checked against CAs nor names: it is *pinned*. ``enroll`` reads it
by a TLS handshake (trust on first use, unless the administrator gives its SHA-256 fingerprint,
as ``lxc info`` prints it on that host), and every later connection must present exactly that
certificate (:func:`pinned_context`). A host whose certificate changed is refused, naming both
fingerprints, never trusted anew: whoever renewed it on purpose enrols the host again.

The client side is a key pair made here (as ``lxc remote add`` makes one: an ECDSA P-384 key
and a self-signed certificate for TLS client authentication) unless one is given. With the
host's trust password, ``enroll`` adds the client certificate to the host's trust store; the
options it returns (the connector "lxd"'s) carry the key, and are kept in the store like every
cloud's credentials (``cloud/clouds.py``), never printed.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import shutil
import socket
import ssl
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from stratuslab.cloud.connectors.lxd_api import LxdApi
from stratuslab.errors import BackendError, BackendUnavailable, Forbidden, Invalid

DEFAULT_PORT = 8443
_CLIENT_CERT_DAYS = 3650  # what `lxc remote add` gives its own


class CertificateChanged(Forbidden):
    """The host presented a certificate other than the one pinned at enrolment."""


def enroll(
    endpoint: str,
    *,
    password: str | None = None,
    cert_pem: str | None = None,
    key_pem: str | None = None,
    fingerprint: str | None = None,
    profile: str = "default",
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Make the LXD host at ``endpoint`` trust a client certificate, and return the options
    the connector "lxd" is built from: ``endpoint``, ``profile``, ``client_cert_pem``,
    ``client_key_pem``, ``server_cert_pem``.

    A key pair is made when none is given. The host's certificate is pinned as it is first
    seen, or must have the SHA-256 ``fingerprint`` given (hex, colons allowed). With
    ``password`` (the host's ``core.trust_password``) the client certificate is added to its
    trust store; without, it must be trusted already. Idempotent: enrolling a trusted
    certificate again changes nothing on the host.

    Raises ``BackendUnavailable`` when the host cannot be reached (naming the URL and why),
    ``Forbidden`` when it does not trust the certificate or refuses the password, or its
    certificate does not have ``fingerprint`` (naming both), ``Invalid`` when what answers is
    not LXD."""
    url = https_endpoint(endpoint)
    if (cert_pem is None) != (key_pem is None):
        raise Invalid("give both the client certificate and its key, or neither")
    if cert_pem is None or key_pem is None:
        cert_pem, key_pem = client_key_pair()
    server_pem = fetch_server_certificate(url, timeout=timeout)
    seen = certificate_fingerprint(server_pem)
    if fingerprint is not None and _normal_fingerprint(fingerprint) != seen:
        raise Forbidden(
            f"LXD at {url} presents a certificate with fingerprint {seen}, "
            f"not {_normal_fingerprint(fingerprint)} as given",
            hint="compare with `lxc info` on that host; someone may be in between",
        )
    api = LxdApi(
        url, verify=pinned_context(server_pem, cert_pem, key_pem, url=url), timeout=timeout
    )
    try:
        if _server_info(api, url).get("auth") != "trusted":
            if password is None:
                raise Forbidden(
                    f"LXD at {url} does not trust this client certificate",
                    hint="give the host's trust password, or add the certificate there "
                    "with `lxc config trust add`",
                )
            _add_client_certificate(api, url, password)
            if _server_info(api, url).get("auth") != "trusted":
                raise Forbidden(
                    f"LXD at {url} took the certificate but does not trust it",
                    hint="see `lxc config trust list` on that host (a restricted certificate?)",
                )
    finally:
        api.close()
    return {
        "endpoint": url,
        "profile": profile,
        "client_cert_pem": cert_pem,
        "client_key_pem": key_pem,
        "server_cert_pem": server_pem,
    }


def https_endpoint(endpoint: str) -> str:
    """``endpoint`` as ``https://HOST:PORT`` (LXD's port 8443 when none is given)."""
    parts = urlsplit(endpoint.strip())
    if parts.scheme != "https" or not parts.hostname or parts.path not in ("", "/"):
        raise Invalid(
            f"LXD endpoint {endpoint!r}: write it as https://HOST[:PORT]",
            hint="the host's core.https_address",
        )
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise Invalid(f"LXD endpoint {endpoint!r}: {exc}") from exc
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"https://{host}:{port}"


def fetch_server_certificate(url: str, *, timeout: float) -> str:
    """The certificate the server at ``url`` presents, in PEM, read by a TLS handshake that
    checks nothing (it is what is to be pinned)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or DEFAULT_PORT
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except socket.gaierror as exc:
        raise BackendUnavailable(
            f"LXD at {url} is not reachable: cannot resolve {host!r} ({exc.strerror})"
        ) from exc
    except ssl.SSLError as exc:
        raise Invalid(
            f"{url} does not speak TLS as LXD does ({exc.reason or exc})",
            hint="is it the host's core.https_address?",
        ) from exc
    except TimeoutError as exc:
        raise BackendUnavailable(
            f"LXD at {url} is not reachable: no answer within {timeout:g} s"
        ) from exc
    except OSError as exc:
        raise BackendUnavailable(
            f"LXD at {url} is not reachable: {(exc.strerror or str(exc)).lower()}",
            hint="is the host up, and LXD listening there (core.https_address)?",
        ) from exc
    if not der:
        raise Invalid(f"{url} presented no certificate: it is not LXD")
    return ssl.DER_cert_to_PEM_cert(der)


def certificate_fingerprint(pem: str) -> str:
    """The SHA-256 fingerprint of a PEM certificate, in lowercase hex (as `lxc info` shows)."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def client_key_pair(name: str | None = None) -> tuple[str, str]:
    """A new client certificate and its key, both PEM: an ECDSA P-384 key and a self-signed
    certificate for TLS client authentication, as ``lxc remote add`` makes."""
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "linuxcontainers.org"),
            x509.NameAttribute(NameOID.COMMON_NAME, name or f"stratuslab@{socket.gethostname()}"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_CLIENT_CERT_DAYS))
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA384())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return cert_pem, key_pem


class _PinnedContext(ssl.SSLContext):
    """A client context that accepts exactly one server certificate.

    OpenSSL is told to verify nothing (``CERT_NONE``): LXD's certificate is self-signed and its
    names need not match the address. Instead, right after each handshake the certificate the
    server presented is compared, byte for byte, with the pinned one. The handshake itself
    still proves the server holds that certificate's private key (TLS checks the server's
    signature with the key in the certificate it sent, whatever the verify mode). That check
    is made in ``wrap_socket``, so the context refuses ``wrap_bio`` (TLS inside another TLS
    connection, as through an HTTPS proxy), where it could not be made: the API's client
    takes no proxy from the environment (``LxdApi``)."""

    pinned_der: bytes
    url: str

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        tls = super().wrap_socket(*args, **kwargs)
        presented = tls.getpeercert(binary_form=True) or b""
        if presented != self.pinned_der:
            tls.close()
            raise CertificateChanged(
                f"LXD at {self.url} presents certificate "
                f"{hashlib.sha256(presented).hexdigest()}, not the "
                f"{hashlib.sha256(self.pinned_der).hexdigest()} enrolled: refused",
                hint="if the host's certificate was renewed on purpose, enrol the host again",
            )
        return tls

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        raise Invalid(
            f"LXD at {self.url}: its pinned certificate is checked on a direct connection only, "
            "not through a TLS proxy",
            hint="reach the host without an HTTPS proxy",
        )


def pinned_context(
    server_cert_pem: str, client_cert_pem: str, client_key_pem: str, *, url: str = ""
) -> ssl.SSLContext:
    """An ``ssl.SSLContext`` that presents the client certificate and accepts only the server
    certificate ``server_cert_pem`` (see ``_PinnedContext``)."""
    context = _PinnedContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.pinned_der = ssl.PEM_cert_to_DER_cert(server_cert_pem)
    except ValueError as exc:
        raise Invalid(f"server_cert_pem: not a PEM certificate ({exc})") from exc
    context.url = url or "the remote"
    _load_client_pair(context, client_cert_pem, client_key_pem)
    return context


def _load_client_pair(context: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    """``load_cert_chain`` reads only files: the pair is written in a directory only this user
    can enter (0700), read, and removed at once."""
    folder = Path(tempfile.mkdtemp(prefix="stratus-lxd-"))  # mkdtemp makes it 0700
    try:
        cert_file, key_file = folder / "client.crt", folder / "client.key"
        for path, text in ((cert_file, cert_pem), (key_file, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
        try:
            context.load_cert_chain(cert_file, key_file)
        except ssl.SSLError as exc:
            raise Invalid(f"the client certificate and key do not go together: {exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(folder)


def _server_info(api: LxdApi, url: str) -> dict[str, Any]:
    try:
        info = api.get("/1.0")
    except BackendError as exc:
        if isinstance(exc, BackendUnavailable):
            raise
        raise Invalid(f"{url} does not answer as LXD does: {exc.message}") from exc
    if not isinstance(info, dict) or "api_version" not in info:
        raise Invalid(f"{url} does not answer as LXD does (no api_version in GET /1.0)")
    return info


def _add_client_certificate(api: LxdApi, url: str, password: str) -> None:
    try:
        # LXD 5.0 takes the certificate of the connection when none is in the body.
        api.post(
            "/1.0/certificates",
            {"type": "client", "password": password, "name": f"stratuslab@{socket.gethostname()}"},
        )
    except Forbidden as exc:
        raise Forbidden(
            f"LXD at {url} refused the trust password",
            hint="see `lxc config get core.trust_password` on that host",
        ) from exc


def _normal_fingerprint(text: str) -> str:
    return text.replace(":", "").replace(" ", "").strip().lower()
