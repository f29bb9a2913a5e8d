"""Modules (images, components, applications): read from YAML, then resolved into a plan.

``docs/modules.md`` is the specification. The work is done in two stages, because the CLI has
the files and the server has the versions:

- :func:`parse_module` checks one file on its own: kinds, keys, types, names, references and
  mapping syntax, within the bounds ``deploy/yamlsource.py`` sets on what one file may cost.
  :func:`stratuslab.deploy.tree.load_tree` uses it to read a module and every module it refers
  to from disk, so that the CLI can push them all.
- :func:`stratuslab.deploy.plan.resolve` checks what spans modules (parents, images, mappings,
  required inputs), against whatever versions a lookup finds, and produces the plan a run
  follows; ``stratus module check`` runs it over the files (``deploy/check.py``).

The values modules are read into are in ``deploy/kinds.py``, module paths and references in
``deploy/references.py``; both are importable from here.

Every problem is an :class:`Invalid` whose message is ``<file>:<line>: <key path>: <what>``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from stratuslab.deploy import volume_decls, yamlsource

# What the server and the node agent share is defined once, in the agent's protocol; these
# names stay importable from here for the modules that import them from the model.
from stratuslab.deploy.agent.protocol import DEFAULT_CLOUD as DEFAULT_CLOUD
from stratuslab.deploy.agent.protocol import MAX_VALUE as MAX_VALUE
from stratuslab.deploy.agent.protocol import STANDARD_PARAMETERS as STANDARD_PARAMETERS

# The values modules are read into, and how modules name each other, live in modules of their
# own; they are importable from here too, where they have always been.
from stratuslab.deploy.kinds import KINDS as KINDS
from stratuslab.deploy.kinds import PARAMETER_TYPES as PARAMETER_TYPES
from stratuslab.deploy.kinds import ApplicationModule as ApplicationModule
from stratuslab.deploy.kinds import ComponentModule as ComponentModule
from stratuslab.deploy.kinds import ImageModule as ImageModule
from stratuslab.deploy.kinds import Lookup as Lookup
from stratuslab.deploy.kinds import Module as Module
from stratuslab.deploy.kinds import ModuleText as ModuleText
from stratuslab.deploy.kinds import NodeDef as NodeDef
from stratuslab.deploy.kinds import ParameterDef as ParameterDef
from stratuslab.deploy.kinds import ParamSource as ParamSource
from stratuslab.deploy.references import address_of as address_of
from stratuslab.deploy.references import check_path as check_path
from stratuslab.deploy.references import module_path as module_path
from stratuslab.deploy.references import resolve_reference as resolve_reference
from stratuslab.deploy.yamlsource import Document, join
from stratuslab.errors import Invalid

RECIPE_STEPS = (
    "pre-install",
    "packages",
    "post-install",
    "deployment",
    "report",
    "on-vm-add",
    "on-vm-remove",
)
SCRIPT_STEPS = tuple(step for step in RECIPE_STEPS if step != "packages")
# The instances of a node are counted up to this (the control-plane benchmark runs that many);
# their index is part of their instance name, which must stay a DNS label (see _NODE_NAME).
MAX_MULTIPLICITY = 10_000

PARAMETER_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
# A node's instances are named <prefix>-<first 8 of the run id>-<node, _ as ->-<index>, a DNS
# label of at most 63 characters: with a site prefix of at most 20 characters and an index of
# at most 5 digits, the node has 20 left, in lowercase.
MAX_NODE_NAME = 20
_NODE_NAME = re.compile(rf"^[a-z][a-z0-9_]{{0,{MAX_NODE_NAME - 1}}}$")
_CLOUD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# A Debian package name, optionally with :arch, =version or /release, as apt-get takes them;
# nothing else, since the agent hands these to apt-get.
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?(=[A-Za-z0-9.+~:-]+|/[A-Za-z0-9.-]+)?$")
_INSTANCE = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)(?:\.([0-9]+))?$")

_RECIPE_RENAMED = {
    "execute": "deployment",
    "onvmadd": "on-vm-add",
    "onvmremove": "on-vm-remove",
    "prerecipe": "pre-install",
    "recipe": "post-install",
}
_NODE_RENAMED = {"max_provisioning_failures": "max-provisioning-failures"}
_NODE_KEYS = (
    *("component", "multiplicity", "cloud", "max-provisioning-failures", "parameters"),
    *("volume", "volumes"),
)
_SOURCE_FORMS = "node:parameter (like db:hostname), ss:name (a run global) or a quoted literal"


# -- one file -------------------------------------------------------------------------------


def parse_module(text: str, *, path: str, file: str, version: int | None = None) -> Module:
    """Syntax and per-file schema checks only (kinds, keys, types, names, mapping syntax).

    ``file`` is the module's file, relative to the root; errors name a stored ``version`` too.
    """
    shown = file if version is None else f"{file} (version {version})"
    try:
        check_path(path)  # the server takes paths as sent: one it could not address is refused
    except Invalid as exc:
        raise Invalid(f"{shown}: the module path {path!r}: {exc.message}") from None
    # A directory module (.../module.yaml) is its directory; a file module lives in its parent.
    base = path if Path(file).name == "module.yaml" else path.rpartition("/")[0]
    doc = yamlsource.load(text, file=shown)
    data = doc.data
    if not isinstance(data, dict):
        raise doc.error("", "a module is a mapping with a 'kind' key", hint="start with: kind: ...")
    if "kind" not in data:
        raise doc.error("kind", "missing", hint="kind: image, component or application")
    kind = data["kind"]
    if kind not in KINDS:
        raise doc.error("kind", f"{kind!r} is not a kind of module ({', '.join(KINDS)})")
    description = _optional_text(doc, "description", data.get("description"))
    lines = doc.lines
    if kind == "image":
        doc.check_keys("", data, ("kind", "description", "images"), "an image")
        images = _images(doc, data.get("images"))
        return ImageModule(path, doc.file, base, description, images, lines)
    if kind == "component":
        return _component(doc, data, path=path, base=base, description=description, lines=lines)
    doc.check_keys("", data, ("kind", "description", "nodes"), "an application")
    nodes = doc.mapping("nodes", data.get("nodes"))
    if not nodes:
        raise doc.error("nodes", "an application needs at least one node")
    parsed = {name: _node(doc, name, spec, base) for name, spec in nodes.items()}
    return ApplicationModule(path, doc.file, base, description, parsed, lines)


def _optional_text(doc: Document, path: str, value: Any) -> str:
    return "" if value is None else doc.text(path, value)


def _images(doc: Document, value: Any) -> dict[str, str]:
    images = doc.mapping("images", value)
    if not images:
        raise doc.error("images", "an image needs at least one cloud", hint="images: {local: NAME}")
    for cloud, name in images.items():
        _check_cloud(doc, join("images", cloud), cloud)
        doc.text(join("images", cloud), name, empty=False)
    return images


def _check_cloud(doc: Document, path: str, cloud: str) -> None:
    if not _CLOUD_NAME.fullmatch(cloud):
        raise doc.error(path, f"{cloud!r} is not a cloud name: use letters, digits, '_', '-', '.'")


def _component(
    doc: Document,
    data: dict[str, Any],
    *,
    path: str,
    base: str,
    description: str,
    lines: dict[str, int],
) -> ComponentModule:
    doc.check_keys(
        "",
        data,
        ("kind", "description", "parent", "inputs", "outputs", "recipes", "volumes"),
        "a component",
        renamed=_RECIPE_RENAMED,
        renamed_hint="recipes go under 'recipes:'",
    )
    if "parent" not in data:
        raise doc.error("parent", "missing: a component starts from an image or a component")
    parent = _reference(doc, "parent", data["parent"], base)
    inputs = _parameters(doc, "inputs", data.get("inputs"), inputs=True)
    outputs = _parameters(doc, "outputs", data.get("outputs"), inputs=False)
    for name in outputs:
        if name in inputs:
            raise doc.error(
                join("outputs", name),
                f"{name!r} is also an input; a parameter is either an input or an output",
            )
    recipes, packages = _recipes(doc, data.get("recipes"))
    volumes = volume_decls.component_volumes(doc, data.get("volumes"))
    return ComponentModule(
        path, doc.file, base, description, parent, inputs, outputs, recipes, packages, lines,
        volumes,
    )  # fmt: skip


def _parameters(doc: Document, path: str, value: Any, *, inputs: bool) -> dict[str, ParameterDef]:
    out: dict[str, ParameterDef] = {}
    for name, spec in doc.mapping(path, value).items():
        where = join(path, name)
        _check_parameter_name(doc, where, name)
        if isinstance(spec, str):  # the short form: the description alone
            out[name] = ParameterDef(name, spec)
            continue
        spec = doc.mapping(where, spec)
        if not inputs and "default" in spec:
            raise doc.error(
                join(where, "default"), "an output has no default: its component sets it"
            )
        doc.check_keys(
            where, spec, ("default", "description", "type"), "an input" if inputs else "an output"
        )
        description = _optional_text(doc, join(where, "description"), spec.get("description"))
        kind = _type(doc, join(where, "type"), spec.get("type", "string"))
        default = None
        if "default" in spec:
            if spec["default"] is None:
                raise doc.error(
                    join(where, "default"),
                    "is empty",
                    hint='write default: "" for an empty default, or remove the key to make '
                    "the input required",
                )
            default = _value(doc, join(where, "default"), spec["default"])
        out[name] = ParameterDef(name, description, default, kind)
    return out


def _type(doc: Document, path: str, value: Any) -> str:
    """A parameter's ``type``: ``string`` (the default) or ``password`` (kept secret)."""
    kind = doc.text(path, value, empty=False)
    if kind not in PARAMETER_TYPES:
        shown = kind if len(kind) <= 40 else kind[:37] + "..."
        raise doc.error(
            path,
            f"{shown!r} is not a parameter type ({', '.join(PARAMETER_TYPES)})",
            hint="type: password keeps a value out of events, logs and listings",
        )
    return kind


