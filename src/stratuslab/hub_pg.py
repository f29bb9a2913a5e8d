"""The event hub across server processes that share one PostgreSQL: LISTEN/NOTIFY.

Each process keeps its in-process :class:`~stratuslab.hub.Hub` (its waiters, its sequence
numbers, its bounded log) and adds two connections of its own to the store, both autocommit
and apart from the engine's pool:

- the *sender*: whatever this process publishes (after its transaction committed, see
  ``deploy/tx.py``) wakes its own waiters at once, then goes out as ``pg_notify`` on one
  channel, all of one transaction's announcements in one statement, before the publisher goes
  on (so a client answered by this process finds the change announced to every other);
- the *listener*: a thread that LISTENs on that channel and puts every other process's events
  into this hub, ignoring its own.

A payload over PostgreSQL's 8000-byte limit is sent without its payload: the waiters this
wakes read the store again (every waiter re-reads; only the instance watch reads payloads, and
it re-reads an instance whose event comes without one).

When the listener's connection drops or PostgreSQL cannot be reached (a partition), it
reconnects with a back-off doubling to :data:`BACKOFF_MAX`, and meanwhile wakes every waiter
every :data:`RESYNC_EVERY` seconds with nothing new, so that long-polls read the store again
rather than wait for events that cannot come; once it listens again it wakes them all once
more, for what was sent while it was away. A connection that is silent is checked every
:data:`PING_EVERY` seconds, with TCP settings that give up on a dead peer within seconds.
:meth:`PgHub.sync` (a fence: a notification to itself, which PostgreSQL delivers after every
one committed before it) tells a caller that every event published anywhere before the call
has arrived here; ``deploy/secrets.py`` uses it before redacting.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import psycopg
import psycopg.conninfo
from sqlalchemy import text
from sqlalchemy.engine import Engine

from stratuslab.hub import Hub

log = logging.getLogger(__name__)
CHANNEL = "stratus_hub"
MAX_PAYLOAD = 7900  # bytes: PostgreSQL refuses a notification payload of 8000 or more
RESYNC_EVERY = 2.0  # seconds between wake-ups of every waiter while the listener is down
BACKOFF_MAX = 5.0  # seconds between two attempts to reconnect, at most
PING_EVERY = 5.0  # seconds of silence after which the listener checks its connection
SYNC_TIMEOUT = 2.0  # seconds a fence may take
# libpq settings of both connections: give up on an unreachable or silent server within
# seconds (a partition must not hang a publisher, nor leave the listener blind for long).
CONNECT = {
    "connect_timeout": 3,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 2,
    "tcp_user_timeout": 5000,
}


def conninfo(engine: Engine) -> str:
    """The libpq connection string of ``engine``'s database, with :data:`CONNECT`."""
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    return psycopg.conninfo.make_conninfo(url, **CONNECT)


