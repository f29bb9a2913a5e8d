"""API keys and login sessions: secrets handed out once, kept only as their SHA-256.

An API key is a pair as SlipStream has it: a public key id (``credential/<32 hex>``) and a
secret. Clients present it as SlipStream's ``session-template/api-key`` login, as HTTP Basic
(the id as user name, the secret as password), or as one bearer token ``<id>.<secret>``. A
session is what a login opens: a random cookie, valid until it expires or is deleted (logout).
A key or session of a disabled user stops working at once.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, select, update
from sqlalchemy.engine import Engine

from stratuslab.accounts.secrets import digest, new_secret, same
from stratuslab.db.models import ApiKeyRecord, SessionRecord, UserRecord, utcnow
from stratuslab.db.session import reading, session_scope
from stratuslab.errors import Forbidden, Invalid, NotFound
from stratuslab.principal import Principal

KEY_PREFIX = "credential/"
SESSION_PREFIX = "session/"
SESSION_TTL = timedelta(hours=12)
MAX_KEY_DAYS = 3650
MAX_KEYS = 100  # live API keys per user
MAX_KEYS_KEPT = 1000  # keys per user kept in all, revoked ones included
MAX_SESSIONS = 100  # live sessions per user: a new login past it ends the oldest


def key_token(key_id: str, secret: str) -> str:
    """The bearer form of an API key."""
    return f"{key_id.removeprefix(KEY_PREFIX)}.{secret}"


def split_key_token(token: str) -> tuple[str, str] | None:
    """``<id>.<secret>`` -> (id, secret), or None when ``token`` is not of that form."""
    key_id, dot, secret = token.partition(".")
    if not dot or len(key_id) != 32 or not all(c in "0123456789abcdef" for c in key_id):
        return None
    return key_id, secret


class Credentials:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- API keys -------------------------------------------------------------------------

    def create_key(
        self, *, caller: Principal, name: str = "", expires_days: int | None = None
    ) -> dict[str, Any]:
        """A new API key of ``caller``'s; its secret is in this answer and nowhere else."""
        owner = _person(caller, "create API keys")
        if len(name) > 128:
            raise Invalid("an API key's name is at most 128 characters")
        if expires_days is not None and not 1 <= expires_days <= MAX_KEY_DAYS:
            raise Invalid(f"--expires: between 1 and {MAX_KEY_DAYS} days")
        key_id, secret = uuid.uuid4().hex, new_secret()
        now = utcnow()
        with session_scope(self.engine) as session:
            if session.get(UserRecord, owner) is None:
                raise Forbidden(f"{owner} has no account: an administrator adds it first")
            live = session.scalars(
                select(ApiKeyRecord.id).where(
                    ApiKeyRecord.user == owner, ApiKeyRecord.revoked_at.is_(None)
                )
            ).all()
            if len(live) >= MAX_KEYS:
                raise Invalid(f"at most {MAX_KEYS} API keys per user: revoke some first")
            # Revoked keys stay listed, but creating and revoking in a loop must not grow the
            # store: past MAX_KEYS_KEPT in all, the oldest revoked ones go.
            dead = session.scalars(
                select(ApiKeyRecord)
                .where(ApiKeyRecord.user == owner, ApiKeyRecord.revoked_at.is_not(None))
                .order_by(ApiKeyRecord.revoked_at.desc())
                .offset(MAX_KEYS_KEPT - MAX_KEYS)
            ).all()
            for gone in dead:
                session.delete(gone)
            row = ApiKeyRecord(
                id=key_id,
                user=owner,
                name=name,
                secret_hash=digest(secret),
                created_at=now,
                expires_at=now + timedelta(days=expires_days) if expires_days else None,
            )
            session.add(row)
            view = _key_dict(row)
        return view | {"secret": secret, "token": key_token(key_id, secret)}

    def list_keys(self, *, caller: Principal, all_owners: bool = False) -> list[dict[str, Any]]:
        """The caller's keys; with ``all_owners``, an administrator's view of everyone's."""
        with session_scope(self.engine) as session:
            query = select(ApiKeyRecord).order_by(ApiKeyRecord.created_at)
            if not (all_owners and caller.sees_all):
                query = query.where(ApiKeyRecord.user == (caller.user or ""))
            return [_key_dict(row) for row in session.scalars(query)]

    def revoke_key(self, key: str, *, caller: Principal) -> dict[str, Any]:
        key_id = key.removeprefix(KEY_PREFIX)
        with session_scope(self.engine) as session:
            row = session.get(ApiKeyRecord, key_id) if len(key_id) <= 32 else None
            if row is None or not caller.owns(row.user):
                raise NotFound(f"no API key {key[:50]!r}", hint="see `stratus apikey list`")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
            return _key_dict(row)

    def key_user(self, key: str, secret: str) -> str | None:
        """The user an API key belongs to, if the secret matches and the key is live."""
        key_id = key.removeprefix(KEY_PREFIX)
        if len(key_id) != 32 or len(secret) > 256:
            return None
        now = utcnow()
        # A read that waits for no writer (every request of a key holder makes it); the write
        # of last_used_at, to the minute, only when it is due.
        with reading(self.engine) as conn:
            row = conn.execute(_KEY_BY_ID, {"b_id": key_id}).one_or_none()
        if row is None or not same(row.secret_hash, digest(secret)):
            return None
        if row.revoked_at is not None or _past(row.expires_at, now):
            return None
        if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1):
            with session_scope(self.engine) as session:
                session.execute(
                    update(ApiKeyRecord).where(ApiKeyRecord.id == key_id).values(last_used_at=now)
                )
        return str(row.user)

    # -- sessions -------------------------------------------------------------------------

    def open_session(self, user: str, *, method: str) -> tuple[str, str, datetime]:
        """A new session of ``user``: (its id, its cookie value, when it expires)."""
        session_id, token = str(uuid.uuid4()), new_secret()
        now = utcnow()
        expires = now + SESSION_TTL
        with session_scope(self.engine) as session:
            # Logins add rows: the user's expired ones go, and past MAX_SESSIONS live ones the
            # oldest ends, so that no client logging in again and again grows the store.
            session.execute(
                delete(SessionRecord).where(
                    SessionRecord.user == user, SessionRecord.expires_at <= now
                )
            )
            live = session.scalars(
                select(SessionRecord)
                .where(SessionRecord.user == user, SessionRecord.revoked_at.is_(None))
                .order_by(SessionRecord.created_at.desc())
                .offset(MAX_SESSIONS - 1)
            ).all()
            for oldest in live:
                oldest.revoked_at = now
            session.add(
                SessionRecord(
                    id=session_id,
                    user=user,
                    token_hash=digest(token),
                    method=method,
                    expires_at=expires,
                )
            )
        return SESSION_PREFIX + session_id, token, expires

    def session_of(self, token: str) -> tuple[str, str] | None:
        """(session id, user) of a live session cookie."""
        if not token or len(token) > 256:
            return None
        with reading(self.engine) as conn:
            row = conn.execute(_SESSION_BY_TOKEN, {"b_digest": digest(token)}).one_or_none()
        if row is None or row.revoked_at is not None or _past(row.expires_at, utcnow()):
            return None
        return SESSION_PREFIX + row.id, row.user

    def show_session(self, session_id: str, *, caller: Principal) -> dict[str, Any] | None:
        bare = session_id.removeprefix(SESSION_PREFIX)
        with session_scope(self.engine) as session:
            row = session.get(SessionRecord, bare) if len(bare) <= 36 else None
            if row is None or not caller.owns(row.user):
                return None
            now = utcnow()
            return {
                "id": SESSION_PREFIX + row.id,
                "resourceURI": "http://sixsq.com/slipstream/1/Session",
                "username": row.user,
                "method": row.method,
                "created": row.created_at.isoformat(),
                "expiry": row.expires_at.isoformat(),
                "state": "closed"
                if row.revoked_at is not None
                else "expired"
                if _past(row.expires_at, now)
                else "open",
            }

    def close_session(self, session_id: str, *, caller: Principal) -> None:
        """Log out: the session's cookie no longer works."""
        bare = session_id.removeprefix(SESSION_PREFIX)
        with session_scope(self.engine) as session:
            row = session.get(SessionRecord, bare) if len(bare) <= 36 else None
            if row is None or not caller.owns(row.user):
                raise NotFound(f"no session {session_id[:60]!r}")
            if row.revoked_at is None:
                row.revoked_at = utcnow()

    def close_sessions_of(self, user: str) -> None:
        with session_scope(self.engine) as session:
            session.execute(
                update(SessionRecord)
                .where(SessionRecord.user == user, SessionRecord.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )


def _person(caller: Principal, what: str) -> str:
    if caller.is_node or not caller.user:
        raise Forbidden(f"only a user may {what}")
    return caller.user


_KEYS = cast(Table, ApiKeyRecord.__table__)
_KEY_BY_ID = select(
    _KEYS.c.user, _KEYS.c.secret_hash, _KEYS.c.revoked_at, _KEYS.c.expires_at, _KEYS.c.last_used_at
).where(_KEYS.c.id == bindparam("b_id"))
_SESSIONS = cast(Table, SessionRecord.__table__)
_SESSION_BY_TOKEN = select(
    _SESSIONS.c.id, _SESSIONS.c.user, _SESSIONS.c.revoked_at, _SESSIONS.c.expires_at
).where(_SESSIONS.c.token_hash == bindparam("b_digest"))


def _past(at: datetime | None, now: datetime) -> bool:
    return at is not None and at <= now


def _key_dict(row: ApiKeyRecord) -> dict[str, Any]:
    now = utcnow()
    state = "revoked" if row.revoked_at else "expired" if _past(row.expires_at, now) else "live"
    return {
        "id": KEY_PREFIX + row.id,
        "user": row.user,
        "name": row.name,
        "state": state,
        "created_at": row.created_at.isoformat(),
        "expires_at": row.expires_at.isoformat() if row.expires_at else None,
        "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None,
    }
