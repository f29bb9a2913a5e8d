"""Modules: parsing one file, references, the tree on disk, and resolving a plan."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from stratuslab.deploy import model
from stratuslab.deploy.agent import protocol
from stratuslab.deploy.model import (
    MAX_MULTIPLICITY,
    MAX_NODE_NAME,
    RECIPE_STEPS,
    STANDARD_PARAMETERS,
    ApplicationModule,
    ComponentModule,
    ImageModule,
    Module,
    ParameterDef,
    ParamSource,
    module_path,
    parse_module,
    resolve_reference,
)
from stratuslab.deploy.plan import Plan, resolve
from stratuslab.deploy.tree import load_tree
from stratuslab.errors import Invalid, NotFound


def yaml(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def parse(text: str, *, path: str = "examples/webapp/x", file: str = "x.yaml") -> Module:
    return parse_module(yaml(text), path=path, file=file)


def refused(text: str, *, path: str = "examples/webapp/x", file: str = "x.yaml") -> Invalid:
    with pytest.raises(Invalid) as caught:
        parse(text, path=path, file=file)
    return caught.value


class Store:
    """A lookup over modules held in memory, versioned from 1 like the server's store."""

    def __init__(self) -> None:
        self.versions: dict[str, list[Module]] = {}

    def add(self, path: str, text: str, *, file: str | None = None) -> Module:
        module = parse_module(yaml(text), path=path, file=file or f"{path}.yaml")
        self.versions.setdefault(path, []).append(module)
        return module

    def __call__(self, path: str, version: int | None) -> tuple[Module, int]:
        found = self.versions.get(path, [])
        if not found or (version is not None and not 1 <= version <= len(found)):
            raise NotFound(f"no module {path!r}")
        number = version or len(found)
        return found[number - 1], number


def application(store: Store, path: str, text: str) -> ApplicationModule:
    module = store.add(path, text, file=f"{path}/module.yaml")
    assert isinstance(module, ApplicationModule)
    return module


IMAGE = """
kind: image
images:
  local: debian-12
"""


# -- parsing each kind ----------------------------------------------------------------------


def test_an_image_with_every_key() -> None:
    module = parse(
        """
        kind: image
        description: Debian 12
        images:
          local: debian-12
          eu: "ab12cd"
        """
    )
    assert module == ImageModule(
        path="examples/webapp/x",
        file="x.yaml",
        base="examples/webapp",
        description="Debian 12",
        images={"local": "debian-12", "eu": "ab12cd"},
        lines=module.lines,
    )
    assert module.line("") == 1  # an error about the whole module points at its first line
    assert module.error("", "x").message == "x.yaml:1: x"
    assert module.lines["images.eu"] == 5
    assert module.error("images.mars", "x").message == "x.yaml:3: images.mars: x"


def test_a_component_with_every_key() -> None:
    module = parse(
        """
        kind: component
        parent: base
        description: PostgreSQL 15
        inputs:
          port:
            default: "5432"
            description: TCP port
          admin_email: {}
          motd: shown at login
          empty:
        outputs:
          password:
            description: the application user's password
            type: password
          ready: {type: string}
        recipes:
          pre-install: |
            #!/bin/sh -e
            echo preparing
          packages: [postgresql, "libpq5:amd64", "nginx=1.22.1-9"]
          post-install: echo post
          deployment: ss-set ready true
          report: cp /var/log/*.log "$SLIPSTREAM_REPORT_DIR"
          on-vm-add: echo add
          on-vm-remove: echo remove
        """
    )
    assert isinstance(module, ComponentModule)
    assert module.parent == "base"
    assert module.description == "PostgreSQL 15"
    assert module.inputs == {
        "port": ParameterDef("port", "TCP port", "5432"),
        "admin_email": ParameterDef("admin_email"),
        "motd": ParameterDef("motd", "shown at login"),
        "empty": ParameterDef("empty"),
    }
    assert module.outputs == {
        "password": ParameterDef("password", "the application user's password", None, "password"),
        "ready": ParameterDef("ready"),
    }
    assert module.outputs["password"].secret and not module.inputs["port"].secret
    assert module.recipes["pre-install"] == "#!/bin/sh -e\necho preparing\n"
    assert list(module.recipes) == [step for step in RECIPE_STEPS if step != "packages"]
    assert module.packages == ("postgresql", "libpq5:amd64", "nginx=1.22.1-9")
    assert module.lines["inputs.port.default"] == 6
    assert module.lines["recipes.packages"] == 20


def test_an_application_with_every_key() -> None:
    module = parse(
        """
        kind: application
        description: a database and two web servers
        nodes:
          db:
            component: db
          web:
            component: ../shared/web/2
            multiplicity: 2
            cloud: eu
            max-provisioning-failures: 1
            parameters:
              db_host: db:hostname
              first: db.1:password
              greeting: "'hello'"
              motto: '"carpe diem"'
              site: ss:site
        """,
        path="examples/webapp",
        file="examples/webapp/module.yaml",
    )
    assert isinstance(module, ApplicationModule)
    db, web = module.nodes["db"], module.nodes["web"]
    assert (db.component, db.multiplicity, db.cloud, db.max_provisioning_failures) == (
        "db",
        1,
        "local",
        0,
    )
    assert db.parameters == {}
    assert (web.component, web.multiplicity, web.cloud, web.max_provisioning_failures) == (
        "../shared/web/2",
        2,
        "eu",
        1,
    )
    assert web.parameters == {
        "db_host": ParamSource("parameter", node="db", name="hostname"),
        "first": ParamSource("parameter", node="db", name="password"),
        "greeting": ParamSource("literal", value="hello"),
        "motto": ParamSource("literal", value="carpe diem"),
        "site": ParamSource("global", name="site"),
    }
    assert web.parameters["db_host"].key() == "db.1:hostname"
    assert web.parameters["site"].key() == "ss:site"
    assert web.parameters["greeting"].key() is None
    assert module.lines["nodes.web.parameters.site"] == 16


