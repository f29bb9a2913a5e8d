"""The rate limit on failed logins: a few tries, then a wait that doubles with each failure.

Counted per account in the store (so that it holds across restarts and server processes), not
per client address: a password guesser spreads over addresses, not over accounts. While an
account is locked, no password is even checked for it, so a flood of guesses costs no argon2.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.engine import Engine

from stratuslab.db.models import LoginFailureRecord, utcnow
from stratuslab.db.session import session_scope
from stratuslab.errors import RateLimited

FREE_TRIES = 5  # failures within WINDOW before any wait
WINDOW = timedelta(minutes=15)
FIRST_WAIT = timedelta(seconds=30)
LONGEST_WAIT = timedelta(minutes=15)


class LoginThrottle:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def check(self, subject: str) -> None:
        """Raise ``RateLimited`` while ``subject`` is locked."""
        with session_scope(self.engine) as session:
            row = session.get(LoginFailureRecord, subject[:160])
            now = utcnow()
            if row is not None and row.locked_until is not None and row.locked_until > now:
                wait = int((row.locked_until - now).total_seconds()) + 1
                raise RateLimited(
                    f"too many failed logins for {subject.partition(':')[2][:64]}",
                    hint=f"try again in {wait} s",
                )

    def failed(self, subject: str) -> None:
        now = utcnow()
        with session_scope(self.engine) as session:
            row = session.get(LoginFailureRecord, subject[:160], with_for_update=True)
            if row is None:
                row = LoginFailureRecord(subject=subject[:160], failures=0, window_start=now)
                session.add(row)
            if now - row.window_start > WINDOW and (
                row.locked_until is None or row.locked_until <= now
            ):
                row.failures, row.window_start = 0, now
            row.failures += 1
            if row.failures >= FREE_TRIES:
                wait = min(FIRST_WAIT * 2 ** (row.failures - FREE_TRIES), LONGEST_WAIT)
                row.locked_until = now + wait

    def succeeded(self, subject: str) -> None:
        with session_scope(self.engine) as session:
            row = session.get(LoginFailureRecord, subject[:160])
            if row is not None:
                session.delete(row)
