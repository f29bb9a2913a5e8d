"""Snapshots of a user's instances: taken, listed, restored and deleted, owner-checked.

A snapshot lives with its instance on the backend and goes with it when the instance is
destroyed (LXD deletes them together), so the instance's tags are what keeps it tracked: the
store records none of its own. What the service adds to the connector's operations: the owner
check (another user's instance is one that does not exist, as everywhere), names that are safe
on every backend, a bound on how many an instance may hold, and names starting with
``stratus-`` kept for the server's own (the one a running instance is published through).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from stratuslab.cloud.base import Connector, Snapshot
from stratuslab.cloud.instances import InstanceService, InstanceView
from stratuslab.cloud.types import Capability, InstanceState
from stratuslab.errors import CapacityExceeded, Conflict, Invalid

MAX_SNAPSHOTS = 32  # the default of the setting max_snapshots
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
RESERVED = "stratus-"  # the server's own snapshots (connectors' publish_image)
_LOCKS = [threading.Lock() for _ in range(16)]  # one instance's count and take, one at a time


@dataclass(frozen=True)
class SnapshotView:
    """One snapshot of one instance, as users see it."""

    instance: str  # the instance's id
    name: str
    created_at: datetime | None
    stateful: bool
    size_bytes: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "name": self.name,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "stateful": self.stateful,
            "size_bytes": self.size_bytes,
        }


def check_name(name: str) -> str:
    """``name`` when it is a snapshot name users may give; ``Invalid`` otherwise."""
    if not _NAME.match(name):
        raise Invalid(
            f"snapshot name {name[:80]!r}: use up to 63 lowercase letters, digits, '.', '_' "
            "and '-', starting with a letter or digit"
        )
    if name.startswith(RESERVED):
        raise Invalid(f"snapshot name {name!r}: names starting with {RESERVED!r} are the server's")
    return name


def default_name(now: datetime | None = None) -> str:
    """A name from the time it is taken, in UTC: ``20250131-142501``."""
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%d-%H%M%S")


class Snapshots:
    """The snapshots of the instances ``instances`` reaches (its owner's, or every owner's
    for an administrator)."""

    def __init__(
        self,
        instances: InstanceService,
        connectors: Callable[[str], Connector],
        *,
        limit: int = MAX_SNAPSHOTS,
    ) -> None:
        self.instances = instances
        self._connector = connectors
        self.limit = limit

    def take(self, ref: str, name: str | None = None) -> SnapshotView:
        """Snapshot instance ``ref`` (running or stopped) as ``name`` (default: the time).

        Raises ``NotFound`` for an instance the caller does not reach, ``Conflict`` for one
        that is gone or pending or a name it has already, ``CapacityExceeded`` when it holds
        ``limit`` snapshots (nothing is taken then)."""
        name = check_name(name) if name is not None else default_name()
        view, connector = self._settled(ref)
        with _LOCKS[hash(view.id) % len(_LOCKS)]:
            held = self._theirs(connector.list_snapshots(view.name))
            if len(held) >= self.limit:
                raise CapacityExceeded(
                    f"instance {view.id} has {len(held)} snapshots, the most an instance may "
                    f"hold (setting max_snapshots: {self.limit})",
                    hint=f"delete one: stratus instance snapshot delete {view.id} {held[0].name}",
                )
            try:
                made = connector.create_snapshot(view.name, name)
            except Conflict as exc:
                raise Conflict(f"instance {view.id} has a snapshot called {name!r}") from exc
        return _view(view, made)

    def of(self, ref: str) -> list[SnapshotView]:
        """Instance ``ref``'s snapshots, oldest first (none for an instance that is gone:
        its snapshots went with it)."""
        view = self.instances.get(ref)
        if view.state == InstanceState.GONE.value:
            return []
        connector = self._connector(view.cloud)
        connector.require(Capability.SNAPSHOT)
        return [_view(view, s) for s in self._theirs(connector.list_snapshots(view.name))]

    def restore(self, ref: str, name: str) -> InstanceView:
        """Put instance ``ref`` back as it was at snapshot ``name``; the instance as it is
        after (a running one is restarted in place, a stopped one stays stopped)."""
        view, connector = self._settled(ref)
        connector.restore_snapshot(view.name, check_name(name))
        return self.instances.get(view.id)

    def delete(self, ref: str, name: str) -> None:
        """Delete snapshot ``name`` of instance ``ref``; deleting one that is gone succeeds."""
        view, connector = self._settled(ref)
        connector.delete_snapshot(view.name, check_name(name))

    def _settled(self, ref: str) -> tuple[InstanceView, Connector]:
        view = self.instances.get(ref)
        if view.state not in (InstanceState.RUNNING.value, InstanceState.STOPPED.value):
            raise Conflict(
                f"instance {view.id} is {view.state}: snapshots are of running or stopped instances"
            )
        connector = self._connector(view.cloud)
        connector.require(Capability.SNAPSHOT)
        return view, connector

    @staticmethod
    def _theirs(snapshots: list[Snapshot]) -> list[Snapshot]:
        return [s for s in snapshots if not s.name.startswith(RESERVED)]


def _view(view: InstanceView, snapshot: Snapshot) -> SnapshotView:
    return SnapshotView(
        instance=view.id,
        name=snapshot.name,
        created_at=snapshot.created_at,
        stateful=snapshot.stateful,
        size_bytes=snapshot.size_bytes,
    )