def test_keys_are_taken_as_written_not_as_yaml_booleans() -> None:
    module = parse(
        """
        kind: component
        parent: base
        inputs:
          on: {}
          "5432": {}
        """
    )
    assert isinstance(module, ComponentModule)
    assert list(module.inputs) == ["on", "5432"]


# -- errors in one file ---------------------------------------------------------------------


def test_an_unknown_key_names_the_file_line_and_known_keys() -> None:
    error = refused(
        """
        kind: component
        parent: base
        description: PostgreSQL
        recipies: {}
        """,
        file="examples/webapp/db.yaml",
    )
    assert error.message == (
        "examples/webapp/db.yaml:4: unknown key 'recipies' in a component "
        "(known: description, inputs, kind, outputs, parent, recipes, volumes)"
    )


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("execute", "deployment"),
        ("onvmadd", "on-vm-add"),
        ("onvmremove", "on-vm-remove"),
        ("prerecipe", "pre-install"),
        ("recipe", "post-install"),
    ],
)
def test_slipstream_recipe_names_are_refused_with_the_new_name(old: str, new: str) -> None:
    error = refused(
        f"""
        kind: component
        parent: base
        recipes:
          packages: [nginx]
          {old}: echo hi
        """
    )
    assert error.message == f"x.yaml:5: {old!r} is now called {new!r}"
    at_top = refused(f"kind: component\nparent: base\n{old}: echo hi\n")
    assert at_top.message == f"x.yaml:3: {old!r} is now called {new!r}"
    assert at_top.hint == "recipes go under 'recipes:'"


def test_max_provisioning_failures_is_refused_with_the_new_name() -> None:
    error = refused(
        """
        kind: application
        nodes:
          web:
            component: web
            max_provisioning_failures: 1
        """
    )
    assert error.message == (
        "x.yaml:5: 'max_provisioning_failures' is now called 'max-provisioning-failures'"
    )


def test_an_unknown_key_in_a_node() -> None:
    error = refused("kind: application\nnodes:\n  web:\n    component: web\n    multiplicty: 2\n")
    assert error.message.startswith("x.yaml:5: unknown key 'multiplicty' in a node (known: ")


def test_a_node_defined_twice_is_refused_at_the_second() -> None:
    error = refused(
        """
        kind: application
        nodes:
          web:
            component: web
          db:
            component: db
          web:
            component: web2
        """
    )
    assert error.message == "x.yaml:7: nodes.web: defined twice (first on line 3)"


def test_a_duplicate_key_anywhere_is_refused() -> None:
    error = refused(
        "kind: component\nparent: base\ninputs:\n  a: {}\n  b:\n    default: x\n    default: y\n"
    )
    assert error.message == "x.yaml:7: inputs.b.default: defined twice (first on line 6)"


def test_malformed_yaml_names_the_line() -> None:
    error = refused("kind: component\nparent: base\ninputs:\n  a: {}\n   b: [\n")
    assert error.message.startswith("x.yaml:5: not valid YAML: ")
    unclosed = refused("kind: component\nparent: base\ninputs: {a: 1\n\nrecipes: {}\n")
    assert unclosed.message.startswith("x.yaml:5: not valid YAML: ")