def _check_parameter_name(doc: Document, path: str, name: str) -> None:
    if not PARAMETER_NAME.fullmatch(name):
        raise doc.error(path, f"{name!r} is not a parameter name: use letters, digits, _ - and .")
    if name in STANDARD_PARAMETERS:
        raise doc.error(
            path,
            f"{name!r} is a parameter every node instance already has",
            hint=f"choose another name; those are: {', '.join(STANDARD_PARAMETERS)}",
        )


def _value(doc: Document, path: str, value: Any) -> str:
    text = doc.text(path, value)
    if len(text) > MAX_VALUE:
        raise doc.error(path, f"is longer than {MAX_VALUE} characters")
    return text


def _recipes(doc: Document, value: Any) -> tuple[dict[str, str], tuple[str, ...]]:
    recipes = doc.mapping("recipes", value)
    doc.check_keys("recipes", recipes, RECIPE_STEPS, "recipes", renamed=_RECIPE_RENAMED)
    scripts = {
        step: doc.text(join("recipes", step), recipes[step])
        for step in SCRIPT_STEPS
        if recipes.get(step) is not None
    }
    listed = recipes.get("packages")
    if listed is None:
        return scripts, ()
    if not isinstance(listed, list):
        raise doc.error(
            "recipes.packages",
            f"must be a list, not {yamlsource.describe(listed)}",
            hint="packages: [postgresql, nginx]",
        )
    for i, package in enumerate(listed):
        where = f"recipes.packages.{i}"
        if not _PACKAGE.fullmatch(doc.text(where, package)):
            raise doc.error(where, f"{package!r} is not a Debian package name")
    return scripts, tuple(listed)


