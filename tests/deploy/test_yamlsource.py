"""Reading a module's YAML: YAML 1.2's meanings, and the bounds on what one file may cost."""

from __future__ import annotations

import warnings

import pytest

from stratuslab.deploy import yamlsource
from stratuslab.deploy.model import ApplicationModule, ComponentModule, parse_module
from stratuslab.deploy.yamlsource import MAX_DEPTH, MAX_MODULE_BYTES, MAX_NODES, load
from stratuslab.errors import Invalid


def refused(text: str) -> Invalid:
    with pytest.raises(Invalid) as caught:
        load(text, file="x.yaml")
    return caught.value


def module_refused(text: str) -> Invalid:
    with pytest.raises(Invalid) as caught:
        parse_module(text, path="apps/x", file="apps/x.yaml")
    return caught.value


# -- YAML 1.2 -------------------------------------------------------------------------------


def test_words_yaml_1_1_took_for_booleans_are_text() -> None:
    module = parse_module(
        "kind: component\nparent: base\ndescription: yes\ninputs:\n"
        "  a: {default: on}\n  b: {default: no}\n  c: {default: off}\n  d: {default: y}\n",
        path="apps/x",
        file="apps/x.yaml",
    )
    assert isinstance(module, ComponentModule)
    assert module.description == "yes"
    assert [p.default for p in module.inputs.values()] == ["on", "no", "off", "y"]


def test_numbers_are_yaml_1_2_numbers() -> None:
    data = load("a: 010\nb: 0o10\nc: 1:20\nd: 0x1F\ne: =\n", file="x.yaml").data
    assert data == {"a": 10, "b": 8, "c": "1:20", "d": 31, "e": "="}


def test_a_multiplicity_with_a_leading_zero_is_decimal() -> None:
    module = parse_module(
        "kind: application\nnodes:\n  web:\n    component: w\n    multiplicity: 010\n",
        path="apps/x",
        file="apps/x/module.yaml",
    )
    assert isinstance(module, ApplicationModule) and module.nodes["web"].multiplicity == 10


def test_a_yaml_version_other_than_1_2_is_refused() -> None:
    error = refused("%YAML 1.1\n---\na: yes\n")
    assert error.message == "x.yaml:2: modules are YAML 1.2; this one says %YAML 1.1"
    assert load("%YAML 1.2\n---\na: yes\n", file="x.yaml").data == {"a": "yes"}
    assert refused("%YAML 1.3\n---\na: 1\n").message.startswith("x.yaml:1: not valid YAML: ")
    assert refused("a: 1\n...\n%YAML 1.3\n---\nb: 2\n").message.startswith("x.yaml:")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: 1\nb: !!int x\n", "x.yaml:2: 'x' cannot be read as 'tag:yaml.org,2002:int'"),
        ("a: !!float ''\n", "x.yaml:1: '' cannot be read as 'tag:yaml.org,2002:float'"),
        ("a: !!bool maybe\n", "x.yaml:1: 'maybe' cannot be read as 'tag:yaml.org,2002:bool'"),
        ("a:\n  b: 2001-13-45\n", "x.yaml:2: '2001-13-45' cannot be read as"),
        ("a: !!timestamp bad\n", "x.yaml:1: failed to construct timestamp"),
        ("a: *nowhere\n", "x.yaml:1: not valid YAML: found undefined alias 'nowhere'"),
        ("a: 1\n---\nb: 2\n", "x.yaml:2: not valid YAML: but found another document"),
    ],
)
def test_values_that_cannot_be_read_are_refused_at_their_line(text: str, message: str) -> None:
    assert refused(text).message.startswith(message)


def test_an_anchor_may_be_defined_again() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load("a: &x 1\nb: &x 2\nc: *x\n", file="x.yaml").data == {"a": 1, "b": 2, "c": 2}


# -- bounds ---------------------------------------------------------------------------------


def test_a_module_over_the_size_limit_is_refused_before_it_is_read() -> None:
    big = "kind: component\nparent: b\ndescription: " + "x" * 10_000_000 + "\n"
    error = module_refused(big)
    assert error.message == (
        f"apps/x.yaml: is {len(big)} bytes; a module is at most {MAX_MODULE_BYTES} bytes (256 KiB)"
    )


