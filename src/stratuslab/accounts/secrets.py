"""How credentials are kept: passwords with argon2id, random secrets by their SHA-256.

A password is low in entropy, so it is stored with a slow, memory-hard hash (argon2id, the
library's RFC 9106 parameters); verifying one costs tens of milliseconds and 64 MiB, so at most
a few run at once (a burst of logins waits rather than exhausting the server's memory). API key
secrets, session cookies and node tokens are 256-bit random values: a plain SHA-256 of one is
as safe to keep and costs a microsecond to check.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import threading

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from stratuslab.errors import Invalid, TooLarge

MIN_PASSWORD = 8
MAX_PASSWORD = 1024  # characters; argon2 takes any length, a request body should not
_HASHER = PasswordHasher()
_AT_ONCE = threading.BoundedSemaphore(4)  # argon2 verifications running together


@functools.cache
def _dummy() -> str:
    """Verified against when the account does not exist, so that the answer takes as long as
    for a wrong password and does not tell which names exist. Made on first need, not on
    import: a hash costs 50 ms to a second on a busy machine, and most importers (the CLI,
    `cloud init`) never verify a password."""
    return _HASHER.hash(secrets.token_urlsafe(16))


def check_password_rules(password: str) -> None:
    if len(password) > MAX_PASSWORD:
        raise TooLarge(f"a password is at most {MAX_PASSWORD} characters")
    if len(password) < MIN_PASSWORD:
        raise Invalid(f"a password has at least {MIN_PASSWORD} characters")


def hash_password(password: str) -> str:
    check_password_rules(password)
    with _AT_ONCE:
        return _HASHER.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored`` (None: the account has no password, which
    matches nothing, in the same time)."""
    if len(password) > MAX_PASSWORD:
        return False
    with _AT_ONCE:
        try:
            return _HASHER.verify(stored or _dummy(), password) and stored is not None
        except (VerificationError, InvalidHashError):
            return False


def new_secret() -> str:
    """256 random bits, URL-safe (no ``.``, which separates an API key's id from it)."""
    return secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
