"""Real servers on loopback for the notification tests: an SMTP server (aiosmtpd) that keeps
what it is handed, with STARTTLS and AUTH when asked; an HTTP receiver that reads each request
as its documented consumer would (a webhook consumer checking the signature, GitHub's, GitLab's
and Gitea's status APIs checking path, credentials and fields) and answers as they do.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
import socket
import ssl
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# ---------------------------------------------------------------------------------------------
# Certificates


@dataclass(frozen=True)
class Certs:
    ca: Path  # the CA a client trusts (SSL_CERT_FILE)
    cert: Path  # the server's certificate, for 127.0.0.1
    key: Path


def make_certs(root: Path) -> Certs:
    """A throwaway CA and a server certificate it signed, for 127.0.0.1."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stratus test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = Certs(ca=root / "ca.pem", cert=root / "server.pem", key=root / "server.key")
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def free_port() -> int:
    """A loopback port nothing listens on (just now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# SMTP


@dataclass
class Delivered:
    sender: str
    recipients: list[str]
    message: EmailMessage
    raw: bytes
    authenticated_as: str | None
    tls: bool


@dataclass
class Mailbox:
    """An aiosmtpd handler that keeps every message it accepts, or refuses with ``refuse``."""

    refuse: str | None = None  # e.g. "550 5.7.1 relaying denied": answer to every DATA
    delivered: list[Delivered] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse:
            return self.refuse
        raw = bytes(envelope.original_content or envelope.content)
        message = message_from_bytes(raw, policy=policy.default)
        assert isinstance(message, EmailMessage)
        who = session.auth_data.login.decode() if session.authenticated else None
        self.delivered.append(
            Delivered(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                message,
                raw,
                who,
                session.ssl is not None,
            )
        )
        return "250 2.0.0 OK: queued"


class Users:
    """An aiosmtpd authenticator for one login."""

    def __init__(self, user: str, password: str) -> None:
        self.user, self.password = user.encode(), password.encode()

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            self.user,
            self.password,
        )
        # handled=False: aiosmtpd answers 535 itself to a wrong login
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)


class SmtpServer(Controller):
    """aiosmtpd on 127.0.0.1; port 0 takes a free port (read back once listening)."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


def smtp_server(
    mailbox: Mailbox,
    *,
    port: int = 0,
    certs: Certs | None = None,
    login: tuple[str, str] | None = None,
) -> SmtpServer:
    """Start an SMTP server; with ``certs`` it offers STARTTLS and insists on it, with
    ``login`` it insists on AUTH too."""
    options: dict[str, Any] = {}
    if certs is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certs.cert, certs.key)
        options.update(tls_context=context, require_starttls=True)
    if login is not None:
        options.update(authenticator=Users(*login), auth_required=True, auth_require_tls=True)
    server = SmtpServer(mailbox, hostname="127.0.0.1", port=port, ready_timeout=10, **options)
    server.start()
    return server


# ---------------------------------------------------------------------------------------------
# HTTP


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int
    complaint: str = ""  # why the receiver refused the request, as its consumer would

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """An HTTP server on 127.0.0.1 that reads requests as their documented consumers do.

    ``webhook_secret``: ``POST /hook...`` must carry ``X-Stratus-Signature-256`` matching the
    HMAC-SHA256 of the raw body (401 otherwise), then 200. ``tokens``: the status APIs of
    GitHub (``/repos/...``), GitLab (``/api/v4/projects/...``) and Gitea (``/api/v1/repos/...``)
    answer 201 to a request as each documents it, 401 to a wrong credential, 422 to a bad body.
    ``script``: answers to give first, in order (status, body, headers), whatever comes.
    """

    def __init__(self, *, webhook_secret: str = "", tokens: dict[str, str] | None = None) -> None:
        self.webhook_secret = webhook_secret
        self.tokens = tokens or {}
        self.script: list[tuple[int, bytes, dict[str, str]]] = []
        self.seen: list[Seen] = []
        self.delay_s = 0.0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if receiver.delay_s:
                    threading.Event().wait(receiver.delay_s)
                status, answer, headers, complaint = receiver.answer(
                    self.path, dict(self.headers.items()), body
                )
                with receiver._lock:
                    receiver.seen.append(
                        Seen("POST", self.path, dict(self.headers.items()), body, status, complaint)
                    )
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    def answer(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, dict[str, str], str]:
        with self._lock:
            if self.script:
                status, answer, extra = self.script.pop(0)
                return status, answer, extra, ""
        lowered = {k.lower(): v for k, v in headers.items()}
        if path.startswith("/hook"):
            complaint = _webhook_complaint(self.webhook_secret, lowered, body)
            code = 401 if complaint else 200
        else:
            code, complaint = _status_complaint(path, lowered, body, self.tokens)
        reply = json.dumps({"message": complaint or "ok"}).encode()
        return code, reply, {"Content-Type": "application/json"}, complaint


def _webhook_complaint(secret: str, headers: dict[str, str], body: bytes) -> str:
    """What a consumer checking the signature (GitHub's scheme) finds wrong, if anything."""
    given = headers.get("x-stratus-signature-256", "")
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(given, expected):
        return "bad signature"
    if headers.get("content-type") != "application/json":
        return "not JSON"
    if headers.get("x-stratus-event") != "verdict":
        return "unknown event"
    try:
        json.loads(body)
    except ValueError:
        return "body is not JSON"
    return ""


_GITHUB = re.compile(r"^/repos/([^/]+)/([^/]+)/statuses/([0-9a-f]{40})$")
_GITLAB = re.compile(r"^/api/v4/projects/([^/]+)/statuses/([0-9a-f]{40})$")
_GITEA = re.compile(r"^/api/v1/repos/([^/]+)/([^/]+)/statuses/([0-9a-f]{40})$")


def _status_complaint(
    path: str, headers: dict[str, str], body: bytes, tokens: dict[str, str]
) -> tuple[int, str]:
    try:
        fields = json.loads(body)
    except ValueError:
        return 400, "body is not JSON"
    if headers.get("content-type", "").split(";")[0] != "application/json":
        return 415, "not JSON"
    if _GITHUB.match(path):
        if headers.get("authorization") != f"Bearer {tokens.get('github')}":
            return 401, "Bad credentials"
        if headers.get("accept") != "application/vnd.github+json":
            return 415, "wrong Accept"
        if headers.get("x-github-api-version") != "2022-11-28":
            return 400, "unsupported API version"
        states, label = {"error", "failure", "pending", "success"}, "context"
        if len(fields.get("description") or "") > 140:
            return 422, "description is too long (maximum is 140 characters)"
    elif _GITLAB.match(path):
        if headers.get("private-token") != tokens.get("gitlab"):
            return 401, "401 Unauthorized"
        states, label = {"pending", "running", "success", "failed", "canceled", "skipped"}, "name"
    elif _GITEA.match(path):
        if headers.get("authorization") != f"token {tokens.get('gitea')}":
            return 401, "token is required"
        states, label = {"pending", "success", "error", "failure", "warning"}, "context"
    else:
        return 404, "Not Found"
    if fields.get("state") not in states:
        return 422, f"state {fields.get('state')!r} is not one of {sorted(states)}"
    if not isinstance(fields.get(label), str) or not fields[label]:
        return 422, f"{label} missing"
    url = fields.get("target_url")
    if url is not None and not str(url).startswith(("http://", "https://")):
        return 422, "target_url is not a URL"
    return 201, ""
