"""Volumes in module files: what a component mounts, and what an application's node binds.

A component declares the volumes it mounts, each under a name of its own::

    volumes:
      data:
        size: 2GiB                    # what a run makes for each node instance
        path: /var/lib/postgresql     # default /mnt/<name>
        read_only: false              # default false
        description: the cluster's files

An application's node may bind them to named, persistent volumes (a bare name is the run
owner's own; ``owner/name`` anybody's they may reach), or leave them to the run, which makes a
fresh one for each node instance and deletes it at teardown::

    nodes:
      db:
        component: db
        volume: pgdata                # the short form, for a component with one volume
      reader:
        component: reader
        volumes:
          data: pgdata                # by the component's volume name
          refs: {volume: ada/genomes, read_only: true}

This module reads one file's declarations (types, names, sizes, paths: each error is
``<file>:<line>: <key path>: <what>``); ``deploy/plan_volumes.py`` merges them along a
component's parents and checks the bindings against them.
"""

from __future__ import annotations

from typing import Any

from stratuslab.cloud import volume_values
from stratuslab.deploy.kinds import VolumeBinding, VolumeDef
from stratuslab.deploy.yamlsource import Document, describe, join
from stratuslab.errors import Invalid

MAX_VOLUMES = 16  # a component mounts at most this many, its parents' included
# A fresh volume is named <run id, 8 characters>-<node>-<index>-<volume>, a volume name of at
# most 63 characters: with a node name of at most 20 and an index of at most 5 digits, the
# volume's own name has 26 left; 20 keeps it a short word.
MAX_VOLUME_NAME = 20
MAX_DESCRIPTION = 1000  # characters, as the volume service takes (cloud/volumes.py)
_DECLARED = ("size", "path", "read_only", "description")
_BOUND = ("volume", "read_only")
_RENAMED = {"read-only": "read_only", "readonly": "read_only", "mount": "path"}
_BIND_HINT = "volumes: {data: pgdata} or volumes: {data: {volume: alice/pgdata, read_only: true}}"


def component_volumes(doc: Document, value: Any) -> dict[str, VolumeDef]:
    """A component's ``volumes:``, each field as written (None where it is not)."""
    volumes = doc.mapping("volumes", value)
    if len(volumes) > MAX_VOLUMES:
        raise doc.error(
            "volumes", f"{len(volumes)} volumes: a component mounts at most {MAX_VOLUMES}"
        )
    found: dict[str, VolumeDef] = {}
    for name, spec in volumes.items():
        where = join("volumes", name)
        _check_name(doc, where, name)
        spec = doc.mapping(where, spec)
        doc.check_keys(where, spec, _DECLARED, "a volume", renamed=_RENAMED)
        found[name] = VolumeDef(
            name,
            size_bytes=_size(doc, join(where, "size"), spec["size"]) if "size" in spec else None,
            path=_path(doc, join(where, "path"), spec["path"]) if "path" in spec else None,
            read_only=_flag(doc, join(where, "read_only"), spec["read_only"])
            if "read_only" in spec
            else None,
            description=_description(doc, join(where, "description"), spec.get("description")),
        )
    return found


def node_volumes(doc: Document, node: str, spec: dict[str, Any]) -> dict[str, VolumeBinding]:
    """A node's bindings: ``volumes:`` by the component's volume names, or ``volume:`` (the
    short form, kept under the name "")."""
    path = join("nodes", node)
    if "volume" in spec and "volumes" in spec:
        raise doc.error(
            join(path, "volume"),
            "give either volume: (the component's only volume) or volumes: (by name), not both",
        )
    if "volume" in spec:
        where = join(path, "volume")
        value = spec["volume"]
        if not isinstance(value, str):
            raise doc.error(
                where,
                f"must be a volume's name (pgdata or alice/pgdata), not {describe(value)}",
                hint=f"to say more, bind it by name: {_BIND_HINT}",
            )
        return {"": VolumeBinding(_ref(doc, where, value))}
    bindings: dict[str, VolumeBinding] = {}
    for name, value in doc.mapping(join(path, "volumes"), spec.get("volumes")).items():
        where = join(path, f"volumes.{name}")
        _check_name(doc, where, name)
        if isinstance(value, str):
            bindings[name] = VolumeBinding(_ref(doc, where, value))
            continue
        if not isinstance(value, dict):
            raise doc.error(
                where,
                f"must be a volume's name or a mapping, not {describe(value)}",
                hint=_BIND_HINT,
            )
        doc.check_keys(where, value, _BOUND, "a volume's binding", renamed=_RENAMED)
        if "volume" not in value:
            raise doc.error(
                join(where, "volume"),
                "missing: the volume to bind (a volume the run makes needs no binding)",
                hint=_BIND_HINT,
            )
        read_only = None
        if "read_only" in value:
            read_only = _flag(doc, join(where, "read_only"), value["read_only"])
        bindings[name] = VolumeBinding(_ref(doc, join(where, "volume"), value["volume"]), read_only)
    return bindings


def _check_name(doc: Document, where: str, name: str) -> None:
    try:
        volume_values.check_name(name)
    except Invalid as exc:
        raise doc.error(where, exc.message) from None
    if len(name) > MAX_VOLUME_NAME:
        raise doc.error(
            where,
            f"{name!r}: a component's volume name is at most {MAX_VOLUME_NAME} characters",
            hint="it is part of the name of each volume a run makes for it",
        )


def _ref(doc: Document, where: str, value: Any) -> str:
    text = doc.text(where, value, empty=False)
    try:
        return str(volume_values.parse_ref(text))
    except Invalid as exc:
        raise doc.error(where, exc.message) from None


def _size(doc: Document, where: str, value: Any) -> int:
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise doc.error(where, f"must be a size such as 2GiB, not {describe(value)}")
    try:
        return volume_values.parse_size(value)
    except Invalid as exc:
        raise doc.error(where, exc.message) from None


def _path(doc: Document, where: str, value: Any) -> str:
    text = doc.text(where, value, empty=False)
    try:
        return volume_values.check_path(text)
    except Invalid as exc:
        raise doc.error(where, exc.message) from None


def _description(doc: Document, where: str, value: Any) -> str | None:
    if value is None:
        return None
    text = doc.text(where, value)
    if len(text) > MAX_DESCRIPTION:
        raise doc.error(where, f"is longer than {MAX_DESCRIPTION} characters")
    return text


def _flag(doc: Document, where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise doc.error(where, f"must be true or false, not {describe(value)}")
    return value