class PgHub(Hub):
    """A :class:`Hub` whose events reach every process listening on the same database."""

    def __init__(self, dsn: str, *, keep: int = 20_000, channel: str = CHANNEL) -> None:
        super().__init__(keep=keep)
        self.dsn = dsn
        self.channel = channel
        self.origin = uuid.uuid4().hex[:12]  # this hub's, to ignore its own notifications
        self._send_lock = threading.Lock()
        self._sender: psycopg.Connection[Any] | None = None
        self._handlers: list[tuple[str, Callable[[str, dict[str, Any]], None]]] = []
        self._fences: dict[str, threading.Event] = {}
        self._fences_lock = threading.Lock()
        self._listening = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen_loop, name="hub-listen", daemon=True)
        self._thread.start()
        self._resync = threading.Thread(target=self._resync_loop, name="hub-resync", daemon=True)
        self._resync.start()

    @property
    def listening(self) -> bool:
        """Whether other processes' events are arriving (the listener is connected)."""
        return self._listening.is_set()

    def wait_listening(self, timeout: float) -> bool:
        return self._listening.wait(timeout)

    # -- publishing -----------------------------------------------------------------------

    def publish(self, topic: str, payload: dict[str, Any] | None = None) -> int:
        seq = super().publish(topic, payload)
        self._send([self._encoded(topic, payload or {})])
        return seq

    def publish_many(
        self, items: Iterable[tuple[str, dict[str, Any]]], *, sent: bool = False
    ) -> None:
        items = list(items)
        for topic, payload in items:
            super().publish(topic, payload)
        if items and not sent:
            self._send([self._encoded(topic, payload) for topic, payload in items])

    def send_within(self, session: Any, items: Sequence[tuple[str, dict[str, Any]]]) -> bool:
        """The notifications in the writing transaction itself: PostgreSQL delivers them when
        it commits, never if it does not, so a committed change (a secret learned, a value
        set) cannot lose its event to a broken sender connection, nor wait behind it."""
        if not items:
            return True
        session.execute(
            text(
                "SELECT pg_notify(:channel, x) FROM unnest(CAST(:texts AS text[]))"
                " WITH ORDINALITY AS n(x, i) ORDER BY i"
            ),
            {"channel": self.channel, "texts": [self._encoded(t, p) for t, p in items]},
        )
        return True

    def _encoded(self, topic: str, payload: dict[str, Any]) -> str:
        text = json.dumps(
            {"o": self.origin, "t": topic, "p": payload}, separators=(",", ":"), default=str
        )
        if len(text.encode()) < MAX_PAYLOAD:
            return text
        # Too big for a notification: the topic alone wakes the waiters, who read the store.
        return json.dumps({"o": self.origin, "t": topic[:2000], "cut": 1}, separators=(",", ":"))

    def _send(self, texts: list[str]) -> bool:
        """Notify every listener; on a broken connection, once more on a new one. A failure
        is logged, not raised: the change is committed, and other processes' waiters are woken
        by their own resync when the store is away from them too."""
        with self._send_lock:
            for attempt in (1, 2):
                try:
                    if self._sender is None or self._sender.closed:
                        self._sender = psycopg.connect(self.dsn, autocommit=True)
                    self._sender.execute(
                        "SELECT pg_notify(%s, x) FROM unnest(%s::text[]) WITH ORDINALITY AS"
                        " n(x, i) ORDER BY i",
                        (self.channel, texts),
                    )
                    return True
                except psycopg.Error as exc:
                    self._close_sender()
                    if attempt == 2:
                        log.warning("cannot notify other server processes: %s", exc)
        return False

    def _close_sender(self) -> None:
        if self._sender is not None:
            with contextlib.suppress(psycopg.Error):
                self._sender.close()
            self._sender = None

    # -- what other processes publish -----------------------------------------------------

    def on_remote(self, prefix: str, handler: Callable[[str, dict[str, Any]], None]) -> None:
        self._handlers.append((prefix, handler))

    def sync(self, timeout: float = SYNC_TIMEOUT) -> bool:
        if not self._listening.is_set():
            return False
        token = uuid.uuid4().hex
        arrived = threading.Event()
        with self._fences_lock:
            self._fences[token] = arrived
        try:
            fence = json.dumps({"o": self.origin, "f": token}, separators=(",", ":"))
            return self._send([fence]) and arrived.wait(timeout)
        finally:
            with self._fences_lock:
                self._fences.pop(token, None)

    def _received(self, text: str) -> None:
        try:
            message = json.loads(text)
            origin, topic = message["o"], message.get("t")
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed hub notification: %.200s", text)
            return
        if origin == self.origin:
            fence = message.get("f")
            if fence is not None:
                with self._fences_lock:
                    arrived = self._fences.get(fence)
                if arrived is not None:
                    arrived.set()
            return
        if not isinstance(topic, str):
            return  # another process's fence
        payload = message.get("p") if isinstance(message.get("p"), dict) else {}
        for prefix, handler in self._handlers:
            if topic.startswith(prefix):
                try:
                    handler(topic, payload)
                except Exception:
                    log.exception("hub handler for %s failed", prefix)
        Hub.publish(self, topic, payload)

    def _listen_loop(self) -> None:
        backoff = 0.1
        down_since: float | None = None
        while not self._stop.is_set():
            try:
                conn = psycopg.connect(self.dsn, autocommit=True)
            except psycopg.Error as exc:
                down_since = self._down(down_since, exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            try:
                conn.execute(f'LISTEN "{self.channel}"')
                self._listening.set()
                if down_since is not None:
                    log.warning("listening to other server processes again")
                down_since, backoff = None, 0.1
                self.wake_all()  # what was sent before we listened: read the store again
                self._receive(conn)
            except psycopg.Error as exc:
                down_since = self._down(down_since, exc)
            finally:
                self._listening.clear()
                with contextlib.suppress(psycopg.Error):
                    conn.close()

    def _receive(self, conn: psycopg.Connection[Any]) -> None:
        quiet_since = time.monotonic()
        while not self._stop.is_set():
            got = False
            for notify in conn.notifies(timeout=1.0):
                got = True
                self._received(notify.payload)
            if got:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > PING_EVERY:
                conn.execute("SELECT 1")
                quiet_since = time.monotonic()

    def _down(self, since: float | None, exc: Exception) -> float:
        if since is None:
            log.warning("not hearing other server processes (%s): retrying", exc)
            return time.monotonic()
        return since

    def _resync_loop(self) -> None:
        """While the listener is down, wake every waiter every RESYNC_EVERY seconds."""
        while not self._stop.wait(RESYNC_EVERY):
            if not self._listening.is_set():
                self.wake_all()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)  # it looks at the flag every second
        self._resync.join(timeout=5)
        with self._send_lock:
            self._close_sender()


def hub_for(engine: Engine) -> Hub:
    """The hub for a store: across processes on PostgreSQL, in this process on SQLite."""
    if engine.dialect.name == "postgresql":
        return PgHub(conninfo(engine))
    return Hub()