C = "kind: component\nparent: b\n"  # the start of a component, for the tables below
N = "kind: application\nnodes:\n  web:\n    component: w\n"  # an application, up to a node
P = N + "    parameters:\n      a: "  # ... up to a mapping's value, on line 6


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "x.yaml:1: a module is a mapping with a 'kind' key"),
        ("- a\n- b\n", "x.yaml:1: a module is a mapping with a 'kind' key"),
        ("description: x\n", "x.yaml:1: kind: missing"),
        ("kind: widget\n", "x.yaml:1: kind: 'widget' is not a kind of module"),
        ("kind: image\n", "x.yaml:1: images: an image needs at least one cloud"),
        ("kind: image\nimages:\n  local: 12\n", "x.yaml:3: images.local: must be text, not a"),
        ("kind: image\nimages:\n  lo cal: x\n", "x.yaml:3: images.lo cal: 'lo cal' is not a"),
        ("kind: image\ndescription: [a]\nimages: {local: x}\n", "x.yaml:2: description: must"),
        ("kind: image\nimages: !!set {local}\n", "x.yaml:2: the tag 'tag:yaml.org,2002:set'"),
        ("kind: image\nimages: !custom x\n", "x.yaml:2: could not determine a constructor"),
        ("base: &b {kind: image}\n<<: *b\n", "x.yaml:2: merge keys ('<<') are not supported"),
        ("kind: image\nimages: &a\n  local: *a\n", "x.yaml:2: an alias refers to a value that"),
    ],
)
def test_errors_in_any_module(text: str, message: str) -> None:
    assert refused(text).message.startswith(message)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: component\ndescription: x\n", "x.yaml:1: parent: missing"),
        ("kind: component\nparent: ../../../x\n", "x.yaml:2: parent: '../../../x' goes above"),
        ("kind: component\nparent: a//b\n", "x.yaml:2: parent: 'a//b' is not a module reference"),
        ("kind: component\nparent: db/0\n", "x.yaml:2: parent: 'db/0': versions are numbered"),
        ("kind: component\nparent: ''\n", "x.yaml:2: parent: must not be empty"),
        (C + "inputs: [a]\n", "x.yaml:3: inputs: must be a mapping, not a list"),
        (C + "inputs:\n  a b: {}\n", "x.yaml:4: inputs.a b: 'a b' is not a parameter name"),
        (C + "outputs:\n  hostname: {}\n", "x.yaml:4: outputs.hostname: 'hostname' is a param"),
        (C + "inputs:\n  url.ssh: {}\n", "x.yaml:4: inputs.url.ssh: 'url.ssh' is a parameter"),
        (C + "inputs:\n  p: {}\noutputs:\n  p: {}\n", "x.yaml:6: outputs.p: 'p' is also an input"),
        (C + "inputs:\n  p:\n    default: 5432\n", "x.yaml:5: inputs.p.default: must be text"),
        (C + "inputs:\n  p:\n    default:\n", "x.yaml:5: inputs.p.default: is empty"),
        (
            C + "inputs:\n  p:\n    defualt: x\n",
            "x.yaml:5: unknown key 'defualt' in an input (known: default, description, type)",
        ),
        (C + "outputs:\n  p:\n    default: x\n", "x.yaml:5: outputs.p.default: an output has no"),
        (
            C + "outputs:\n  p:\n    type: pasword\n",
            "x.yaml:5: outputs.p.type: 'pasword' is not a parameter type (string, password)",
        ),
        (C + "inputs:\n  p:\n    type: true\n", "x.yaml:5: inputs.p.type: must be text, not"),
        (C + "inputs:\n  p:\n    type: ''\n", "x.yaml:5: inputs.p.type: must not be empty"),
        (C + "recipes:\n  packages: nginx\n", "x.yaml:4: recipes.packages: must be a list, not"),
        (
            C + "recipes:\n  packages:\n    - nginx\n    - 'rm -rf'\n",
            "x.yaml:6: recipes.packages.1: 'rm -rf' is not a Debian package name",
        ),
        (C + "recipes:\n  deployment: 3\n", "x.yaml:4: recipes.deployment: must be text, not a"),
        (C + "recipes:\n  build: x\n", "x.yaml:4: unknown key 'build' in recipes"),
    ],
)
def test_errors_in_a_component(text: str, message: str) -> None:
    assert refused(text).message.startswith(message)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: application\n", "x.yaml:1: nodes: an application needs at least one node"),
        ("kind: application\nnodes:\n  1web: {}\n", "x.yaml:3: nodes.1web: '1web' is not a node"),
        ("kind: application\nnodes:\n  web-1: {}\n", "x.yaml:3: nodes.web-1: 'web-1' is not a"),
        ("kind: application\nnodes:\n  ss: {}\n", "x.yaml:3: nodes.ss: 'ss' names the run's"),
        ("kind: application\nnodes:\n  web: {}\n", "x.yaml:3: nodes.web.component: missing"),
        (N + "    multiplicity: yes\n", "x.yaml:5: nodes.web.multiplicity: must be a whole number"),
        (
            N + "    multiplicity: -1\n",
            "x.yaml:5: nodes.web.multiplicity: must be 0 or more, not -1",
        ),
        (N + "    multiplicity: '2'\n", "x.yaml:5: nodes.web.multiplicity: must be a whole number"),
        (
            N + "    max-provisioning-failures: 1.5\n",
            "x.yaml:5: nodes.web.max-provisioning-failures: must be a whole number, not a number",
        ),
        (N + "    cloud: ''\n", "x.yaml:5: nodes.web.cloud: must not be empty"),
        (
            P + "hello\n",
            "x.yaml:6: nodes.web.parameters.a: 'hello' is not node:parameter (like db:hostname), "
            "ss:name (a run global) or a quoted literal",
        ),
        (P + "8080\n", "x.yaml:6: nodes.web.parameters.a: must be node:parameter"),
        (P + "db:host name\n", "x.yaml:6: nodes.web.parameters.a: 'db:host name' is not node:"),
        (
            P + "db.2:hostname\n",
            "x.yaml:6: nodes.web.parameters.a: 'db.2:hostname': a mapping reads a node's first",
        ),
        (P + '"ss:"\n', "x.yaml:6: nodes.web.parameters.a: 'ss:' is not node:parameter"),
        (
            N + "    parameters:\n      hostname: db:x\n",
            "x.yaml:6: nodes.web.parameters.hostname: 'hostname' is a parameter every node",
        ),
    ],
)
def test_errors_in_an_application(text: str, message: str) -> None:
    assert refused(text).message.startswith(message)


@pytest.mark.parametrize(
    "name", ["Web", "webServer", "a" * (MAX_NODE_NAME + 1), "_web", "wéb", "web.1"]
)
def test_a_node_name_that_cannot_be_part_of_a_host_name_is_refused(name: str) -> None:
    error = refused(f"kind: application\nnodes:\n  {name}:\n    component: w\n")
    assert error.message == (
        f"x.yaml:3: nodes.{name}: {name!r} is not a node name: use lowercase letters, digits "
        f"and _, from a letter, at most {MAX_NODE_NAME} characters"
    )
    assert error.hint == "a node's name is part of the host name of each of its instances"


def test_the_longest_node_name_still_makes_an_instance_name_that_is_a_dns_label() -> None:
    name = "a" * (MAX_NODE_NAME - 2) + "_1"
    module = parse(f"kind: application\nnodes:\n  {name}:\n    component: w\n")
    assert isinstance(module, ApplicationModule) and list(module.nodes) == [name]
    # As the orchestrator names instances, with the longest site prefix and index allowed.
    instance = f"{'p' * 20}-{'0' * 8}-{name.replace('_', '-')}-{MAX_MULTIPLICITY}"
    assert len(instance) <= 63
    assert re.fullmatch(r"[a-z]([a-z0-9-]*[a-z0-9])?", instance)


