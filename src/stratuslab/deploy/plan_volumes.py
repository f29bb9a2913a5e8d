"""The volumes of a plan's nodes: a component's declarations merged along its parents, then
bound by the application's node (``deploy/volume_decls.py`` reads both from the files).

Each node of a plan carries the volumes its instances are created with, as
:class:`NodeVolume`: a *fresh* one is made by the run for each node instance and deleted at its
teardown; a *bound* one is a named volume that outlives the run, attached to the node's
instances (read-write to one instance only: one writer or many readers). Which volume a bound
reference names, and whether the run's owner may attach it, is decided when the run is created
(``deploy/run_volumes.py``), not here: the plan is resolved the same way on the files
(``stratus module check``) as on the server.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stratuslab.cloud.volume_values import DEFAULT_PATH, format_size
from stratuslab.deploy.kinds import ApplicationModule, ComponentModule, NodeDef, VolumeDef
from stratuslab.deploy.volume_decls import MAX_VOLUMES


@dataclass(frozen=True)
class Declared:
    """A component's volume once merged along its parents (every field but the size filled),
    and the module that last wrote it: where an error about it points."""

    volume: VolumeDef
    module: ComponentModule


@dataclass(frozen=True)
class NodeVolume:
    """A volume each instance of a node is created with, mounted at ``path``."""

    name: str  # the component's name for it
    path: str
    read_only: bool
    description: str = ""
    size_bytes: int | None = None  # what a fresh one is made with (None: bound, no size given)
    # None: fresh, made by the run for each node instance. Otherwise the volume bound, as the
    # application writes it ("pgdata", "alice/pgdata") until the run is created, then as
    # owner/name with its id: the run attaches that volume, whatever is renamed later.
    bound: str | None = None
    volume_id: str | None = None

    @property
    def fresh(self) -> bool:
        return self.bound is None

    def fresh_name(self, run_id: str, node: str, index: int) -> str:
        """The name of the fresh volume a run makes for one node instance."""
        return f"{run_id[:8]}-{node}-{index}-{self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "read_only": self.read_only,
            "description": self.description,
            "size_bytes": self.size_bytes,
            "bound": self.bound,
            "volume_id": self.volume_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NodeVolume:
        return cls(
            name=data["name"],
            path=data["path"],
            read_only=data["read_only"],
            description=data.get("description", ""),
            size_bytes=data.get("size_bytes"),
            bound=data.get("bound"),
            volume_id=data.get("volume_id"),
        )


def merge_volumes(chain: Sequence[ComponentModule]) -> dict[str, Declared]:
    """The volumes of a parent-first chain: a child may override any field of a parent's
    volume of the same name (its size, path, mode or description) and keeps the others. At
    most ``MAX_VOLUMES``; no two at the same path, nor one inside another's."""
    merged: dict[str, Declared] = {}
    for module in chain:
        for name, written in module.volumes.items():
            old = merged[name].volume if name in merged else VolumeDef(name)
            volume = VolumeDef(
                name,
                _first(written.size_bytes, old.size_bytes),
                _first(written.path, old.path),
                _first(written.read_only, old.read_only),
                _first(written.description, old.description),
            )
            merged[name] = Declared(volume, module)
        if len(merged) > MAX_VOLUMES:
            raise module.error(
                "volumes",
                f"{len(merged)} volumes with its parents': a component mounts at most "
                f"{MAX_VOLUMES}",
            )
    filled = {
        name: Declared(
            VolumeDef(
                name,
                d.volume.size_bytes,
                d.volume.path or DEFAULT_PATH.format(name=name),
                bool(d.volume.read_only),
                d.volume.description or "",
            ),
            d.module,
        )
        for name, d in merged.items()
    }
    _check_paths(filled)
    return filled


