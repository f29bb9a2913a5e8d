"""Which baked images are stale, who uses them, and pruning the stale ones.

A baked image is stale when its digest is no longer the digest of its component's newest
version on its cloud: a recipe, a package or a parent changed, or the base image was rebuilt
(another fingerprint), or the component is gone. A stale image is never chosen again
(deployments look images up by the digest of what they deploy); it is still there for the
runs that started from it, and pruning leaves alone every image a run not over still names in
its plan.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from stratuslab.cloud.catalog import Owned
from stratuslab.db.models import RunRecord
from stratuslab.db.session import session_scope
from stratuslab.deploy.bake import Bakery, public
from stratuslab.deploy.states import FINAL
from stratuslab.errors import Forbidden, StratusError
from stratuslab.principal import Principal


def listing(
    bakery: Bakery, *, caller: Principal, cloud: str, everyone: bool = False
) -> list[dict[str, Any]]:
    """The baked images of the caller on ``cloud`` (an administrator's ``everyone``: all
    users'), newest first, each with ``stale`` (and why) and ``used_by`` (runs not over)."""
    if everyone and not caller.sees_all:
        raise Forbidden("only an administrator sees everyone's baked images")
    owner = None if everyone else (caller.user or "")
    found = bakery.catalog.owned(cloud=cloud, owner=owner, origin="bake")
    used = used_by(bakery, cloud)
    images: dict[str, dict[str, str]] = {}  # owner -> name -> fingerprint
    current: dict[tuple[str, str], str | StratusError] = {}  # (owner, component) -> digest
    rows = []
    for image in found:
        if image.owner not in images:
            images[image.owner] = bakery.images_of(bakery.instances_for(image.owner), cloud)
        key = (image.owner, str(image.details.get("component", "")))
        if key not in current:
            current[key] = _current(bakery, caller, cloud, key[1], images[image.owner])
        why = _stale(image, current[key], images[image.owner])
        rows.append(
            public(image)
            | {"stale": why is not None, "why": why or "", "used_by": used.get(image.alias, [])}
        )
    return rows


def prune(
    bakery: Bakery, *, caller: Principal, cloud: str, everyone: bool = False, dry_run: bool = False
) -> dict[str, Any]:
    """Delete the stale baked images (the caller's; an administrator's ``everyone``: all
    users') from the backend and the catalog, but those a run not over uses."""
    if everyone and not caller.sees_all:
        raise Forbidden("only an administrator prunes everyone's baked images")
    deleted, kept = [], []
    for row in listing(bakery, caller=caller, cloud=cloud, everyone=everyone):
        if not row["stale"]:
            continue
        if row["used_by"]:
            kept.append(row | {"why": f"used by run {', '.join(r[:8] for r in row['used_by'])}"})
            continue
        if not dry_run:
            bakery.instances_for(row["owner"]).delete_image(cloud, row["name"])
            bakery.catalog.forget(cloud=cloud, alias=row["name"])
        deleted.append(row)
    return {"dry_run": dry_run, "deleted": deleted, "kept": kept}


def used_by(bakery: Bakery, cloud: str) -> dict[str, list[str]]:
    """Baked image -> the runs not over whose plan starts a node of ``cloud`` from it."""
    found: dict[str, list[str]] = {}
    with session_scope(bakery.engine) as session:
        for run_id, plan in session.execute(
            select(RunRecord.id, RunRecord.plan).where(
                RunRecord.state.not_in([s.value for s in FINAL])
            )
        ):
            for node in (plan or {}).get("nodes", {}).values():
                baked = node.get("baked")
                if baked and node.get("cloud") == cloud:
                    found.setdefault(str(baked["image"]), []).append(run_id)
    return found


def _current(
    bakery: Bakery, caller: Principal, cloud: str, component: str, images: dict[str, str]
) -> str | StratusError:
    """The digest of ``component``'s newest version on ``cloud`` now, or why there is none."""
    try:
        plan = bakery.component_plan(component, cloud=cloud, caller=caller)
        (node,) = plan.nodes.values()
        return bakery.digest_of(node, images)
    except StratusError as exc:
        return exc


def _stale(image: Owned, current: str | StratusError, images: dict[str, str]) -> str | None:
    details = image.details
    if image.alias not in images:
        return "gone from the cloud"
    if isinstance(current, StratusError):
        return f"its component cannot be baked now: {current.message}"
    if current == details.get("digest"):
        return None
    base = str(details.get("base", ""))
    if images.get(base, details.get("base_fingerprint")) != details.get("base_fingerprint"):
        return f"its base image {base} was rebuilt"
    return f"{details.get('component')} changed (its digest is now {current[:16]})"
