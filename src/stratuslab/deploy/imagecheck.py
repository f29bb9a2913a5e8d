"""A run's images, decided by the site's trust policy before the run is recorded.

Every node's image on its cloud is decided once (nodes that share one share the decision); the
first refused refuses the run with ``Untrusted``, naming its nodes and the rule. An image that
cannot be looked up now (not there, the cloud not answering) is left to provisioning, which
refuses each of its node instances as it did before there was a policy; the instance service
decides every image again when it starts a node instance's machine, so nothing unchecked
starts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from stratuslab.cloud.marketplace.policy import Decision, refusal_message
from stratuslab.errors import BackendError, NotFound, Untrusted

if TYPE_CHECKING:
    from stratuslab.deploy.plan import Plan

# (cloud, image name) -> the site's decision; NotFound or BackendError when it cannot be found.
DecideImage = Callable[[str, str], Decision]


def check_plan(plan: Plan, decide: DecideImage) -> None:
    """Raise ``Untrusted`` when the site's policy refuses the image of a node of ``plan``."""
    wanted: dict[tuple[str, str], list[str]] = {}
    for node in plan.nodes.values():
        wanted.setdefault((node.cloud, node.image), []).append(node.name)
    for (cloud, image), names in wanted.items():
        try:
            decision = decide(cloud, image)
        except (NotFound, BackendError):
            continue
        if not decision.allowed:
            label = "node" if len(names) == 1 else "nodes"
            raise Untrusted(
                f"{label} {', '.join(sorted(names))}: {refusal_message(image, cloud, decision)}"
            )