def _reference(doc: Document, path: str, value: Any, base: str) -> str:
    ref = doc.text(path, value, empty=False)
    try:
        resolve_reference(ref, base=base)
    except Invalid as exc:
        raise doc.error(path, exc.message, hint=exc.hint) from None
    return ref


def _node(doc: Document, name: str, value: Any, base: str) -> NodeDef:
    path = join("nodes", name)
    if not _NODE_NAME.fullmatch(name):
        raise doc.error(
            path,
            f"{name!r} is not a node name: use lowercase letters, digits and _, from a letter, "
            f"at most {MAX_NODE_NAME} characters",
            hint="a node's name is part of the host name of each of its instances",
        )
    if name == "ss":
        raise doc.error(path, "'ss' names the run's globals (ss:name); choose another node name")
    spec = doc.mapping(path, value)
    doc.check_keys(path, spec, _NODE_KEYS, "a node", renamed=_NODE_RENAMED)
    if "component" not in spec:
        raise doc.error(join(path, "component"), "missing: a node runs a component")
    cloud = DEFAULT_CLOUD
    if "cloud" in spec:
        cloud = doc.text(join(path, "cloud"), spec["cloud"], empty=False)
        _check_cloud(doc, join(path, "cloud"), cloud)
    parameters = {}
    for target, source in doc.mapping(join(path, "parameters"), spec.get("parameters")).items():
        where = join(path, f"parameters.{target}")
        _check_parameter_name(doc, where, target)
        parameters[target] = _source(doc, where, source)
    return NodeDef(
        name,
        _reference(doc, join(path, "component"), spec["component"], base),
        doc.count(
            join(path, "multiplicity"), spec.get("multiplicity", 1), maximum=MAX_MULTIPLICITY
        ),
        cloud,
        doc.count(
            join(path, "max-provisioning-failures"),
            spec.get("max-provisioning-failures", 0),
            maximum=MAX_MULTIPLICITY,
        ),
        parameters,
        volume_decls.node_volumes(doc, name, spec),
        pinned="cloud" in spec,
    )


def _source(doc: Document, path: str, value: Any) -> ParamSource:
    """A mapping's value: ``'quoted'`` (a literal), ``ss:name`` or ``node:parameter``."""
    if not isinstance(value, str):
        written = doc.texts.get(path)
        raise doc.error(
            path,
            f"must be {_SOURCE_FORMS}, not {yamlsource.describe(value)}",
            hint=f"for the literal {written}, write \"'{written}'\"" if written else None,
        )
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return ParamSource("literal", value=_value(doc, path, value[1:-1]))
    node, colon, name = value.partition(":")
    if colon and PARAMETER_NAME.fullmatch(name):
        if node == "ss":
            return ParamSource("global", name=name)
        instance = _INSTANCE.fullmatch(node)
        if instance and instance[2] in (None, "1"):
            return ParamSource("parameter", node=instance[1], name=name)
        if instance:
            raise doc.error(
                path,
                f"{value!r}: a mapping reads a node's first instance",
                hint=f"write {instance[1]}:{name}",
            )
    # YAML removes one pair of quotes, so 'hello' arrives here as hello.
    hint = None if colon else f"for the literal {value}, write \"'{value}'\""
    raise doc.error(path, f"{value!r} is not {_SOURCE_FORMS}", hint=hint)