@pytest.mark.parametrize("key", ["multiplicity", "max-provisioning-failures"])
def test_multiplicity_and_failures_are_bounded(key: str) -> None:
    error = refused(N + f"    {key}: {MAX_MULTIPLICITY + 1}\n")
    assert error.message == (
        f"x.yaml:5: nodes.web.{key}: must be at most {MAX_MULTIPLICITY}, not {MAX_MULTIPLICITY + 1}"
    )
    module = parse(N + f"    {key}: {MAX_MULTIPLICITY}\n")
    assert isinstance(module, ApplicationModule)
    node = module.nodes["web"]
    assert MAX_MULTIPLICITY in (node.multiplicity, node.max_provisioning_failures)


def test_the_limits_shared_with_the_agent_are_the_protocol_s() -> None:
    assert model.MAX_VALUE is protocol.MAX_VALUE
    assert model.STANDARD_PARAMETERS is protocol.STANDARD_PARAMETERS
    assert model.DEFAULT_CLOUD is protocol.DEFAULT_CLOUD


def test_an_unquoted_literal_is_explained() -> None:
    error = refused(
        "kind: application\nnodes:\n  web:\n    component: w\n    parameters:\n      a: 'hello'\n"
    )
    assert "ss:name (a run global)" in error.message
    assert error.hint == "for the literal hello, write \"'hello'\""


def test_a_number_as_default_or_literal_says_how_to_quote_it() -> None:
    error = refused("kind: component\nparent: b\ninputs:\n  mode:\n    default: 0755\n")
    assert error.hint == "quote it: default: '0755'"
    literal = refused(
        "kind: application\nnodes:\n  web:\n    component: w\n    parameters:\n      a: 8080\n"
    )
    assert literal.hint == "for the literal 8080, write \"'8080'\""


def test_a_literal_or_default_is_at_most_4096_characters() -> None:
    long = "x" * 4097
    error = refused(
        f"kind: application\nnodes:\n  web:\n    component: w\n    parameters:\n"
        f"      a: \"'{long}'\"\n"
    )
    assert error.message == "x.yaml:6: nodes.web.parameters.a: is longer than 4096 characters"
    assert parse(f"kind: component\nparent: b\ninputs:\n  a:\n    default: {long[1:]}\n")


def test_aliases_that_explode_are_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 7)]
    error = refused("\n".join(lines) + "\n")
    assert "too large once its aliases are expanded" in error.message


# -- paths and references -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "path"),
    [
        ("examples/webapp/db.yaml", "examples/webapp/db"),
        ("examples/webapp/module.yaml", "examples/webapp"),
        ("top.yaml", "top"),
    ],
)
def test_module_path(tmp_path: Path, file: str, path: str) -> None:
    assert module_path(tmp_path, Path(file)) == path
    assert module_path(tmp_path, tmp_path / file) == path


@pytest.mark.parametrize(
    ("file", "problem"),
    [
        ("module.yaml", "has no path"),
        ("examples/db.yml", "ends in .yaml"),
        ("examples/3.yaml", "would read as a version"),
        ("my app/db.yaml", "'my app' cannot be part of a module path"),
    ],
)
def test_module_path_refuses(tmp_path: Path, file: str, problem: str) -> None:
    with pytest.raises(Invalid, match=problem):
        module_path(tmp_path, Path(file))
    with pytest.raises(Invalid, match="is not under"):
        module_path(tmp_path / "a", tmp_path / "b.yaml")


def test_the_base_of_file_and_directory_modules() -> None:
    file_module = parse(IMAGE, path="examples/webapp/db", file="examples/webapp/db.yaml")
    dir_module = parse(IMAGE, path="examples/webapp", file="examples/webapp/module.yaml")
    stored = parse_module(
        yaml(IMAGE), path="examples/webapp", file="examples/webapp/module.yaml", version=3
    )
    top = parse(IMAGE, path="db", file="db.yaml")
    assert file_module.base == "examples/webapp"
    assert dir_module.base == "examples/webapp"
    assert stored.base == "examples/webapp"
    assert stored.file == "examples/webapp/module.yaml (version 3)"  # as its errors name it
    assert top.base == ""


@pytest.mark.parametrize(
    ("ref", "base", "resolved"),
    [
        ("db", "examples/webapp", ("examples/webapp/db", None)),
        ("./db", "examples/webapp", ("examples/webapp/db", None)),
        ("../shared/base", "examples/webapp", ("examples/shared/base", None)),
        ("./sub/db", "examples/webapp", ("examples/webapp/sub/db", None)),
        ("shared/base", "examples/webapp", ("shared/base", None)),  # several names: absolute
        ("examples/webapp/db", "other", ("examples/webapp/db", None)),
        ("db/3", "examples/webapp", ("examples/webapp/db", 3)),
        ("../shared/base/12", "examples/webapp", ("examples/shared/base", 12)),
        ("examples/webapp/7", "", ("examples/webapp", 7)),
        ("db", "", ("db", None)),
        ("..", "examples/webapp", ("examples", None)),
        ("a/./b/../c", "", ("a/c", None)),
    ],
)
def test_resolve_reference(ref: str, base: str, resolved: tuple[str, int | None]) -> None:
    assert resolve_reference(ref, base=base) == resolved


@pytest.mark.parametrize(
    ("ref", "base", "problem"),
    [
        ("../../db", "examples", "goes above the root"),
        ("..", "", "goes above the root"),
        ("../..", "a/b", "refers to the root"),
        ("/abs/db", "", "is not a module reference"),
        ("db/", "", "is not a module reference"),
        ("db/0", "", "numbered from 1"),
        ("3", "examples", "is not a module name"),
        ("a b/c", "", "is not a module name"),
    ],
)
def test_resolve_reference_refuses(ref: str, base: str, problem: str) -> None:
    with pytest.raises(Invalid, match=problem):
        resolve_reference(ref, base=base)


# -- the tree on disk -----------------------------------------------------------------------


