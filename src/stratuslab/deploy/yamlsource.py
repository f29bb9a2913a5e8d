"""YAML that remembers where each key was written, for errors that point at the line.

Modules are YAML 1.2, read with ruamel.yaml: ``yes``, ``no``, ``on`` and ``off`` are text,
``0755`` is the number 755 (octal is written ``0o755``), ``1:20`` is text. ruamel's composer
gives every node its position; this module builds the plain values from those nodes, records
the line of every key by its dotted path (``nodes.web.parameters.db_host``) and refuses
duplicate keys with that path. (ruamel's own constructor refuses duplicates too, but its error
names neither the key's path nor where it was first written, and plain values keep no lines.)

A :class:`Document` then reads those values with typed checks whose errors all have one shape,
``<file>:<line>: <dotted key path>: <what is wrong>``, raised as :class:`Invalid`. What is
built from a document keeps its file and lines and makes its errors the same way
(:class:`Located`).

Mapping keys are taken as written: ``on:`` is the key ``"on"`` and ``5432:`` the key
``"5432"``, because every key in a module is a name.

What one module may make the reader do is bounded (see the ``MAX_`` constants), and the bounds
are checked as the text is read, before anything large is built: the CLI (check, push) and the
server (``POST /api/modules``) both come through here.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer, MaxDepthExceededError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError

from stratuslab.errors import Invalid

# A module is hand-written YAML: the largest in examples/ is 6 KiB, nearly all of it recipes.
# 256 KiB is forty times that; text is cheap to read, a tenth of a second at this size.
MAX_MODULE_BYTES = 256 * 1024
# Modules nest five levels (nodes.web.parameters.db_host: value); 32 leaves room for any layout
# and stops a pathological file long before Python's recursion limit.
MAX_DEPTH = 32
# Keys, values and collections, with an alias counted at the size of what it repeats (a
# "billion laughs" file expands a few lines into millions). Nodes are what costs: about 50 us
# of CPU each, so this bounds reading one module to about half a second. An application of
# 300 nodes, each with a component, a multiplicity and six mapped parameters, has about 5,000.
MAX_NODES = 10_000

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_VALUE_TAG = "tag:yaml.org,2002:value"  # YAML 1.1's "=", which YAML 1.2 reads as text


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
        reads ``0755`` as the number 755 and ``1.10`` as 1.1, and a silent conversion back to
        text would hide that."""
        if isinstance(value, str):
            if not empty and not value.strip():
                raise self.error(path, "must not be empty")
            return value
        hint = None
        if path in self.texts and isinstance(value, bool | int | float):
            hint = f"quote it: {path.rpartition('.')[2]}: {self.texts[path]!r}"
        raise self.error(path, f"must be text, not {describe(value)}", hint=hint)

    def count(self, path: str, value: Any, *, maximum: int | None = None) -> int:
        """``value`` as a whole number, 0 or more (``true`` is not a number here), and at
        most ``maximum`` if one is given."""
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(path, f"must be a whole number, not {describe(value)}")
        if value < 0:
            raise self.error(path, f"must be 0 or more, not {value}")
        if maximum is not None and value > maximum:
            raise self.error(path, f"must be at most {maximum}, not {value}")
        return value


def check_size(size: int, *, file: str) -> None:
    """Refuse a module of ``size`` bytes if it is over :data:`MAX_MODULE_BYTES`."""
    if size > MAX_MODULE_BYTES:
        raise Invalid(
            f"{file}: is {size} bytes; a module is at most {MAX_MODULE_BYTES} bytes "
            f"({MAX_MODULE_BYTES // 1024} KiB)",
            hint="a module describes what to deploy; ship large files in the image or fetch "
            "them in a recipe",
        )


def load(text: str, *, file: str) -> Document:
    """Parse ``text`` (the content of ``file``, named in errors) into a :class:`Document`."""
    # Characters never outnumber UTF-8 bytes: a text too long in characters is refused before
    # it is encoded, and one within the limit is cheap to encode. (A lone surrogate, which JSON
    # can carry, is counted here and refused by the reader as a character YAML does not allow.)
    size = len(text)
    if size <= MAX_MODULE_BYTES:
        size = len(text.encode("utf-8", "surrogatepass"))
    check_size(size, file=file)
    reader = YAML(typ="safe", pure=True)
    reader.Composer = _BoundedComposer
    reader.max_depth = MAX_DEPTH
    try:
        root = reader.compose(text)
    except _Refused as exc:
        raise Invalid(f"{file}:{_line(exc)}: {exc.problem}") from None
    except MaxDepthExceededError as exc:
        raise Invalid(
            f"{file}:{_line(exc)}: nested more than {MAX_DEPTH} levels deep",
            hint="a module needs about five (nodes.web.parameters.db_host: value)",
        ) from None
    except MarkedYAMLError as exc:
        raise Invalid(f"{file}:{_line(exc)}: not valid YAML: {_problem(exc)}") from None
    except ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        raise Invalid(f"{file}:{line}: not valid YAML: {exc.reason}") from None
    except (YAMLError, AssertionError) as exc:
        # ruamel.yaml checks some directives with assert (``%YAML 1.3``): still the text's fault.
        raise Invalid(f"{file}:1: not valid YAML: {exc}") from None
    if root is None:
        return Document(file, None)
    builder = _Builder(file, reader.constructor)
    data = builder.value(root, "", 1)
    return Document(file, data, builder.lines, builder.texts)


