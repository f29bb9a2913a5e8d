"""What the instance service tells about the changes it makes.

The service calls its sink once per change it makes (through a user, the deployment engine or
reconciliation), after the change is committed, with the instance as it now is and what
happened as one word. The server's sink publishes on the hub, where
``GET /api/instances/watch`` waits for it.
"""

from __future__ import annotations

from collections.abc import Callable

from stratuslab.cloud.records import InstanceView
from stratuslab.hub import Hub

Event = Callable[[InstanceView, str], None]  # (the instance now, what happened)

RECORDED = "recorded"  # checked and recorded as pending; the backend is not asked yet
CREATED = "created"  # the backend has created it; it has no address yet
RUNNING = "running"  # created and reachable: it has its address
FAILED = "failed"  # its creation failed: destroyed, and recorded gone with the reason
STOPPED = "stopped"
STARTED = "started"  # running again, with its address
GONE = "gone"  # destroyed by the project (a kill, a run's sweep)
VANISHED = "vanished"  # gone behind the project's back, or never created after a crash
RECOVERED = "recovered"  # found on the backend by its tags, unknown to the store: adopted
REAPPEARED = "reappeared"  # recorded as gone, but the backend still has it
CHANGED = "changed"  # its state or addresses changed on the backend


def topic(instance_id: str) -> str:
    """The hub topic of one instance's changes."""
    return f"instance:{instance_id}"


def publisher(hub: Hub) -> Event:
    """A sink that publishes each change on ``instance:<id>`` as ``{"what", "instance"}``,
    the instance as :meth:`InstanceView.to_dict` gives it: what the watch stream sends."""

    def publish(view: InstanceView, what: str) -> None:
        hub.publish(topic(view.id), {"what": what, "instance": view.to_dict()})

    return publish