def write(root: Path, file: str, text: str) -> None:
    (root / file).parent.mkdir(parents=True, exist_ok=True)
    (root / file).write_text(yaml(text))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    write(tmp_path, "examples/shared/debian.yaml", IMAGE)
    write(tmp_path, "examples/shared/base.yaml", "kind: component\nparent: debian\n")
    write(tmp_path, "examples/webapp/db.yaml", "kind: component\nparent: ../shared/base\n")
    write(tmp_path, "examples/webapp/web.yaml", "kind: component\nparent: ../shared/base\n")
    write(
        tmp_path,
        "examples/webapp/module.yaml",
        """
        kind: application
        nodes:
          db:
            component: db
          web:
            component: ./web
          web2:
            component: examples/webapp/web
          old:
            component: legacy/4
        """,
    )
    return tmp_path


def test_load_tree_reads_every_referenced_module_once(tree: Path) -> None:
    texts = load_tree(tree, "examples/webapp")
    assert [(t.path, t.file) for t in texts] == [
        ("examples/webapp", "examples/webapp/module.yaml"),
        ("examples/webapp/db", "examples/webapp/db.yaml"),
        ("examples/webapp/web", "examples/webapp/web.yaml"),
        ("examples/shared/base", "examples/shared/base.yaml"),
        ("examples/shared/debian", "examples/shared/debian.yaml"),
    ]
    assert texts[1].text == "kind: component\nparent: ../shared/base\n"


@pytest.mark.parametrize(
    "target",
    ["examples/webapp/", "examples/webapp/module.yaml", "examples/webapp/web", "web.yaml"],
)
def test_load_tree_targets(tree: Path, target: str) -> None:
    if target == "web.yaml":
        target = str(tree / "examples/webapp/web.yaml")  # an absolute path under the root
    assert load_tree(tree, target)[0].path.startswith("examples/webapp")


def test_load_tree_names_the_referring_line_for_a_missing_file(tree: Path) -> None:
    write(tree, "examples/webapp/web.yaml", "kind: component\n\nparent: bse\n")
    with pytest.raises(Invalid) as caught:
        load_tree(tree, "examples/webapp")
    assert caught.value.message == (
        "examples/webapp/web.yaml:3: parent: no module 'examples/webapp/bse' "
        "(looked for examples/webapp/bse.yaml and examples/webapp/bse/module.yaml)"
    )


def test_load_tree_refuses_a_missing_target_and_an_ambiguous_module(tree: Path) -> None:
    with pytest.raises(Invalid, match="no module 'examples/webap'"):
        load_tree(tree, "examples/webap")
    with pytest.raises(Invalid, match=r"no module file examples/nope\.yaml"):
        load_tree(tree, "examples/nope.yaml")
    write(tree, "examples/webapp/db/module.yaml", IMAGE)
    with pytest.raises(Invalid) as caught:
        load_tree(tree, "examples/webapp")
    assert caught.value.message.startswith(
        "examples/webapp/module.yaml:4: nodes.db.component: 'examples/webapp/db' is both"
    )


def test_load_tree_reports_problems_in_referenced_files(tree: Path) -> None:
    (tree / "examples/shared/base.yaml").write_text("kind: component\nparent: debian\nx: 1\n")
    with pytest.raises(Invalid, match=r"^examples/shared/base.yaml:3: unknown key 'x'"):
        load_tree(tree, "examples/webapp")
    (tree / "examples/shared/base.yaml").write_bytes(b"kind: component\n\xff\n")
    with pytest.raises(Invalid, match=r"^examples/shared/base.yaml:2: not UTF-8 text"):
        load_tree(tree, "examples/webapp")


# -- resolving: inheritance -----------------------------------------------------------------


@pytest.fixture
def chain() -> Store:
    """An image, then base, middle and leaf components, each inheriting from the one before."""
    store = Store()
    store.add("lib/debian", "kind: image\nimages:\n  local: debian-12\n  eu: deb-eu\n")
    store.add(
        "lib/base",
        """
        kind: component
        parent: debian
        inputs:
          port:
            default: "80"
            description: the port
          name: {}
        outputs:
          ready: {}
        recipes:
          pre-install: base pre
          packages: [curl, git]
          deployment: base deploy
        """,
    )
    store.add(
        "lib/middle",
        """
        kind: component
        parent: base
        inputs:
          port:
            default: "8080"
        recipes:
          packages: [git, nginx, nginx]
          deployment: middle deploy
        """,
    )
    store.add(
        "apps/leaf",
        """
        kind: component
        parent: ../lib/middle
        inputs:
          port: {description: the leaf's port}
          extra:
            default: ""
        outputs:
          url: {}
        recipes:
          packages: [curl, jq]
          deployment: leaf deploy
          on-vm-add: leaf add
        """,
    )
    return store


def test_a_three_level_chain_merges_parent_first(chain: Store) -> None:
    app = application(
        chain, "apps/site", "kind: application\nnodes:\n  leaf:\n    component: ../leaf\n"
    )
    plan = resolve(app, 1, chain, given={"leaf:name": "x"})
    node = plan.nodes["leaf"]
    assert node.component == "apps/leaf"
    assert node.image == "debian-12"
    assert node.inputs == {
        "port": ParameterDef("port", "the leaf's port", "8080"),
        "name": ParameterDef("name"),
        "extra": ParameterDef("extra", "", ""),
    }
    assert list(node.outputs) == ["ready", "url"]
    assert node.recipes["deployment"] == (
        ("lib/base", "base deploy"),
        ("lib/middle", "middle deploy"),
        ("apps/leaf", "leaf deploy"),
    )
    assert node.recipes["pre-install"] == (("lib/base", "base pre"),)
    assert node.recipes["on-vm-add"] == (("apps/leaf", "leaf add"),)
    assert node.recipes["report"] == ()
    assert set(node.recipes) == set(RECIPE_STEPS) - {"packages"}
    assert node.packages == ("curl", "git", "nginx", "jq")
    assert plan.modules == {
        "apps/site": 1,
        "apps/leaf": 1,
        "lib/middle": 1,
        "lib/base": 1,
        "lib/debian": 1,
    }


