"""YAML that remembers where each key was written, for errors that point at the line.

PyYAML turns a document into plain values and forgets positions; it also keeps the last of two
equal keys without a word, so a node defined twice would silently replace the first one. This
module composes the node tree instead, builds the plain values itself, records the line of
every key by its dotted path (``nodes.web.parameters.db_host``) and refuses duplicate keys.

A :class:`Document` then reads those values with typed checks whose errors all have one shape,
``<file>:<line>: <dotted key path>: <what is wrong>``, raised as :class:`Invalid`. What is
built from a document keeps its file and lines and makes its errors the same way
(:class:`Located`).

Mapping keys are taken as written: ``on:`` is the key ``"on"`` and ``5432:`` the key
``"5432"``, not YAML 1.1's ``True`` and ``5432``, because every key in a module is a name.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from stratuslab.errors import Invalid

# Aliases let a small file expand into a huge value ("billion laughs"); modules are small.
_MAX_VALUES = 100_000
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"


def join(path: str, key: str) -> str:
    """The dotted path of ``key`` inside the value at ``path``."""
    return f"{path}.{key}" if path else key


def describe(value: object) -> str:
    """What a YAML value is, in the words an error message needs."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


class Located:
    """Something read from a YAML file that knows the line each key was written on."""

    file: str  # as errors name it
    lines: Mapping[str, int]  # dotted key path -> 1-based line

    def line(self, path: str) -> int:
        """The line of ``path``, or of its nearest enclosing key that was written (1 at worst):
        a missing key is reported where the mapping that lacks it starts."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path.rpartition(".")[0]
        return 1

    def where(self, path: str) -> str:
        """``<file>:<line>: <path>``, or ``<file>:<line>`` for the document as a whole."""
        place = f"{self.file}:{self.line(path)}"
        return f"{place}: {path}" if path else place

    def error(self, path: str, what: str, *, hint: str | None = None) -> Invalid:
        return Invalid(f"{self.where(path)}: {what}", hint=hint)


@dataclass(frozen=True)
class Document(Located):
    """A parsed YAML file: its plain value, and where each key and scalar was written."""

    file: str
    data: Any
    lines: dict[str, int] = field(default_factory=dict)  # dotted key path -> 1-based line
    texts: dict[str, str] = field(default_factory=dict)  # dotted key path -> scalar as written

    def check_keys(
        self,
        path: str,
        mapping: Mapping[str, Any],
        known: Collection[str],
        what: str,
        *,
        renamed: Mapping[str, str] | None = None,
        renamed_hint: str | None = None,
    ) -> None:
        """Refuse the first key of ``mapping`` not in ``known``. A key SlipStream spelled
        differently is refused with its new name, so that old modules are easy to port."""
        for key in mapping:
            if key in known:
                continue
            line = self.line(join(path, key))
            if renamed and key in renamed:
                raise Invalid(
                    f"{self.file}:{line}: {key!r} is now called {renamed[key]!r}",
                    hint=renamed_hint,
                )
            raise Invalid(
                f"{self.file}:{line}: unknown key {key!r} in {what} "
                f"(known: {', '.join(sorted(known))})"
            )

    def mapping(self, path: str, value: Any) -> dict[str, Any]:
        """``value`` as a mapping; an empty key (``inputs:``) is an empty mapping."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(path, f"must be a mapping, not {describe(value)}")
        return value

    def text(self, path: str, value: Any, *, empty: bool = True) -> str:
        """``value`` as text. Numbers and booleans are refused rather than converted: YAML
        reads ``0755`` as 493 and ``yes`` as true, and a silent conversion would hide that."""
        if isinstance(value, str):
            if not empty and not value.strip():
                raise self.error(path, "must not be empty")
            return value
        hint = None
        if path in self.texts and isinstance(value, bool | int | float):
            hint = f"quote it: {path.rpartition('.')[2]}: {self.texts[path]!r}"
        raise self.error(path, f"must be text, not {describe(value)}", hint=hint)

    def count(self, path: str, value: Any) -> int:
        """``value`` as a whole number, 0 or more (``true`` is not a number here)."""
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(path, f"must be a whole number, not {describe(value)}")
        if value < 0:
            raise self.error(path, f"must be 0 or more, not {value}")
        return value


def load(text: str, *, file: str) -> Document:
    """Parse ``text`` (the content of ``file``, named in errors) into a :class:`Document`."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise Invalid(f"{file}:{line}: not valid YAML: {_problem(exc)}") from None
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        raise Invalid(f"{file}:{line}: not valid YAML: {exc.reason}") from None
    except RecursionError:
        raise Invalid(f"{file}:1: not valid YAML: nested too deeply") from None
    if root is None:
        return Document(file, None)
    builder = _Builder(file)
    data = builder.value(root, "")
    return Document(file, data, builder.lines, builder.texts)


def _problem(exc: yaml.MarkedYAMLError) -> str:
    if exc.context and exc.problem:
        return f"{exc.problem} ({exc.context})"
    return exc.problem or exc.context or "malformed"


class _Builder:
    """Turns a composed node tree into plain values, recording lines and refusing duplicates."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.lines: dict[str, int] = {}
        self.texts: dict[str, str] = {}
        self.constructor = SafeConstructor()
        self.budget = _MAX_VALUES
        self.active: set[int] = set()  # collections being built: an alias to one is a loop

    def fail(self, node: Node, what: str) -> Invalid:
        return Invalid(f"{self.file}:{node.start_mark.line + 1}: {what}")

    def value(self, node: Node, path: str) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise self.fail(node, "the document is too large once its aliases are expanded")
        if isinstance(node, ScalarNode):
            self.texts.setdefault(path, node.value)
            try:
                return self.constructor.construct_object(node)
            except yaml.constructor.ConstructorError as exc:
                raise self.fail(node, f"{exc.problem}") from None
        if node.tag not in (_MAP_TAG, _SEQ_TAG):
            raise self.fail(node, f"the tag {node.tag!r} is not supported here")
        if id(node) in self.active:
            raise self.fail(node, "an alias refers to a value that contains it")
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return [self.item(item, join(path, str(i))) for i, item in enumerate(node.value)]
            assert isinstance(node, MappingNode)
            return self.mapping(node, path)
        finally:
            self.active.discard(id(node))

    def item(self, node: Node, path: str) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        return self.value(node, path)

    def mapping(self, node: MappingNode, path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE_TAG:
                raise self.fail(key_node, "merge keys ('<<') are not supported")
            if not isinstance(key_node, ScalarNode):
                raise self.fail(key_node, "a key must be plain text, not a list or a mapping")
            key = key_node.value
            key_path = join(path, key)
            if key in first:
                raise Invalid(
                    f"{self.file}:{line}: {key_path}: defined twice (first on line {first[key]})",
                    hint="a key may appear once in a mapping; remove or rename one of them",
                )
            first[key] = line
            self.lines.setdefault(key_path, line)
            out[key] = self.value(value_node, key_path)
        return out
