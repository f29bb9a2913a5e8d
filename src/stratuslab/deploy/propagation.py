"""Where a runtime parameter's value goes when it is set: the application's mappings, turned
around. Kept apart from ``params`` so that the run control can use it without a cycle."""

from __future__ import annotations

from stratuslab.deploy.plan import Plan


def propagation(plan: Plan) -> dict[str, list[tuple[str, str]]]:
    """Source key -> [(target node, target input)]: where a value goes when the source is set."""
    targets: dict[str, list[tuple[str, str]]] = {}
    for node, spec in plan.nodes.items():
        for name, source in spec.mappings.items():
            key = source.key()
            if key is not None:
                targets.setdefault(key, []).append((node, name))
    return targets