def test_the_cloud_picks_the_image_and_a_missing_one_is_refused(chain: Store) -> None:
    app = application(
        chain,
        "apps/site",
        """
        kind: application
        nodes:
          a:
            component: ../leaf
            cloud: eu
            parameters: {name: "'n'"}
          b:
            component: ../leaf
            parameters: {name: "'n'"}
            cloud: mars
        """,
    )
    with pytest.raises(Invalid) as caught:
        resolve(app, 1, chain)
    assert caught.value.message == (
        "apps/site/module.yaml:10: nodes.b.cloud: no image for cloud 'mars' at the root of "
        "apps/leaf's parents (lib/debian has: eu, local)"
    )
    del chain.versions["apps/site"]
    app = application(
        chain,
        "apps/site",
        "kind: application\nnodes:\n  a:\n    component: ../leaf\n    cloud: eu\n"
        "    parameters: {name: \"'n'\"}\n",
    )
    assert resolve(app, 1, chain).nodes["a"].image == "deb-eu"


def test_an_inherited_output_cannot_become_an_input(chain: Store) -> None:
    chain.add("apps/bad", "kind: component\nparent: leaf\ninputs:\n  x: {}\n  ready: {}\n")
    app = application(
        chain, "apps/site", "kind: application\nnodes:\n  n:\n    component: ../bad\n"
    )
    with pytest.raises(Invalid) as caught:
        resolve(app, 1, chain)
    assert caught.value.message == (
        "apps/bad.yaml:5: inputs.ready: 'ready' is an output of lib/base; "
        "a parameter is either an input or an output"
    )


@pytest.mark.parametrize(
    ("parent", "file", "message"),
    [
        ("nothere", "lib/c.yaml", "lib/c.yaml:2: parent: no module 'lib/nothere'"),
        ("nothere/4", "lib/c.yaml", "lib/c.yaml:2: parent: no module 'lib/nothere/4'"),
        ("debian/2", "lib/c.yaml", "lib/c.yaml:2: parent: no module 'lib/debian/2'"),
        ("app", "lib/c.yaml", "lib/c.yaml:2: parent: lib/app is an application; a parent is"),
    ],
)
def test_a_bad_parent_is_refused_where_it_is_named(
    chain: Store, parent: str, file: str, message: str
) -> None:
    chain.add("lib/app", "kind: application\nnodes:\n  a:\n    component: base\n")
    chain.add("lib/c", f"kind: component\nparent: {parent}\n")
    app = application(
        chain, "apps/site", "kind: application\nnodes:\n  n:\n    component: ../../lib/c\n"
    )
    with pytest.raises(Invalid) as caught:
        resolve(app, 1, chain)
    assert caught.value.message.startswith(message)


def test_a_cycle_of_parents_is_refused(chain: Store) -> None:
    chain.add("lib/a", "kind: component\nparent: b\n")
    chain.add("lib/b", "kind: component\ndescription: b\nparent: c\n")
    chain.add("lib/c", "kind: component\nparent: b\n")
    app = application(
        chain, "apps/site", "kind: application\nnodes:\n  n:\n    component: ../../lib/a\n"
    )
    with pytest.raises(Invalid) as caught:
        resolve(app, 1, chain)
    assert caught.value.message == (
        "lib/c.yaml:2: parent: a cycle of parents: lib/a -> lib/b -> lib/c -> lib/b"
    )


def test_a_cycle_of_many_parents_is_refused_without_recursing() -> None:
    # Built as values rather than parsed: what is tested is resolve, on more parents than
    # Python's recursion limit would allow a recursive walk.
    length = 1500
    modules: dict[str, Module] = {
        f"lib/c{i}": ComponentModule(
            f"lib/c{i}",
            f"lib/c{i}.yaml",
            "lib",
            "",
            f"c{(i + 1) % length}",
            {},
            {},
            {},
            (),
            {"parent": 2},
        )
        for i in range(length)
    }
    store = Store()
    app = application(
        store, "apps/one", "kind: application\nnodes:\n  n:\n    component: ../../lib/c0\n"
    )
    with pytest.raises(Invalid) as caught:
        resolve(app, 1, lambda path, version: (modules[path], 1))
    assert caught.value.message.startswith(
        f"lib/c{length - 1}.yaml:2: parent: a cycle of parents: lib/c0 -> lib/c1 -> "
    )
    assert caught.value.message.endswith(f"lib/c{length - 1} -> lib/c0")


@pytest.mark.parametrize(
    ("component", "message"),
    [
        ("nothere", "apps/site/module.yaml:4: nodes.n.component: no module 'apps/site/nothere'"),
        (
            "../../lib/debian/1",
            "apps/site/module.yaml:4: nodes.n.component: lib/debian is an image, not a component",
        ),
        (
            "../../lib/app",
            "apps/site/module.yaml:4: nodes.n.component: lib/app is an application, not a "
            "component",
        ),
        ("../leaf/9", "apps/site/module.yaml:4: nodes.n.component: no module 'apps/leaf/9'"),
    ],
)
def test_a_node_must_run_a_component(chain: Store, component: str, message: str) -> None:
    chain.add("lib/app", "kind: application\nnodes:\n  a:\n    component: base\n")
    app = application(
        chain, "apps/site", f"kind: application\nnodes:\n  n:\n    component: {component}\n"
    )
    with pytest.raises(Invalid) as caught:
        resolve(app, 1, chain)
    assert caught.value.message == message


