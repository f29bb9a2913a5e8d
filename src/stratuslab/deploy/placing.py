"""Where a run's node instances go: each placed on the site's clouds (cloud/placement.py) when
the run is created or scaled up, before anything is recorded, and kept on its row
(``node_instances.cloud``, ``placement``: why), so that what the run reserves, what its
machines start from and what ``run show`` says all agree.

A node placed anywhere (no ``cloud:`` in its application, no baked image, no volumes) has each
instance on the first cloud, by priority, with room and an image its image module lists for
that cloud: past a cloud's cap its next instances burst to the next cloud. Any other node
stays on its cloud, which must be enabled and have room. A node instance no cloud takes
refuses the whole run (or scale-up), naming the node and each cloud's reason.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from stratuslab.cloud.placement import Ask, Placed

__all__ = ["Member", "Place", "Placed", "announced", "facts", "place"]
from stratuslab.deploy import events
from stratuslab.deploy.events import RunEvent
from stratuslab.deploy.plan import Plan
from stratuslab.errors import StratusError

# The instance service's placement for one owner: InstanceService.place.
Place = Callable[[str, Sequence[Ask]], list[Placed | StratusError]]


@dataclass(frozen=True)
class Member:
    node: str
    index: int

    @property
    def name(self) -> str:
        return f"{self.node}.{self.index}"


def place(
    placer: Place | None, owner: str, plan: Plan, members: Sequence[Member]
) -> dict[str, Placed]:
    """Each member's cloud, image and reason (by node instance name); raises the refusal of
    the first that no cloud takes, naming its node. Without ``placer`` every node instance
    stays on its node's cloud."""
    if placer is None:
        return {
            m.name: Placed(plan.nodes[m.node].cloud, plan.nodes[m.node].image, "pinned")
            for m in members
        }
    asks = []
    for member in members:
        spec = plan.nodes[member.node]
        asks.append(
            Ask(1, spec.images, on_site=True)  # its node calls the server back
            if spec.placed_anywhere
            else Ask(1, {spec.cloud: spec.image}, pinned=spec.cloud)
        )
    found: dict[str, Placed] = {}
    for member, outcome in zip(members, placer(owner, asks), strict=True):
        if isinstance(outcome, StratusError):
            refused = copy.copy(outcome)  # the same refusal may answer several asks
            refused.message = f"node {member.node}: {outcome.message}"
            raise refused
        found[member.name] = outcome
    return found


def facts(placed: dict[str, Placed]) -> dict[str, str]:
    """The runtime parameters that say where each node instance went (SlipStream's
    ``cloudservice``, and ``image.id``), by key."""
    found = {}
    for name, where in placed.items():
        found[f"{name}:cloudservice"] = where.cloud
        found[f"{name}:image.id"] = where.image
    return found


def announced(placed: dict[str, Placed]) -> list[RunEvent]:
    """One ``placed`` event per cloud and reason, naming its node instances in order."""
    groups: dict[tuple[str, str], list[str]] = {}
    for name, where in placed.items():
        groups.setdefault((where.cloud, where.reason), []).append(name)
    return [events.placed(cloud, reason, names) for (cloud, reason), names in groups.items()]
