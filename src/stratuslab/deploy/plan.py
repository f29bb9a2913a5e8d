"""The plan of a run: an application resolved against the modules it uses.

:func:`resolve` checks what spans modules (components and parents, images per cloud, parameter
mappings, required inputs, deploy-time values) against whatever versions a lookup finds, and
merges each node's component chain into a :class:`NodePlan`. A run keeps its plan as JSON, so
that what it deploys never changes under it. ``docs/modules.md`` is the specification.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from stratuslab.deploy import plan_volumes
from stratuslab.deploy.inherit import Inherited, Resolver
from stratuslab.deploy.model import (
    MAX_MULTIPLICITY,
    MAX_VALUE,
    PARAMETER_NAME,
    STANDARD_PARAMETERS,
    ApplicationModule,
    ComponentModule,
    Lookup,
    NodeDef,
    ParameterDef,
    ParamSource,
)
from stratuslab.deploy.plan_volumes import NodeVolume
from stratuslab.errors import Invalid


@dataclass(frozen=True)
class NodePlan:
    """One node of a run, with everything its component inherits already merged in."""

    name: str
    component: str  # absolute path
    component_version: int
    multiplicity: int
    cloud: str
    max_provisioning_failures: int
    image: str  # image name on the node's cloud
    inputs: Mapping[str, ParameterDef]  # merged along the parent chain, child overrides default
    outputs: Mapping[str, ParameterDef]  # merged along the parent chain
    # step -> ((module path, script), ...), parent first; every script step, maybe empty
    recipes: Mapping[str, tuple[tuple[str, str], ...]]
    packages: tuple[str, ...]  # parent first, no duplicates
    mappings: Mapping[str, ParamSource]  # input name -> source
    # The baked image the node starts from, chosen when the run was created (deploy/bake.py):
    # image, digest, pristine (the image it was baked from) and skipped (the steps in it).
    baked: Mapping[str, Any] | None = None
    # The volumes each instance is created with (deploy/plan_volumes.py), in the order the
    # component declares them.
    volumes: tuple[NodeVolume, ...] = ()
    # The image on every cloud its image module lists (cloud -> image), and whether the node
    # stays on ``cloud`` (the application or the run's start names it) or each instance is
    # placed on the site's clouds (``cloud`` is then only the default). Plans recorded before
    # placement stay where they were.
    images: Mapping[str, str] = field(default_factory=dict)
    pinned: bool = True

    @property
    def placed_anywhere(self) -> bool:
        """Whether each instance may go to any cloud that has its image: not when the node
        is pinned, starts from a baked image (made on one cloud) or mounts volumes (which
        live on one cloud)."""
        return not self.pinned and self.baked is None and not self.volumes

    def image_on(self, cloud: str) -> str:
        """The image an instance starts from on ``cloud``."""
        if cloud == self.cloud:
            return self.image
        return self.images.get(cloud, self.image)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe form; recipes take the shape the agent's plan has."""
        return {
            "name": self.name,
            "component": self.component,
            "component_version": self.component_version,
            "multiplicity": self.multiplicity,
            "cloud": self.cloud,
            "max_provisioning_failures": self.max_provisioning_failures,
            "image": self.image,
            "inputs": {
                n: {"description": p.description, "default": p.default, "type": p.type}
                for n, p in self.inputs.items()
            },
            "outputs": {
                n: {"description": p.description, "type": p.type} for n, p in self.outputs.items()
            },
            "recipes": {
                step: [{"module": module, "script": script} for module, script in scripts]
                for step, scripts in self.recipes.items()
            },
            "packages": list(self.packages),
            "mappings": {
                n: {"kind": s.kind, "node": s.node, "name": s.name, "value": s.value}
                for n, s in self.mappings.items()
            },
            "baked": dict(self.baked) if self.baked is not None else None,
            "volumes": [volume.to_dict() for volume in self.volumes],
            "images": dict(self.images),
            "pinned": self.pinned,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NodePlan:
        return cls(
            name=data["name"],
            component=data["component"],
            component_version=data["component_version"],
            multiplicity=data["multiplicity"],
            cloud=data["cloud"],
            max_provisioning_failures=data["max_provisioning_failures"],
            image=data["image"],
            # Plans recorded before parameters had a type hold text only.
            inputs={
                n: ParameterDef(n, p["description"], p.get("default"), p.get("type", "string"))
                for n, p in data["inputs"].items()
            },
            outputs={
                n: ParameterDef(n, p["description"], None, p.get("type", "string"))
                for n, p in data["outputs"].items()
            },
            recipes={
                step: tuple((r["module"], r["script"]) for r in scripts)
                for step, scripts in data["recipes"].items()
            },
            packages=tuple(data["packages"]),
            mappings={
                n: ParamSource(s["kind"], s.get("node"), s.get("name"), s.get("value"))
                for n, s in data["mappings"].items()
            },
            baked=data.get("baked"),  # plans recorded before baking have none
            volumes=tuple(NodeVolume.from_dict(v) for v in data.get("volumes", ())),
            images=data["images"] if "images" in data else {data["cloud"]: data["image"]},
            pinned=data.get("pinned", True),
        )


@dataclass(frozen=True)
class Plan:
    """What a run deploys: every node, resolved against the module versions it records."""

    application: str
    application_version: int
    nodes: Mapping[str, NodePlan]
    modules: Mapping[str, int]  # every module used -> version used

    def to_dict(self) -> dict[str, Any]:
        return {
            "application": self.application,
            "application_version": self.application_version,
            "nodes": {name: node.to_dict() for name, node in self.nodes.items()},
            "modules": dict(self.modules),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        return cls(
            application=data["application"],
            application_version=data["application_version"],
            nodes={name: NodePlan.from_dict(node) for name, node in data["nodes"].items()},
            modules=dict(data["modules"]),
        )


_NOTHING: Mapping[str, Any] = MappingProxyType({})


def resolve(
    app: ApplicationModule,
    version: int,
    lookup: Lookup,
    *,
    given: Mapping[str, str] = _NOTHING,
    multiplicities: Mapping[str, int] = _NOTHING,
) -> Plan:
    """Check what spans modules and merge each node's parent chain into a :class:`Plan`.

    ``given`` holds deploy-time values (``web:greeting``, ``ss:site``) and ``multiplicities``
    overrides per node; both are only checked here, the plan does not carry ``given``. Errors
    point at the referring file, line and key, or at ``command line``.
    """
    resolver = Resolver(app, version, lookup)
    components = {name: resolver.component(app, node) for name, node in app.nodes.items()}
    homes = {name: _home(node, components[name]) for name, node in app.nodes.items()}
    images = {
        name: _image(app, replace(node, cloud=homes[name]), components[name])
        for name, node in app.nodes.items()
    }
    for node in app.nodes.values():
        _check_mappings(app, node, components)
    _check_command_line(app, components, given, multiplicities)
    for node in app.nodes.values():
        _check_required(app, node, components[node.name], given)
    nodes = {
        name: NodePlan(
            name,
            components[name].path,
            components[name].version,
            multiplicities.get(name, node.multiplicity),
            homes[name],
            node.max_provisioning_failures,
            images[name],
            dict(components[name].inputs),
            dict(components[name].outputs),
            dict(components[name].recipes),
            components[name].packages,
            dict(node.parameters),
            volumes=plan_volumes.bind(
                app,
                node,
                components[name].path,
                components[name].volumes,
                multiplicities.get(name, node.multiplicity),
            ),
            images=dict(components[name].image.images),
            pinned=node.pinned,
        )
        for name, node in app.nodes.items()
    }
    return Plan(app.path, version, nodes, dict(resolver.modules))


def _home(node: NodeDef, inherited: Inherited) -> str:
    """The cloud a node is planned on: the one it names; for one the site places, its default
    cloud when its image module lists an image there, else the first listed by name."""
    listed = inherited.image.images
    if node.pinned or node.cloud in listed or not listed:
        return node.cloud
    return sorted(listed)[0]


def component_node(
    component: ComponentModule, version: int, lookup: Lookup, *, cloud: str, name: str
) -> Plan:
    """A plan of ``component`` alone, merged with its parents as one node ``name`` of
    ``cloud`` would run it: no mappings, multiplicity 1, no volumes (what a bake starts,
    deploy/bake.py: a baked image holds the root disk, never what a volume holds)."""
    resolver = Resolver(component, version, lookup)
    merged = resolver.inherit(component.path, version, component)
    image = merged.image.images.get(cloud)
    if image is None:
        raise Invalid(
            f"no image for cloud {cloud!r} at the root of {merged.path}'s parents "
            f"({merged.image_path} has: {', '.join(sorted(merged.image.images))})"
        )
    node = NodePlan(
        name, merged.path, version, 1, cloud, 0, image, dict(merged.inputs),
        dict(merged.outputs), dict(merged.recipes), merged.packages, {},
    )  # fmt: skip
    return Plan(component.path, version, {name: node}, dict(resolver.modules))


def check_component(component: ComponentModule, version: int, lookup: Lookup) -> None:
    """Check what ``component`` inherits as :func:`resolve` does for a node's component:
    parents that exist and are images or components, no cycle, an input never an output.
    Which cloud it runs on, and so which image it needs, only an application says."""
    Resolver(component, version, lookup).inherit(component.path, version, component)


def _image(app: ApplicationModule, node: NodeDef, inherited: Inherited) -> str:
    image = inherited.image.images.get(node.cloud)
    if image is None:
        key = f"nodes.{node.name}.cloud"
        raise app.error(
            key if key in app.lines else f"nodes.{node.name}",
            f"no image for cloud {node.cloud!r} at the root of {inherited.path}'s parents "
            f"({inherited.image_path} has: {', '.join(sorted(inherited.image.images))})",
        )
    return image


def _check_mappings(
    app: ApplicationModule, node: NodeDef, components: Mapping[str, Inherited]
) -> None:
    mine = components[node.name]
    for target, source in node.parameters.items():
        key = f"nodes.{node.name}.parameters.{target}"
        if target not in mine.inputs:
            raise app.error(
                key,
                f"{target!r} is not an input of {mine.path} ({_known('inputs', mine.inputs)})",
            )
        if source.kind != "parameter":
            continue
        if source.node not in app.nodes:
            raise app.error(
                key,
                f"node {source.node!r} does not exist (nodes: {', '.join(sorted(app.nodes))})",
            )
        theirs = components[source.node or ""]
        if source.name not in theirs.outputs and source.name not in STANDARD_PARAMETERS:
            raise app.error(
                key,
                f"{source.name!r} is neither an output of {theirs.path} "
                f"({_known('outputs', theirs.outputs)}) nor a parameter every instance has",
                hint=f"every instance has: {', '.join(STANDARD_PARAMETERS)}",
            )


def _check_command_line(
    app: ApplicationModule,
    components: Mapping[str, Inherited],
    given: Mapping[str, str],
    multiplicities: Mapping[str, int],
) -> None:
    nodes = f"(nodes: {', '.join(sorted(app.nodes))})"
    for key, value in given.items():
        node, colon, name = key.partition(":")
        if not colon or not PARAMETER_NAME.fullmatch(name):
            raise Invalid(f"command line: {key}: not node:input or ss:name")
        if node != "ss" and node not in app.nodes:
            raise Invalid(f"command line: {key}: node {node!r} does not exist {nodes}")
        if node != "ss" and name not in components[node].inputs:
            mine = components[node]
            raise Invalid(
                f"command line: {key}: {name!r} is not an input of {mine.path} "
                f"({_known('inputs', mine.inputs)})"
            )
        if len(value) > MAX_VALUE:
            raise Invalid(f"command line: {key}: the value is longer than {MAX_VALUE} characters")
    for node, count in multiplicities.items():
        if node not in app.nodes:
            raise Invalid(
                f"command line: {node}:multiplicity: node {node!r} does not exist {nodes}"
            )
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise Invalid(f"command line: {node}:multiplicity: must be 0 or more, not {count!r}")
        if count > MAX_MULTIPLICITY:
            raise Invalid(
                f"command line: {node}:multiplicity: must be at most {MAX_MULTIPLICITY}, "
                f"not {count}"
            )


def _check_required(
    app: ApplicationModule, node: NodeDef, inherited: Inherited, given: Mapping[str, str]
) -> None:
    for name, parameter in inherited.inputs.items():
        if parameter.default is not None or name in node.parameters:
            continue
        if f"{node.name}:{name}" not in given:
            raise app.error(
                f"nodes.{node.name}",
                f"required input {name!r} of {inherited.path} is not mapped",
                hint=f"map it under parameters:, or give it with --param {node.name}:{name}=VALUE",
            )


def _known(word: str, names: Collection[str]) -> str:
    return f"{word}: {', '.join(sorted(names))}" if names else f"no {word}"