def test_pinned_versions_are_used_and_recorded(chain: Store) -> None:
    chain.add("lib/base", "kind: component\nparent: debian\ninputs:\n  name: {default: b2}\n")
    app = application(
        chain, "apps/site", "kind: application\nnodes:\n  a:\n    component: ../leaf\n"
    )
    assert resolve(app, 1, chain).modules["lib/base"] == 2  # the newest: middle names base
    chain.add("lib/middle", "kind: component\nparent: base/1\n")
    with pytest.raises(Invalid, match="required input 'name'"):  # base/1 has no default
        resolve(app, 1, chain)
    plan = resolve(app, 1, chain, given={"a:name": "x"})
    assert (plan.modules["lib/base"], plan.modules["lib/middle"]) == (1, 2)
    assert plan.nodes["a"].inputs["port"].default == "80"  # middle/2 no longer overrides it


def test_one_module_at_two_versions_is_refused(chain: Store) -> None:
    chain.add("lib/debian", "kind: image\nimages: {local: debian-13}\n")
    chain.add("lib/old", "kind: component\nparent: debian/1\n")
    chain.add("lib/new", "kind: component\nparent: debian\n")
    app = application(
        chain,
        "apps/site",
        "kind: application\nnodes:\n  a:\n    component: ../../lib/new\n  b:\n"
        "    component: ../../lib/old\n",
    )
    with pytest.raises(Invalid) as caught:
        resolve(app, 1, chain)
    assert caught.value.message == (
        "lib/old.yaml:2: parent: uses lib/debian/1, but this application also uses lib/debian/2"
    )


# -- resolving: the webapp example ----------------------------------------------------------

WEBAPP = {
    "examples/shared/debian": IMAGE,
    "examples/webapp/db": """
        kind: component
        parent: ../shared/debian
        description: PostgreSQL
        outputs:
          password:
            description: the application user's password
          ready: {}
        recipes:
          packages: [postgresql]
          deployment: |
            #!/bin/bash -e
            ss-set password "$(ss-random)"
            ss-set ready true
        """,
    "examples/webapp/web": """
        kind: component
        parent: ../shared/debian
        inputs:
          db_host: the database's address
          db_password: {}
          greeting:
            default: hello
          site: {}
        outputs:
          url: {}
        recipes:
          packages: [nginx, python3-psycopg2]
          deployment: |
            ss-get db_host
            ss-set url "http://$(hostname)/"
        """,
    "examples/webapp/lb": """
        kind: component
        parent: ../shared/debian
        inputs:
          backends: {}
        recipes:
          packages: [haproxy]
          on-vm-add: reload
        """,
    "examples/webapp/test": """
        kind: component
        parent: ../shared/debian
        inputs:
          url: {}
        recipes:
          deployment: curl -f "$(ss-get url)"
          report: cp /tmp/result "$SLIPSTREAM_REPORT_DIR"
        """,
}
WEBAPP_APP = """
    kind: application
    description: a database, two web servers, a load balancer and a test
    nodes:
      db:
        component: db
      web:
        component: web
        multiplicity: 2
        cloud: local
        max-provisioning-failures: 0
        parameters:
          db_host: db:hostname
          db_password: db:password
          greeting: "'hi there'"
          site: ss:site
      lb:
        component: lb
        parameters:
          backends: web:hostname
      test:
        component: test
        parameters:
          url: web:url
    """


@pytest.fixture
def webapp() -> tuple[Store, ApplicationModule]:
    store = Store()
    for path, text in WEBAPP.items():
        store.add(path, text)
    return store, application(store, "examples/webapp", WEBAPP_APP)


def test_the_webapp_example_resolves(webapp: tuple[Store, ApplicationModule]) -> None:
    store, app = webapp
    plan = resolve(app, 1, store, given={"ss:site": "lab"}, multiplicities={"web": 3})
    assert list(plan.nodes) == ["db", "web", "lb", "test"]
    web = plan.nodes["web"]
    assert (web.component, web.component_version, web.multiplicity, web.image) == (
        "examples/webapp/web",
        1,
        3,
        "debian-12",
    )
    assert web.mappings["db_password"].key() == "db.1:password"
    assert web.mappings["greeting"] == ParamSource("literal", value="hi there")
    assert plan.nodes["db"].mappings == {}
    assert plan.nodes["db"].multiplicity == 1
    assert plan.nodes["lb"].recipes["on-vm-add"] == (("examples/webapp/lb", "reload"),)
    assert plan.modules == {
        "examples/webapp": 1,
        "examples/webapp/db": 1,
        "examples/shared/debian": 1,
        "examples/webapp/web": 1,
        "examples/webapp/lb": 1,
        "examples/webapp/test": 1,
    }


def test_a_plan_survives_json(webapp: tuple[Store, ApplicationModule]) -> None:
    store, app = webapp
    plan = resolve(app, 1, store)
    again = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan
    assert again.to_dict() == plan.to_dict()
    assert plan.to_dict()["nodes"]["web"]["recipes"]["deployment"][0]["module"] == (
        "examples/webapp/web"
    )
    assert plan.to_dict()["nodes"]["web"]["max_provisioning_failures"] == 0


