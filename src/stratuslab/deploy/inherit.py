"""A component merged with its parents: what a node of it runs.

:class:`Resolver` fetches modules through a lookup, once each, recording the version of each
(a run uses one version of every module), and follows a component's chain of parents to the
image at its root; :func:`merge` merges the chain parent first: parameters by name, recipes
and packages in order, volumes by name (``deploy/plan_volumes.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from stratuslab.deploy.kinds import (
    ApplicationModule,
    ComponentModule,
    ImageModule,
    Lookup,
    Module,
    NodeDef,
    ParameterDef,
)
from stratuslab.deploy.model import SCRIPT_STEPS
from stratuslab.deploy.plan_volumes import Declared, merge_volumes
from stratuslab.deploy.references import address_of, resolve_reference
from stratuslab.errors import Invalid, NotFound


@dataclass(frozen=True)
class Inherited:
    """A component with everything it inherits, parent first."""

    path: str
    version: int
    image: ImageModule
    image_path: str
    inputs: dict[str, ParameterDef]
    outputs: dict[str, ParameterDef]
    recipes: dict[str, tuple[tuple[str, str], ...]]
    packages: tuple[str, ...]
    volumes: dict[str, Declared]  # the component's volumes, by name


class Resolver:
    """Fetches modules through the lookup, once each, and records the version of each."""

    def __init__(self, top: Module, version: int, lookup: Lookup) -> None:
        self.lookup = lookup
        self.modules: dict[str, int] = {top.path: version}
        self.fetched: dict[tuple[str, int | None], tuple[Module, int]] = {}
        self.inherited: dict[tuple[str, int], Inherited] = {}

    def fetch(self, referrer: Module, key: str, ref: str) -> tuple[str, Module, int]:
        try:
            path, pinned = resolve_reference(ref, base=referrer.base)
        except Invalid as exc:
            raise referrer.error(key, exc.message, hint=exc.hint) from None
        if (path, pinned) not in self.fetched:
            try:
                self.fetched[path, pinned] = self.lookup(path, pinned)
            except NotFound as exc:
                raise referrer.error(
                    key, f"no module {address_of(path, pinned)!r}", hint=exc.hint
                ) from None
        module, version = self.fetched[path, pinned]
        # Plan.modules holds one version per path, and recipes name modules by path alone.
        used = self.modules.setdefault(path, version)
        if used != version:
            raise referrer.error(
                key,
                f"uses {path}/{version}, but this application also uses {path}/{used}",
                hint="a run uses one version of each module: pin the same version everywhere",
            )
        return path, module, version

    def component(self, app: ApplicationModule, node: NodeDef) -> Inherited:
        key = f"nodes.{node.name}.component"
        path, module, version = self.fetch(app, key, node.component)
        if not isinstance(module, ComponentModule):
            raise app.error(key, f"{path} is {a(module)}, not a component")
        return self.inherit(path, version, module)

    def inherit(self, path: str, version: int, module: ComponentModule) -> Inherited:
        """``module`` merged with its parents. The chain is followed in a loop, never by
        recursion, and a parent already on it is refused as a cycle: the server runs this on
        whatever was pushed."""
        if (path, version) in self.inherited:
            return self.inherited[path, version]
        chain = [(path, module)]
        on_chain = {path}  # a set, so that a chain of thousands costs thousands of steps
        while True:
            child = chain[-1][1]
            parent_path, parent, _ = self.fetch(child, "parent", child.parent)
            if parent_path in on_chain:
                cycle = " -> ".join([seen for seen, _ in chain] + [parent_path])
                raise child.error("parent", f"a cycle of parents: {cycle}")
            if isinstance(parent, ImageModule):
                merged = merge(path, version, chain[::-1], parent, parent_path)
                self.inherited[path, version] = merged
                return merged
            if not isinstance(parent, ComponentModule):
                raise child.error(
                    "parent",
                    f"{parent_path} is {a(parent)}; a parent is an image or a component",
                )
            chain.append((parent_path, parent))
            on_chain.add(parent_path)


def merge(
    path: str,
    version: int,
    chain: list[tuple[str, ComponentModule]],
    image: ImageModule,
    image_path: str,
) -> Inherited:
    """Merge a parent-first chain: parameters by name, recipes and packages in order, volumes
    by name (``deploy/plan_volumes.py``)."""
    inputs: dict[str, ParameterDef] = {}
    outputs: dict[str, ParameterDef] = {}
    owner: dict[str, str] = {}
    recipes: dict[str, list[tuple[str, str]]] = {step: [] for step in SCRIPT_STEPS}
    packages: list[str] = []
    for module_path_, module in chain:
        for parameter in module.inputs.values():
            add(module, "inputs", parameter, inputs, outputs, owner)
        for parameter in module.outputs.values():
            add(module, "outputs", parameter, outputs, inputs, owner)
        for step, script in module.recipes.items():
            recipes[step].append((module_path_, script))
        packages.extend(p for p in dict.fromkeys(module.packages) if p not in packages)
    frozen = {step: tuple(scripts) for step, scripts in recipes.items()}
    volumes = merge_volumes([module for _, module in chain])
    return Inherited(
        path, version, image, image_path, inputs, outputs, frozen, tuple(packages), volumes
    )


def add(
    module: ComponentModule,
    section: str,
    parameter: ParameterDef,
    same: dict[str, ParameterDef],
    other: dict[str, ParameterDef],
    owner: dict[str, str],
) -> None:
    name = parameter.name
    if name in other:
        was = "an output" if section == "inputs" else "an input"
        raise module.error(
            f"{section}.{name}",
            f"{name!r} is {was} of {owner[name]}; a parameter is either an input or an output",
        )
    old = same.get(name)
    if old is not None:  # a child may redescribe an inherited parameter or change its default
        default = old.default if parameter.default is None else parameter.default
        # A child may make an inherited parameter a password, never a password plain text.
        kind = "password" if old.secret else parameter.type
        parameter = ParameterDef(name, parameter.description or old.description, default, kind)
    same[name] = parameter
    owner.setdefault(name, module.path)


def a(module: Module) -> str:
    return f"{'an' if module.kind[0] in 'aeiou' else 'a'} {module.kind}"
