"""Engines and sessions. The schema is brought to the newest migration on first use."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from stratuslab.errors import BackendUnavailable

MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK = threading.Lock()
_ENGINES: dict[str, Engine] = {}
_TURNS: dict[int, threading.RLock] = {}
_FACTORIES: dict[int, sessionmaker[Session]] = {}


def engine_for(url: str) -> Engine:
    """One engine per database URL per process, its schema up to date."""
    with _LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            engine = _create(url)
            upgrade(engine)
            _ENGINES[url] = engine
        return engine


def dispose(url: str) -> None:
    """Close the engine of ``url`` (its connections), if one was made."""
    with _LOCK:
        engine = _ENGINES.pop(url, None)
    if engine is not None:
        engine.dispose()


def dispose_all() -> None:
    with _LOCK:
        for engine in _ENGINES.values():
            engine.dispose()
        _ENGINES.clear()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits when the block ends normally and rolls back otherwise."""
    with _turn(engine), _factory(engine)() as session, session.begin():
        yield session


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A connection for reads only: it never waits for a writer (on SQLite, a snapshot of
    the last commit; on PostgreSQL, what READ COMMITTED sees)."""
    with engine.connect() as conn:
        yield conn.execution_options(stratus_read_only=True)


def _factory(engine: Engine) -> sessionmaker[Session]:
    """One session factory per engine: making one costs more than the session it makes."""
    factory = _FACTORIES.get(id(engine))
    if factory is None or factory.kw.get("bind") is not engine:
        factory = sessionmaker(engine, expire_on_commit=False)
        _FACTORIES[id(engine)] = factory
    return factory


@contextmanager
def _turn(engine: Engine) -> Iterator[None]:
    """On SQLite, this process's transactions queue here rather than in SQLite's busy handler,
    which retries in sleeps growing to 100 ms (under 32 concurrent requests, p99 was 1.3 s).
    Other processes (the CLI's site commands) still meet the busy timeout."""
    if engine.dialect.name != "sqlite":
        yield
        return
    with _LOCK:
        turn = _TURNS.setdefault(id(engine), threading.RLock())
    with turn:
        yield


def head_revision() -> str:
    versions = sorted(p.stem for p in (MIGRATIONS / "versions").glob("[0-9]*.py"))
    return versions[-1].split("_", 1)[0]


def upgrade(engine: Engine) -> None:
    """Apply pending migrations. Checking costs one query; Alembic loads only when needed."""
    try:
        with engine.connect() as conn:
            current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except (OperationalError, ProgrammingError):
        current = None
    if current == head_revision():
        return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


def _create(url: str) -> Engine:
    options: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        options["connect_args"] = {"timeout": 30, "check_same_thread": False}
    else:
        options["pool_pre_ping"] = True
    try:
        engine = create_engine(url, **options)
    except Exception as exc:
        raise BackendUnavailable(f"cannot open the store {url}: {exc}") from exc
    if url.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_begin(connection: Any) -> None:
    # Every transaction that may write takes the write lock at once: a read-then-write
    # transaction that started deferred could act on what it read while another wrote (two
    # nodes completing a barrier together would both advance the run). PostgreSQL gets row
    # locks instead. A read (see :func:`reading`) never writes and, with WAL, reads a
    # snapshot without waiting for writers.
    if connection.get_execution_options().get("stratus_read_only"):
        connection.exec_driver_sql("BEGIN")
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # let _sqlite_begin say how transactions begin
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # With WAL, NORMAL is SQLite's advice: no corruption on a crash, only the last commits may
    # be lost on a power cut; FULL would fsync every commit.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
