"""The clouds a site can start instances on, as recorded in the store."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from stratuslab.cloud.base import Connector
from stratuslab.cloud.connectors import connector_class, make_connector
from stratuslab.db.models import CloudRecord
from stratuslab.db.session import session_scope
from stratuslab.errors import NotFound

DEFAULT_CLOUD = "local"
DEFAULT_PRIORITY = 100
# Options that hold credentials: recorded for the connector, never shown to anybody.
SECRET_OPTIONS = frozenset({"secret", "client_key_pem", "password"})
REDACTED = "********"


@dataclass(frozen=True)
class Cloud:
    name: str
    connector: str
    options: dict[str, Any]
    priority: int = DEFAULT_PRIORITY  # placement tries clouds in ascending priority, then name
    enabled: bool = True  # a disabled cloud takes no new instances; what runs there goes on
    max_instances: int | None = None  # the site's cap on live instances; None: the backend's
    note: str | None = None  # why it was disabled

    def make_connector(self) -> Connector:
        return make_connector(self.connector, dict(self.options))

    def shown_options(self) -> dict[str, Any]:
        """The options with every credential replaced by ``REDACTED``."""
        return {k: REDACTED if k in SECRET_OPTIONS else v for k, v in self.options.items()}


def _cloud(row: CloudRecord) -> Cloud:
    return Cloud(
        row.name,
        row.connector,
        dict(row.options),
        priority=row.priority,
        enabled=row.enabled,
        max_instances=row.max_instances,
        note=row.note,
    )


def record(engine: Engine, *, name: str, connector: str, options: dict[str, Any]) -> str:
    """Record (or update) a cloud. Returns 'recorded', 'updated' or 'present'."""
    connector_class(connector)  # an unknown connector is refused before anything is written
    with session_scope(engine) as session:
        row = session.get(CloudRecord, name)
        if row is None:
            session.add(CloudRecord(name=name, connector=connector, options=options))
            return "recorded"
        if row.connector == connector and row.options == options:
            return "present"
        row.connector, row.options = connector, options
        return "updated"


def get(engine: Engine, name: str = DEFAULT_CLOUD) -> Cloud:
    with session_scope(engine) as session:
        row = session.get(CloudRecord, name)
        if row is None:
            known = session.scalars(select(CloudRecord.name)).all()
            raise NotFound(
                f"no cloud called {name!r} is recorded",
                hint="run `stratus cloud init` to set up the local cloud"
                if not known
                else f"known clouds: {', '.join(known)}",
            )
        return _cloud(row)


def all_clouds(engine: Engine) -> list[Cloud]:
    """Every recorded cloud, in the order placement tries them (priority, then name)."""
    with session_scope(engine) as session:
        return all_clouds_in(session)


def all_clouds_in(session: Session, *, lock: bool = False) -> list[Cloud]:
    """:func:`all_clouds` in the caller's transaction; with ``lock``, their rows are locked
    until it ends (PostgreSQL; on SQLite a writing transaction holds the whole store)."""
    query = select(CloudRecord).order_by(CloudRecord.priority, CloudRecord.name)
    if lock:
        query = query.with_for_update()
    return [_cloud(r) for r in session.scalars(query).all()]


class ConnectorPool:
    """One connector per cloud, made on first use and shared (connectors are thread-safe)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._connectors: dict[str, Connector] = {}

    def __call__(self, cloud: str) -> Connector:
        with self._lock:
            if cloud not in self._connectors:
                self._connectors[cloud] = get(self.engine, cloud).make_connector()
            return self._connectors[cloud]

    def forget(self, cloud: str) -> None:
        """Drop the connector of ``cloud`` (its options changed, or it was removed): the next
        use makes it again from the store."""
        with self._lock:
            connector = self._connectors.pop(cloud, None)
        if connector is not None:
            connector.close()

    def close(self) -> None:
        with self._lock:
            for connector in self._connectors.values():
                connector.close()
            self._connectors.clear()
