"""The three kinds of module (image, component, application), as the values parsing makes of
them; ``deploy/model.py`` reads them from YAML and ``deploy/plan.py`` resolves them. Each keeps
the file it came from and the line of every key, so that whatever checks it later can point at
the line (:class:`~stratuslab.deploy.yamlsource.Located`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal, TypeAlias

from stratuslab.deploy.agent.protocol import DEFAULT_CLOUD
from stratuslab.deploy.yamlsource import Located

# What a parameter holds: text, or a password, which is kept secret (``deploy/secrets.py``).
PARAMETER_TYPES = ("string", "password")


@dataclass(frozen=True)
class ParameterDef:
    name: str
    description: str = ""
    default: str | None = None  # inputs only; None means required
    type: str = "string"  # one of PARAMETER_TYPES

    @property
    def secret(self) -> bool:
        return self.type == "password"


@dataclass(frozen=True)
class VolumeDef:
    """A volume a component mounts, as its file writes it: a field is None where it is not
    written (a child inherits it from its parent, or the default applies: ``/mnt/<name>``,
    read-write, no description). ``deploy/volume_decls.py`` reads them."""

    name: str
    size_bytes: int | None = None  # what the run makes for each node instance
    path: str | None = None
    read_only: bool | None = None
    description: str | None = None


@dataclass(frozen=True)
class VolumeBinding:
    """A component's volume bound by an application's node to a named, persistent volume:
    ``volume`` as written (``pgdata``, the run owner's own, or ``alice/pgdata``)."""

    volume: str
    read_only: bool | None = None  # None: as the component mounts it


@dataclass(frozen=True)
class ImageModule(Located):
    kind: ClassVar[str] = "image"

    path: str
    file: str  # as errors name it: db.yaml, or "db.yaml (version 3)" for a stored version
    base: str  # the directory its relative references start from
    description: str
    images: Mapping[str, str]  # cloud -> image name
    lines: Mapping[str, int]  # dotted key path -> line (1-based)


@dataclass(frozen=True)
class ComponentModule(Located):
    kind: ClassVar[str] = "component"

    path: str
    file: str
    base: str
    description: str
    parent: str  # reference as written
    inputs: Mapping[str, ParameterDef]
    outputs: Mapping[str, ParameterDef]
    recipes: Mapping[str, str]  # step -> script, for the script steps present
    packages: tuple[str, ...]
    lines: Mapping[str, int]
    volumes: Mapping[str, VolumeDef] = field(default_factory=dict)


@dataclass(frozen=True)
class ParamSource:
    """Where a mapped input's value comes from."""

    kind: Literal["parameter", "literal", "global"]
    node: str | None = None  # for "parameter"
    name: str | None = None  # parameter name (for "parameter" and "global")
    value: str | None = None  # for "literal"

    def key(self) -> str | None:
        """The runtime parameter read: ``db.1:hostname``, ``ss:site``; None for a literal."""
        if self.kind == "parameter":
            return f"{self.node}.1:{self.name}"
        if self.kind == "global":
            return f"ss:{self.name}"
        return None


@dataclass(frozen=True)
class NodeDef:
    name: str
    component: str  # reference as written
    multiplicity: int = 1
    cloud: str = DEFAULT_CLOUD
    max_provisioning_failures: int = 0
    parameters: Mapping[str, ParamSource] = field(default_factory=dict)
    # component volume name -> binding; "" is the short form (``volume: pgdata``), which binds
    # the component's only volume, whatever its name.
    volumes: Mapping[str, VolumeBinding] = field(default_factory=dict)
    # Whether the application (or the run's start) names the cloud: then the node stays there;
    # else ``cloud`` is only the default and the site places each instance (cloud/placement.py).
    pinned: bool = False


@dataclass(frozen=True)
class ApplicationModule(Located):
    kind: ClassVar[str] = "application"

    path: str
    file: str
    base: str
    description: str
    nodes: Mapping[str, NodeDef]
    lines: Mapping[str, int]


Module: TypeAlias = ImageModule | ComponentModule | ApplicationModule
KINDS = tuple(cls.kind for cls in (ImageModule, ComponentModule, ApplicationModule))
Lookup: TypeAlias = Callable[[str, int | None], tuple[Module, int]]


@dataclass(frozen=True)
class ModuleText:
    path: str
    file: str
    text: str
