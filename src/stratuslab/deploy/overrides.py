"""What a run's start may change in its application's nodes: the cloud each node runs on and
how many of its instances may fail to be provisioned (SlipStream's start form fields
``parameter--node--<node>--cloudservice`` and ``--max-provisioning-failures``).

They are applied to the application before it is resolved, so that the plan (images per cloud,
quotas per cloud) sees the run as it will be; a cloud the site has not recorded is refused then,
rather than failing a provisioning later.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from sqlalchemy import select
from sqlalchemy.engine import Engine

from stratuslab.db.models import CloudRecord
from stratuslab.db.session import session_scope
from stratuslab.deploy.model import MAX_MULTIPLICITY, ApplicationModule
from stratuslab.errors import Invalid

MAX_CLOUD_NAME = 64


def apply(
    app: ApplicationModule,
    engine: Engine,
    *,
    clouds: Mapping[str, str],
    max_provisioning_failures: Mapping[str, int],
) -> ApplicationModule:
    """``app`` with the nodes' clouds and tolerated provisioning failures overridden."""
    if not clouds and not max_provisioning_failures:
        return app
    nodes = f"(nodes: {', '.join(sorted(app.nodes))})"
    for what, asked in (
        ("cloudservice", clouds),
        ("max-provisioning-failures", max_provisioning_failures),
    ):
        for node in asked:
            if node not in app.nodes:
                raise Invalid(f"command line: {node[:64]}:{what}: no node {node[:64]!r} {nodes}")
    for node, count in max_provisioning_failures.items():
        if not 0 <= count <= MAX_MULTIPLICITY:
            raise Invalid(
                f"command line: {node}:max-provisioning-failures: between 0 and "
                f"{MAX_MULTIPLICITY}, not {count}"
            )
    if clouds:
        known = cloud_names(engine)
        for node, cloud in clouds.items():
            if cloud not in known:
                raise Invalid(
                    f"command line: {node}:cloudservice: no cloud {cloud[:MAX_CLOUD_NAME]!r} "
                    "at this site",
                    hint=f"clouds here: {', '.join(sorted(known))}" if known else None,
                )
    changed = dict(app.nodes)
    for name in {*clouds, *max_provisioning_failures}:
        before = changed[name]
        changed[name] = replace(
            before,
            cloud=clouds.get(name, before.cloud),
            pinned=before.pinned or name in clouds,
            max_provisioning_failures=max_provisioning_failures.get(
                name, before.max_provisioning_failures
            ),
        )
    return replace(app, nodes=changed)


def cloud_names(engine: Engine) -> frozenset[str]:
    with session_scope(engine) as session:
        return frozenset(session.scalars(select(CloudRecord.name)))