def bind(
    app: ApplicationModule,
    node: NodeDef,
    component: str,
    declared: Mapping[str, Declared],
    multiplicity: int,
) -> tuple[NodeVolume, ...]:
    """The volumes of ``node``'s instances: each of its component's volumes, bound as the
    node says or fresh. Errors point at the node (or the component) with file and line."""
    where = f"nodes.{node.name}"
    bindings = dict(node.volumes)
    names = ", ".join(declared) or "none"
    if "" in bindings:  # volume: NAME, for a component with one volume
        if len(declared) != 1:
            raise app.error(
                f"{where}.volume",
                f"{component} mounts {len(declared)} volumes ({names}): volume: binds a "
                "component's only volume",
                hint="bind them by name: volumes: {NAME: VOLUME}" if declared else None,
            )
        bindings = {next(iter(declared)): bindings.pop("")}
    for name in bindings:
        if name not in declared:
            raise app.error(
                f"{where}.volumes.{name}", f"{name!r} is not a volume of {component} ({names})"
            )
    found = []
    for name, entry in declared.items():
        volume, binding = entry.volume, bindings.get(name)
        declared_ro = bool(volume.read_only)
        if binding is None:
            if declared_ro:
                raise app.error(
                    where,
                    f"volume {name!r} of {component} is mounted read-only: bind it to a volume "
                    "that holds its data (a volume the run makes would be empty)",
                    hint=f"volumes: {{{name}: OWNER/NAME}}",
                )
            if volume.size_bytes is None:
                raise app.error(
                    where,
                    f"volume {name!r} of {component} has no size, and the node does not bind "
                    "it: the run would make one for each instance",
                    hint=f"give it a size in {entry.module.file} (size: 2GiB), or bind it "
                    f"(volumes: {{{name}: NAME}})",
                )
            found.append(
                NodeVolume(name, volume.path or "", False, volume.description or "",
                           volume.size_bytes)
            )  # fmt: skip
            continue
        key = f"{where}.volume" if "" in node.volumes else f"{where}.volumes.{name}"
        if binding.read_only is False and declared_ro:
            raise app.error(
                f"{key}.read_only" if f"{key}.read_only" in app.lines else key,
                f"{component} mounts {name!r} read-only: it cannot be bound read-write",
            )
        read_only = declared_ro or bool(binding.read_only)
        if not read_only and multiplicity > 1:
            raise app.error(
                key,
                f"{binding.volume} is bound read-write, and a volume attached read-write goes "
                f"to one instance: this node has {multiplicity}",
                hint="bind it with read_only: true, or leave it unbound: the run then makes a "
                "fresh volume for each instance",
            )
        found.append(
            NodeVolume(name, volume.path or "", read_only, volume.description or "",
                       volume.size_bytes, binding.volume)
        )  # fmt: skip
    return tuple(found)


def writable_bound(volumes: Sequence[NodeVolume]) -> NodeVolume | None:
    """The first volume bound read-write, which allows a node one instance only."""
    return next((v for v in volumes if not v.fresh and not v.read_only), None)


def describe(volume: NodeVolume) -> str:
    """``data: alice/pgdata at /var/lib/postgresql (read-write)``, for messages and listings."""
    mode = "read-only" if volume.read_only else "read-write"
    what = volume.bound if volume.bound else f"fresh, {format_size(volume.size_bytes or 0)}"
    return f"{volume.name}: {what} at {volume.path} ({mode})"


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _check_paths(declared: Mapping[str, Declared]) -> None:
    seen: dict[str, str] = {}
    for name, entry in declared.items():
        path = entry.volume.path or ""
        for other, taken in seen.items():
            if path == taken or _inside(path, taken) or _inside(taken, path):
                key = f"volumes.{name}.path"
                written = key if key in entry.module.lines else f"volumes.{name}"
                how = "is" if path == taken else "overlaps"
                raise entry.module.error(
                    written,
                    f"{path} {how} the mount path of volume {other!r} ({taken}): each volume "
                    "is mounted at a path of its own, neither inside another",
                )
        seen[name] = path


def _inside(path: str, parent: str) -> bool:
    return posixpath.commonpath([path, parent]) == parent