def broken(store: Store, app_text: str) -> Invalid:
    app = application(store, "examples/webapp", app_text)
    with pytest.raises(Invalid) as caught:
        resolve(app, 2, store)
    return caught.value


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "db_host: db:hostname",
            "db_host: dbb:hostname",
            "examples/webapp/module.yaml:12: nodes.web.parameters.db_host: "
            "node 'dbb' does not exist (nodes: db, lb, test, web)",
        ),
        (
            "db_password: db:password",
            "db_password: db:pasword",
            "examples/webapp/module.yaml:13: nodes.web.parameters.db_password: "
            "'pasword' is neither an output of examples/webapp/db (outputs: password, ready) "
            "nor a parameter every instance has",
        ),
        (
            "backends: web:hostname",
            "backends: lb:url",
            "examples/webapp/module.yaml:19: nodes.lb.parameters.backends: "
            "'url' is neither an output of examples/webapp/lb (no outputs)",
        ),
        (
            "greeting: \"'hi there'\"",
            "greting: \"'hi there'\"",
            "examples/webapp/module.yaml:14: nodes.web.parameters.greting: "
            "'greting' is not an input of examples/webapp/web "
            "(inputs: db_host, db_password, greeting, site)",
        ),
        (
            "db_password: db:password",
            "",
            "examples/webapp/module.yaml:6: nodes.web: "
            "required input 'db_password' of examples/webapp/web is not mapped",
        ),
        (
            "url: web:url",
            "{}",
            "examples/webapp/module.yaml:20: nodes.test: "
            "required input 'url' of examples/webapp/test is not mapped",
        ),
    ],
)
def test_mapping_errors_point_at_the_application(
    webapp: tuple[Store, ApplicationModule], old: str, new: str, message: str
) -> None:
    store, _ = webapp
    error = broken(store, WEBAPP_APP.replace(old, new))
    assert error.message.startswith(message)


def test_a_required_input_may_be_given_instead_of_mapped(
    webapp: tuple[Store, ApplicationModule],
) -> None:
    store, _ = webapp
    app = application(store, "examples/webapp", WEBAPP_APP.replace("site: ss:site", ""))
    with pytest.raises(Invalid) as caught:
        resolve(app, 2, store)
    assert caught.value.message == (
        "examples/webapp/module.yaml:6: nodes.web: required input 'site' of "
        "examples/webapp/web is not mapped"
    )
    assert caught.value.hint == "map it under parameters:, or give it with --param web:site=VALUE"
    assert resolve(app, 2, store, given={"web:site": "x"}).nodes["web"].mappings.keys() == {
        "db_host",
        "db_password",
        "greeting",
    }


def test_standard_parameters_can_be_mapped(webapp: tuple[Store, ApplicationModule]) -> None:
    store, app = webapp
    plan = resolve(app, 1, store)
    assert plan.nodes["lb"].mappings["backends"].key() == "web.1:hostname"
    assert "hostname" in STANDARD_PARAMETERS


@pytest.mark.parametrize(
    ("given", "multiplicities", "message"),
    [
        (
            {"web2:greeting": "x"},
            {},
            "command line: web2:greeting: node 'web2' does not exist (nodes: db, lb, test, web)",
        ),
        (
            {"web:greting": "x"},
            {},
            "command line: web:greting: 'greting' is not an input of examples/webapp/web "
            "(inputs: db_host, db_password, greeting, site)",
        ),
        (
            {"db:password": "x"},
            {},
            "command line: db:password: "
            "'password' is not an input of examples/webapp/db (no inputs)",
        ),
        ({"greeting": "x"}, {}, "command line: greeting: not node:input or ss:name"),
        ({"ss:": "x"}, {}, "command line: ss:: not node:input or ss:name"),
        ({"ss:site": "x" * 4097}, {}, "command line: ss:site: the value is longer than 4096"),
        (
            {},
            {"cache": 1},
            "command line: cache:multiplicity: "
            "node 'cache' does not exist (nodes: db, lb, test, web)",
        ),
        ({}, {"web": -1}, "command line: web:multiplicity: must be 0 or more, not -1"),
        ({}, {"web": True}, "command line: web:multiplicity: must be 0 or more, not True"),
    ],
)
def test_command_line_values_are_checked(
    webapp: tuple[Store, ApplicationModule],
    given: dict[str, str],
    multiplicities: dict[str, int],
    message: str,
) -> None:
    store, app = webapp
    with pytest.raises(Invalid) as caught:
        resolve(app, 1, store, given=given, multiplicities=multiplicities)
    assert caught.value.message.startswith(message)


def test_a_multiplicity_given_on_the_command_line_is_bounded_too(
    webapp: tuple[Store, ApplicationModule],
) -> None:
    store, app = webapp
    with pytest.raises(Invalid) as caught:
        resolve(app, 1, store, multiplicities={"web": MAX_MULTIPLICITY + 1})
    assert caught.value.message == (
        f"command line: web:multiplicity: must be at most {MAX_MULTIPLICITY}, "
        f"not {MAX_MULTIPLICITY + 1}"
    )
    plan = resolve(app, 1, store, multiplicities={"web": MAX_MULTIPLICITY})
    assert plan.nodes["web"].multiplicity == MAX_MULTIPLICITY


def test_zero_instances_and_more_failures_than_instances_are_allowed(
    webapp: tuple[Store, ApplicationModule],
) -> None:
    store, _ = webapp
    app = application(
        store,
        "examples/webapp",
        WEBAPP_APP.replace("max-provisioning-failures: 0", "max-provisioning-failures: 5"),
    )
    plan = resolve(app, 2, store, multiplicities={"test": 0, "web": 1})
    assert plan.nodes["test"].multiplicity == 0
    assert plan.nodes["web"].multiplicity == 1
    assert plan.nodes["web"].max_provisioning_failures == 5
    assert plan.application_version == 2


def test_a_lookup_is_asked_once_per_module(webapp: tuple[Store, ApplicationModule]) -> None:
    store, app = webapp
    asked: list[tuple[str, int | None]] = []

    def counting(path: str, version: int | None) -> tuple[Module, int]:
        asked.append((path, version))
        return store(path, version)

    resolve(app, 1, counting)
    assert len(asked) == len(set(asked)) == 5
