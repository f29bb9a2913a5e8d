"""A run's machines as the backends have them, for the deployment engine's supervision.

Machines are found by their tags alone (``run`` and ``node-instance``), not by the store: the
question is what exists now, whatever was recorded.
"""

from __future__ import annotations

from collections.abc import Iterable

from stratuslab.cloud.base import Instance
from stratuslab.cloud.types import InstanceState

# When two machines carry the same run and node instance (for a moment, while a crashed
# creation is replaced), the one furthest along is the node instance's machine.
_ALIVE = {
    InstanceState.RUNNING: 5,
    InstanceState.PENDING: 4,
    InstanceState.UNKNOWN: 3,
    InstanceState.STOPPED: 2,
    InstanceState.ERROR: 1,
    InstanceState.GONE: 0,
}


def by_run(instances: Iterable[Instance]) -> dict[str, dict[str, InstanceState]]:
    """Run id -> node instance -> the state of its machine, for every instance tagged with
    both; of two machines of one node instance, the state of the one furthest along."""
    found: dict[str, dict[str, InstanceState]] = {}
    for instance in instances:
        run, node = instance.tags.get("run"), instance.tags.get("node-instance")
        if run is None or node is None:
            continue
        machines = found.setdefault(run, {})
        known = machines.get(node)
        if known is None or _ALIVE[instance.state] > _ALIVE[known]:
            machines[node] = instance.state
    return found
