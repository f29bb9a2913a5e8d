"""Authentication: a request's credentials turned into the principal it acts as.

What a request may present, in the order it is looked at:

- ``Authorization: Bearer <site token>``: the host-local administrator (the token file is
  readable by root only), named after the site's user;
- ``Authorization: Bearer <id>.<secret>``: an API key;
- ``Authorization: Basic``: a user name and password, or an API key's id and secret;
- SlipStream's session cookie, from ``POST /api/session``;
- a TLS client certificate (verified by TLS against the CAs the site trusts for users) whose
  DN the user registered (``accounts/certificates.py``).

A bearer token that is none of these may be a node instance's token, which only a run's own
endpoints accept (``api/deps.py``). An administrator may act as another user by naming them in
``X-Stratus-User`` (what the site token's CLI does for ``--user``); anybody else naming another
user is refused. Every resolution reads the account afresh, so that disabling a user or revoking
a key takes effect on the next request.
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
from dataclasses import dataclass

from stratuslab.accounts.certificates import Certificates
from stratuslab.accounts.credentials import KEY_PREFIX, Credentials, split_key_token
from stratuslab.accounts.secrets import digest, same, verify_password
from stratuslab.accounts.throttle import LoginThrottle
from stratuslab.accounts.users import Accounts, check_name
from stratuslab.db.models import UserRecord
from stratuslab.db.session import session_scope
from stratuslab.errors import Forbidden, Invalid, Unauthorized
from stratuslab.principal import Principal

MAX_USER = 64
_BASIC_TTL = 60.0  # seconds a verified Basic password is remembered (argon2 costs ~50 ms)
_BASIC_KEPT = 10_000


@dataclass(frozen=True)
class Presented:
    """The credentials of one request, as its headers carried them."""

    authorization: str = ""
    cookie: str = ""
    act_as: str = ""  # X-Stratus-User
    peer_certificate: bytes = b""  # the verified TLS client certificate (DER), if any


class Authenticator:
    def __init__(
        self,
        *,
        accounts: Accounts,
        credentials: Credentials,
        throttle: LoginThrottle,
        certificates: Certificates,
        site_token: str,
        site_user: str,
        allow_proxies: bool = False,
    ) -> None:
        self.accounts = accounts
        self.credentials = credentials
        self.throttle = throttle
        self.certificates = certificates
        self.allow_proxies = allow_proxies
        self.site_token = site_token
        self.site_user = site_user
        self._basic: dict[str, tuple[str, float]] = {}  # digest(user:password) -> (user, until)
        self._lock = threading.Lock()

    def user(self, presented: Presented) -> Principal | None:
        """The user the credentials prove, or None when they carry none a user has (a node
        token, or nothing). Raises ``Unauthorized`` for credentials that are wrong, revoked,
        expired or of a disabled user."""
        if len(presented.act_as) > MAX_USER:
            raise Invalid(f"header x-stratus-user: a user name is at most {MAX_USER} characters")
        scheme, _, value = presented.authorization.strip().partition(" ")
        scheme, value = scheme.lower(), value.strip()
        found: Principal | None = None
        if scheme == "bearer" and value:
            if same(value, self.site_token):
                found = Principal.for_user(self.site_user, admin=True)
            elif (pair := split_key_token(value)) is not None:
                found = self._by_key(*pair)
        elif scheme == "basic":
            found = self._by_basic(value)
        elif presented.cookie:
            found = self._by_session(presented.cookie)
        elif presented.peer_certificate:
            found = self._by_certificate(presented.peer_certificate)
        if found is None:
            return None
        return self._acting(found, presented.act_as)

    def method(self, presented: Presented) -> tuple[str, str | None]:
        """How credentials that :meth:`user` accepted proved who they are: ``site-token``,
        ``api-key``, ``password`` or ``session`` (with the session's id)."""
        scheme, _, value = presented.authorization.strip().partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == "bearer" and value:  # the order of :meth:`user`
            return ("site-token" if same(value, self.site_token) else "api-key"), None
        if scheme == "basic":
            decoded = base64.b64decode(value, validate=True).decode(errors="replace")
            return ("api-key" if decoded.startswith(KEY_PREFIX) else "password"), None
        found = self.credentials.session_of(presented.cookie)
        return "session", found[0] if found is not None else None

    def site_admin(self, token: str) -> Principal | None:
        """The site's administrator, when a bearer token is the site token: a comparison, no
        read, so the API makes it where the request arrives."""
        return (
            Principal.for_user(self.site_user, admin=True) if same(token, self.site_token) else None
        )

    def may_be_node_token(self, token: str) -> bool:
        """Whether a bearer token is neither the site token nor an API key (so, if anything, a
        node instance's token)."""
        return split_key_token(token) is None and not same(token, self.site_token)

    def login_password(self, name: str, password: str) -> Principal:
        """A password login, under the rate limit; the same answer for a wrong password and an
        unknown user."""
        subject = f"user:{name[:MAX_USER]}"
        self.throttle.check(subject)
        with session_scope(self.accounts.engine) as session:
            row = session.get(UserRecord, name[:MAX_USER])
            stored = row.password_hash if row is not None else None
        if not verify_password(stored, password):
            if row is not None:  # counted per account: names nobody has leave nothing stored
                self.throttle.failed(subject)
            raise Unauthorized("wrong user name or password")
        principal = self.accounts.principal(name)
        if principal is None:
            raise Unauthorized(f"the account {name} is disabled")
        self.throttle.succeeded(subject)
        return principal

    def login_key(self, key: str, secret: str) -> Principal:
        found = self._by_key(key, secret)
        if found is None:
            raise Unauthorized("this API key is wrong, revoked or expired")
        return found

    def forget_passwords(self) -> None:
        """Forget remembered Basic logins (after a password change)."""
        with self._lock:
            self._basic.clear()

    # -- the forms of credentials ---------------------------------------------------------

    def _by_key(self, key: str, secret: str) -> Principal:
        user = self.credentials.key_user(key, secret)
        if user is None:
            raise Unauthorized("this API key is wrong, revoked or expired")
        return self._enabled(user)

    def _by_basic(self, value: str) -> Principal:
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("malformed Basic credentials") from None
        name, colon, password = decoded.partition(":")
        if not colon:
            raise Unauthorized("malformed Basic credentials: user:password")
        if name.startswith(KEY_PREFIX):
            return self._by_key(name, password)
        remembered = digest(f"{name}:{password}")
        now = time.monotonic()
        with self._lock:
            hit = self._basic.get(remembered)
        if hit is not None and hit[1] > now:
            return self._enabled(hit[0])
        principal = self.login_password(name, password)
        with self._lock:
            if len(self._basic) >= _BASIC_KEPT:
                self._basic.clear()
            self._basic[remembered] = (name, now + _BASIC_TTL)
        return principal

    def _by_session(self, token: str) -> Principal:
        found = self.credentials.session_of(token)
        if found is None:
            raise Unauthorized("the session has ended", hint="log in again")
        return self._enabled(found[1])

    def _by_certificate(self, der: bytes) -> Principal:
        user = self.certificates.user_for(der, allow_proxies=self.allow_proxies)
        if user is None:
            raise Unauthorized(
                "no user registered this certificate's DN",
                hint="register it: stratus user cert add NAME DN (or log in another way)",
            )
        return self._enabled(user)

    def _enabled(self, user: str) -> Principal:
        principal = self.accounts.principal(user)
        if principal is None:
            raise Unauthorized(f"the account {user} is disabled or gone")
        return principal

    def _acting(self, principal: Principal, act_as: str) -> Principal:
        if not act_as or act_as == principal.user:
            return principal
        if not principal.admin:
            raise Forbidden("x-stratus-user: only an administrator acts as another user")
        check_name(act_as)
        # As that user entirely: their groups, and their administrator flag if they have one.
        as_user = self.accounts.principal(act_as)
        return as_user if as_user is not None else Principal.for_user(act_as)
