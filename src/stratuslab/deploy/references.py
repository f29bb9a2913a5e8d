"""Module paths and references: how a module is named, and how one module names another.

A path is names joined by slashes (``examples/webapp/db``); a reference is a path, absolute or
relative to the referring module's directory, maybe ending in a version (``../shared/base/3``).
``docs/modules.md`` is the specification.
"""

from __future__ import annotations

import re
from pathlib import Path

from stratuslab.errors import Invalid

_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")  # a directory or file name in a path
_VERSION = re.compile(r"^[0-9]+$")


def module_path(root: Path, file: Path) -> str:
    """The path of the module in ``file``: ``examples/webapp/db.yaml`` is
    ``examples/webapp/db``, ``examples/webapp/module.yaml`` is ``examples/webapp``. A relative
    ``file`` is taken relative to ``root``."""
    if file.is_absolute():
        if not file.is_relative_to(root.absolute()):
            raise Invalid(f"{file} is not under {root.absolute()}")
        file = file.relative_to(root.absolute())
    shown = file.as_posix()
    if file.suffix != ".yaml":
        raise Invalid(f"{shown}: a module file ends in .yaml")
    parts = file.parent.parts if file.name == "module.yaml" else file.with_suffix("").parts
    if not parts:
        raise Invalid(f"{shown}: a module.yaml at the root has no path; put it in a directory")
    try:
        return check_path("/".join(parts))
    except Invalid as exc:
        raise Invalid(f"{shown}: {exc.message}") from None


def check_path(path: str) -> str:
    """``path`` if it can name a module: names joined by single slashes, none of them ``.`` or
    ``..``, the last not a number (``apps/3`` would read as version 3 of ``apps``)."""
    for part in path.split("/"):
        if not _SEGMENT.fullmatch(part):
            raise Invalid(f"{part!r} cannot be part of a module path (letters, digits, _ - .)")
    name = path.rpartition("/")[2]
    if _VERSION.fullmatch(name):
        raise Invalid(f"a module cannot be named {name!r}: it would read as a version")
    return path


def resolve_reference(ref: str, *, base: str) -> tuple[str, int | None]:
    """``db``, ``./db`` or ``../x/db`` relative to ``base``; ``a/b/c`` absolute; a trailing
    ``/N`` pins version N. Returns (absolute path, version or None)."""
    parts = ref.split("/")
    if "" in parts:
        raise Invalid(f"{ref!r} is not a module reference", hint="like db, ../shared/base or a/b/c")
    version = None
    if len(parts) > 1 and _VERSION.fullmatch(parts[-1]):
        version = int(parts.pop())
        if version < 1:
            raise Invalid(f"{ref!r}: versions are numbered from 1")
    # One name, or a start at . or .., is relative; a path of several names is absolute.
    relative = len(parts) == 1 or parts[0] in (".", "..")
    out = base.split("/") if relative and base else []
    for part in parts:
        if part == "..":
            if not out:
                raise Invalid(f"{ref!r} goes above the root (from {base or 'the root'})")
            out.pop()
        elif part != ".":
            if not _SEGMENT.fullmatch(part):
                raise Invalid(f"{ref!r}: {part!r} is not a module name")
            out.append(part)
    if not out:
        raise Invalid(f"{ref!r} refers to the root, which is not a module")
    if _VERSION.fullmatch(out[-1]):  # module_path refuses such names: they would read as versions
        raise Invalid(f"{ref!r}: {out[-1]!r} is not a module name")
    return "/".join(out), version


def address_of(path: str, version: int | None) -> str:
    return path if version is None else f"{path}/{version}"
