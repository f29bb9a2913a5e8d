"""``stratus module check``: what the server does with a tree of modules, done on the files.

A push checks each module on its own (:func:`~stratuslab.deploy.model.parse_module`); a run
then resolves the application against the versions it uses (:func:`~stratuslab.deploy.plan.
resolve`). The check does both, with a lookup over the files :func:`~stratuslab.deploy.tree.
read_tree` read instead of the store, so that what it accepts a run accepts: parent cycles,
missing nodes and outputs, images missing for a node's cloud and required inputs left unmapped
are found here, before anything is pushed or provisioned.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from stratuslab.deploy.model import (
    ApplicationModule,
    ComponentModule,
    Module,
    ModuleText,
    address_of,
)
from stratuslab.deploy.plan import check_component, resolve
from stratuslab.deploy.tree import read_tree
from stratuslab.errors import Invalid, NotFound

_NOTHING: Mapping[str, str] = MappingProxyType({})
_LOCAL_VERSION = 1  # what the plan records for a file; the check keeps no plan


def check_tree(root: Path, target: str, *, given: Mapping[str, str] = _NOTHING) -> list[ModuleText]:
    """Read ``target`` and what it refers to under ``root`` and resolve it as a run would,
    with the deploy-time values ``given`` (``web:greeting``, ``ss:site``). Returns what was
    read, target first; raises :class:`Invalid` for the first problem."""
    tree = read_tree(root, target)
    modules = {text.path: module for text, module in tree}
    top = tree[0][1]

    def lookup(path: str, version: int | None) -> tuple[Module, int]:
        if version is not None:
            raise NotFound(
                f"no module {address_of(path, version)!r}",
                hint="a pinned version is a version on the server, which `stratus module "
                "check` does not ask; `stratus deploy` checks it there",
            )
        return modules[path], _LOCAL_VERSION  # read_tree read every unpinned reference

    if isinstance(top, ApplicationModule):
        resolve(top, _LOCAL_VERSION, lookup, given=given)
    elif given:
        raise Invalid(f"command line: --param is for an application; {top.path} is a {top.kind}")
    elif isinstance(top, ComponentModule):
        check_component(top, _LOCAL_VERSION, lookup)
    return [text for text, _ in tree]
