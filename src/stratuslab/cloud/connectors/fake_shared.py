"""The fake backend shared by several processes: its instances in a small SQLite file.

:class:`~stratuslab.cloud.connectors.fake.FakeConnector` keeps its instances in the memory of
one process, so two server processes on one store would each see a backend of their own: one
could not adopt, list or destroy what the other made. This one keeps them in ``path`` (SQLite,
each change in a transaction that takes the file's write lock), so every connector over the
same file, in any process, sees one backend. It is for control-plane benchmarks and tests of
several server processes, registered as ``fake-shared``; it keeps the fake's promises where it
has them (a name taken is a ``Conflict``, as LXD refuses it; memory runs out; an unknown image
is ``NotFound``; destroying what is gone succeeds) and declares no capability beyond
instances and the fake's few commands: no volumes, snapshots or images of its own (the images
are the fake's, per process, as each process seeds them).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stratuslab.cloud.base import Capacity, Connector, Instance, InstanceSpec
from stratuslab.cloud.base_volumes import VolumeContract
from stratuslab.cloud.connectors.fake import FakeConnector, _with_addresses
from stratuslab.cloud.types import Capability, InstanceState
from stratuslab.errors import CapacityExceeded, Conflict, NotFound, NotSupported

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT UNIQUE NOT NULL,
    state TEXT NOT NULL,
    image TEXT NOT NULL,
    cpu INTEGER,
    ram_mb INTEGER,
    tags TEXT NOT NULL,
    created_at TEXT NOT NULL,
    user_data TEXT NOT NULL
)
"""
_SELECT = "SELECT id, name, state, image, cpu, ram_mb, tags, created_at, user_data FROM instances"


class SharedFakeConnector(FakeConnector):
    """Fake instances in a SQLite file that every process naming it shares."""

    kind = "fake-shared"
    capabilities = frozenset({Capability.EXEC})  # the fake's commands (echo, hostname...)

    # The shared backend keeps no volumes: the contract's refusals, not the in-memory fake's
    # volumes, which another process would not see.
    create_volume = VolumeContract.create_volume
    get_volume = VolumeContract.get_volume
    list_volumes = VolumeContract.list_volumes
    delete_volume = VolumeContract.delete_volume
    resize_volume = VolumeContract.resize_volume
    attach_volume = VolumeContract.attach_volume
    detach_volume = VolumeContract.detach_volume
    create_volume_snapshot = VolumeContract.create_volume_snapshot
    list_volume_snapshots = VolumeContract.list_volume_snapshots
    restore_volume_snapshot = VolumeContract.restore_volume_snapshot
    delete_volume_snapshot = VolumeContract.delete_volume_snapshot

    def __init__(
        self,
        *,
        path: str,
        cpus: int = 8,
        memory_mb: int = 16384,
        disk_mb: int = 100_000,
        subnet: str = "10.99.0.0/16",
        images: Sequence[str] = ("debian-12",),
    ) -> None:
        super().__init__(
            namespace=f"shared:{path}",
            cpus=cpus,
            memory_mb=memory_mb,
            disk_mb=disk_mb,
            subnet=subnet,
            images=images,
        )
        self._path = Path(path)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._db() as db:
            db.execute(_SCHEMA)

    # -- the contract ---------------------------------------------------------------------

    def create(self, spec: InstanceSpec) -> Instance:
        self._maybe_fail("create")
        image = self.get_image(spec.image)
        if spec.volumes:
            raise NotSupported("the shared fake backend has no volumes")
        with self._db() as db:
            used = db.execute("SELECT coalesce(sum(ram_mb), 0) FROM instances").fetchone()[0]
            if used + (spec.ram_mb or 0) > self._memory_mb:
                raise CapacityExceeded(
                    f"the fake backend has {self._memory_mb - used} MiB of memory left"
                )
            try:
                db.execute(
                    "INSERT INTO instances (name, state, image, cpu, ram_mb, tags, created_at,"
                    " user_data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        spec.name,
                        InstanceState.RUNNING.value,
                        image.name,
                        spec.cpu,
                        spec.ram_mb,
                        json.dumps({k: v for k, v in spec.tags.items() if v}),
                        datetime.now(UTC).isoformat(),
                        spec.user_data or "",
                    ),
                )
            except sqlite3.IntegrityError:
                raise Conflict(
                    f"an instance called {spec.name!r} already exists on the fake backend"
                ) from None
        return self.get(spec.name)

    def destroy(self, name: str) -> None:
        self._maybe_fail("destroy")
        with self._db() as db:
            db.execute("DELETE FROM instances WHERE name = ?", (name,))

    def get(self, name: str) -> Instance:
        with self._db() as db:
            row = db.execute(_SELECT + " WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"the fake backend has no instance called {name!r}")
        return _with_addresses(self._instance_of(row))

    def list_instances(
        self,
        *,
        tags: Mapping[str, str] | None = None,
        has_tag: str | None = None,
        addresses: bool = True,
    ) -> list[Instance]:
        self._maybe_fail("list")
        with self._db() as db:
            rows = db.execute(_SELECT).fetchall()
        wanted = dict(tags or {})
        found = [self._instance_of(row) for row in rows]
        return [_with_addresses(i) if addresses else i for i in found if i.carries(wanted, has_tag)]

    def capacity(self) -> Capacity:
        self._maybe_fail("capacity")
        with self._db() as db:
            used = db.execute("SELECT coalesce(sum(ram_mb), 0) FROM instances").fetchone()[0]
        return Capacity(
            cpus=self._cpus,
            memory_total_mb=self._memory_mb,
            memory_free_mb=self._memory_mb - used,
            disk_total_mb=self._disk_mb,
            disk_free_mb=self._disk_mb,
        )

    # What the shared backend cannot do: the contract's own refusals (NotSupported).
    import_image = Connector.import_image
    export_image = Connector.export_image
    publish_image = Connector.publish_image
    delete_image = Connector.delete_image
    create_snapshot = Connector.create_snapshot
    list_snapshots = Connector.list_snapshots
    restore_snapshot = Connector.restore_snapshot
    delete_snapshot = Connector.delete_snapshot

    # -- ex_ methods ----------------------------------------------------------------------

    def ex_vanish(self, name: str) -> None:
        """The instance disappears behind the project's back (killed out of band)."""
        with self._db() as db:
            db.execute("DELETE FROM instances WHERE name = ?", (name,))

    # -- helpers --------------------------------------------------------------------------

    def _set_state(self, name: str, state: InstanceState) -> Instance:
        with self._db() as db:
            changed = db.execute(
                "UPDATE instances SET state = ? WHERE name = ?", (state.value, name)
            ).rowcount
        if not changed:
            raise NotFound(f"the fake backend has no instance called {name!r}")
        return self.get(name)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, in one transaction that takes the file's write lock at
        once: what it read still holds when it writes (two processes creating one name: one
        wins; memory checked and taken together)."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self._path, timeout=60, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _instance_of(self, row: tuple[Any, ...]) -> Instance:
        host, name, state, image, cpu, ram_mb, tags, created_at, user_data = row
        return Instance(
            name=name,
            state=InstanceState(state),
            image=image,
            cpu=cpu,
            ram_mb=ram_mb,
            tags=json.loads(tags),
            created_at=datetime.fromisoformat(created_at),
            extra={
                "address": str(self._network.network_address + 10 + host),
                "user_data": user_data,
                "ssh_keys": [],
            },
        )