def test_the_size_limit_counts_bytes_not_characters() -> None:
    wide = "description: " + "é" * (MAX_MODULE_BYTES // 2)  # two bytes each
    assert refused(wide).message.startswith(f"x.yaml: is {len(wide.encode())} bytes")


@pytest.mark.parametrize("character", ["\ud800", "\x00", "\x07"])
def test_characters_yaml_does_not_allow_are_refused(character: str) -> None:
    # JSON can carry a lone surrogate to the server, which no encoder would take.
    error = refused(f"a: 1\nb: x{character}\n")
    assert error.message == "x.yaml:2: not valid YAML: special characters are not allowed"


def test_a_module_at_the_size_limit_is_read() -> None:
    start = "kind: component\nparent: b\nrecipes:\n  deployment: |\n"
    line = "    echo a line of a long recipe\n"
    text = start + line * ((MAX_MODULE_BYTES - len(start)) // len(line))
    assert MAX_MODULE_BYTES - len(line) < len(text) <= MAX_MODULE_BYTES
    module = parse_module(text, path="apps/x", file="apps/x.yaml")
    assert isinstance(module, ComponentModule) and module.recipes["deployment"].count("\n") > 7000


@pytest.mark.parametrize(
    "text",
    [
        "kind: component\nparent: b\nx: " + "[" * 400 + "]" * 400 + "\n",
        "kind: component\nparent: b\nx: " + "{a: " * 400 + "1" + "}" * 400 + "\n",
        "kind: component\nparent: b\n" + "".join("  " * i + f"k{i}:\n" for i in range(400)),
        "kind: component\nparent: b\nx:\n" + "".join("  " * i + "-\n" for i in range(1, 400)),
    ],
    ids=["flow-lists", "flow-mappings", "block-mappings", "block-lists"],
)
def test_a_module_nested_400_deep_is_refused_without_recursing(text: str) -> None:
    error = module_refused(text)
    assert error.message.endswith(f": nested more than {MAX_DEPTH} levels deep")
    assert error.message.startswith("apps/x.yaml:")


def test_the_depth_limit_is_exact() -> None:
    # The root mapping is level 1 and x's value level 2, so n brackets reach level n + 1.
    deepest = MAX_DEPTH - 1
    data = load("x: " + "[" * deepest + "]" * deepest + "\n", file="x.yaml").data
    for _ in range(deepest):
        assert isinstance(data, dict | list)
        data = data["x"] if isinstance(data, dict) else data[0]
    assert data == []
    too_deep = refused("x: " + "[" * (deepest + 1) + "]" * (deepest + 1))
    assert too_deep.message == f"x.yaml:1: nested more than {MAX_DEPTH} levels deep"


def test_an_alias_cannot_nest_a_value_deeper_than_the_limit() -> None:
    half = MAX_DEPTH - 4
    text = "a: &a " + "[" * half + "]" * half + "\nb: " + "[" * half + "*a" + "]" * half + "\n"
    assert refused(text).message == (
        f"x.yaml:1: nested more than {MAX_DEPTH} levels deep once aliases are expanded"
    )


def test_too_many_nodes_are_refused_as_they_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamlsource, "MAX_NODES", 50)
    # The root mapping, the key and the list are three nodes; each item one more.
    assert len(load("x: [" + "1, " * 47 + "]\n", file="x.yaml").data["x"]) == 47
    error = refused("x: [" + "1, " * 48 + "]\n")
    assert error.message == "x.yaml:1: more than 50 keys and values, the most a module may have"
    many = "".join(f"k{i}: v\n" for i in range(1000))
    assert refused(many).message.startswith("x.yaml:25: more than 50 keys and values")


def test_aliases_count_at_the_size_of_what_they_repeat(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamlsource, "MAX_NODES", 50)
    ten = "[" + ", ".join(["x"] * 10) + "]"
    assert load(f"a: &a {ten}\nb: [*a, *a, *a]\n", file="x.yaml").data["b"][2][9] == "x"
    error = refused(f"a: &a {ten}\nb: [*a, *a, *a, *a]\n")
    assert error.message == (
        "x.yaml:2: the document is too large once its aliases are expanded "
        "(more than 50 keys and values), the most a module may have"
    )


def test_the_node_limit_is_the_real_one_for_a_billion_laughs() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    error = refused("\n".join(lines) + "\n")
    assert f"(more than {MAX_NODES} keys and values)" in error.message