def _line(exc: MarkedYAMLError) -> int:
    mark = exc.problem_mark or exc.context_mark
    return int(mark.line) + 1 if mark else 1


def _problem(exc: MarkedYAMLError) -> str:
    if exc.context and exc.problem:
        return f"{exc.problem} ({exc.context})"
    return str(exc.problem or exc.context or "malformed")


class _Refused(MarkedYAMLError):
    """A bound this module sets, raised from inside the composer with the place it was hit."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem=problem, problem_mark=mark)


class _BoundedComposer(Composer):
    """ruamel's composer, counting the nodes it composes as it goes, so that a file with too
    many is refused before they are all built. An alias counts as the nodes it repeats; an
    alias inside the value it names (which would make a value that contains itself) is
    refused here, so that what is built is always a tree."""

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        self.warn_double_anchors = False  # YAML allows redefining an anchor; no warning
        self.left = MAX_NODES
        self.aliased = False
        self.sizes: dict[int, int] = {}  # id of an anchored node -> nodes it stands for

    def compose_document(self) -> Any:
        event = self.parser.peek_event()
        version = getattr(event, "version", None)
        if version is not None and tuple(version) != (1, 2):
            found = ".".join(map(str, version))
            raise _Refused(f"modules are YAML 1.2; this one says %YAML {found}", event.start_mark)
        return super().compose_document()

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        if isinstance(event, AliasEvent):
            node = super().compose_node(parent, index)
            size = self.sizes.get(id(node))
            if size is None:  # its anchor is still open: the alias is inside what it names
                raise _Refused("an alias refers to a value that contains it", node.start_mark)
            self.aliased = True
            self._spend(size, event.start_mark)
            return node
        before = self.left
        self._spend(1, event.start_mark)
        node = super().compose_node(parent, index)
        if node.anchor is not None:
            self.sizes[id(node)] = before - self.left
        return node

    def _spend(self, nodes: int, mark: Any) -> None:
        self.left -= nodes
        if self.left < 0:
            what = f"more than {MAX_NODES} keys and values"
            if self.aliased:
                what = f"the document is too large once its aliases are expanded ({what})"
            raise _Refused(f"{what}, the most a module may have", mark)


class _Builder:
    """Turns a composed node tree into plain values, recording lines and refusing duplicates.
    The composer has bounded the tree's size; depth is checked again here because an alias
    can put a deep value deeper still."""

    def __init__(self, file: str, constructor: Any) -> None:
        self.file = file
        self.constructor = constructor  # ruamel's, for scalars: it knows YAML 1.2's types
        self.lines: dict[str, int] = {}
        self.texts: dict[str, str] = {}

    def fail(self, node: Node, what: str) -> Invalid:
        return Invalid(f"{self.file}:{node.start_mark.line + 1}: {what}")

    def value(self, node: Node, path: str, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise self.fail(
                node, f"nested more than {MAX_DEPTH} levels deep once aliases are expanded"
            )
        tag = str(node.tag)
        if isinstance(node, ScalarNode):
            self.texts.setdefault(path, node.value)
            return self.scalar(node, tag)
        if tag not in (_MAP_TAG, _SEQ_TAG):
            raise self.fail(node, f"the tag {tag!r} is not supported here")
        if isinstance(node, SequenceNode):
            return [
                self.item(item, join(path, str(i)), depth + 1) for i, item in enumerate(node.value)
            ]
        assert isinstance(node, MappingNode)
        return self.mapping(node, path, depth)

    def scalar(self, node: ScalarNode, tag: str) -> Any:
        if tag == _VALUE_TAG:
            return node.value
        try:
            return self.constructor.construct_object(node)
        except MarkedYAMLError as exc:
            raise self.fail(node, str(exc.problem)) from None
        # An explicit tag on a value it does not fit (``!!int x``) fails in the constructor
        # with whatever Python raised; it is still the text's fault.
        except (ValueError, LookupError, TypeError):
            raise self.fail(node, f"{node.value!r} cannot be read as {tag!r}") from None

    def item(self, node: Node, path: str, depth: int) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        return self.value(node, path, depth)

    def mapping(self, node: MappingNode, path: str, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if str(key_node.tag) == _MERGE_TAG:
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
            out[key] = self.value(value_node, key_path, depth + 1)
        return out
