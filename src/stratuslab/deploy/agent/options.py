"""The tools' command lines: a parser with argparse's vocabulary and none of its imports.

argparse (and getopt) import ``re`` and ``gettext``, ~12 ms that every ss-get and ss-set would
pay, in a path measured in milliseconds.
"""

from __future__ import annotations

from .exits import INVALID, OK, USAGE, ToolError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing; mypy knows the name
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

KEY_HELP = "node.i:param, node:param, ss:param or param (own)"


class Arguments:
    """A parsed command line: an attribute per option and positional (``types`` is ~0.3 ms)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


class ToolParser:
    """Options (``--name VALUE``, ``--name=VALUE``, ``-s N``, ``-sN``) with aliases and
    converters, flags (``-vv`` gives one twice), ``--`` (what follows are words), and
    positionals (a trailing ``?``, ``+`` or ``*`` in the name gives how many). Every tool takes
    SlipStream's ``-v``/``--verbose``, which changes nothing here. Usage errors are one-line
    ``ToolError(USAGE)`` like every other error.
    """

    def __init__(self, prog: str, description: str) -> None:
        self.prog, self.description = prog, description
        self.flags: dict[str, str] = {}  # option -> attribute
        self.options: dict[str, str] = {}  # option -> attribute
        self.defaults: dict[str, Any] = {}  # attribute -> its value when not given
        self.types: dict[str, Callable[[str], Any]] = {}  # attribute -> converter of the text
        self.positionals: list[tuple[str, str]] = []  # (attribute, "", "?", "+" or "*")
        self.lines: list[str] = []
        self.add_argument("-v", "--verbose", action="store_true", help="accepted; no effect")

    def add_argument(
        self,
        *names: str,
        action: str = "",
        default: str | None = None,
        dest: str = "",
        nargs: str = "",
        type: Callable[[str], Any] | None = None,
        help: str = "",
    ) -> None:
        attribute = dest or names[-1].lstrip("-").replace("-", "_")
        shown = ", ".join(names)
        if not names[0].startswith("-"):
            self.positionals.append((attribute, nargs))
        elif action == "store_true":
            self.flags.update(dict.fromkeys(names, attribute))
            self.defaults[attribute] = False
        else:
            self.options.update(dict.fromkeys(names, attribute))
            self.defaults[attribute] = default
            shown += " VALUE"
        if type is not None:
            self.types[attribute] = type
        self.lines.append(f"  {shown:<20} {help}")

    def parse_args(self, argv: list[str]) -> Any:
        """The values of ``argv``, as attributes of one object (argparse's Namespace)."""
        values = dict(self.defaults)
        words: list[str] = []
        items = iter(argv)
        for item in items:
            if item == "--":  # what follows are words, even if they start with "-"
                words.extend(items)
            elif item == "-" or not item.startswith("-"):
                words.append(item)
            elif item in ("-h", "--help"):
                print(self.usage())
                raise SystemExit(OK)
            elif item in self.flags:
                values[self.flags[item]] = True
            elif item[1] != "-" and all(f"-{letter}" in self.flags for letter in item[1:]):
                values.update((self.flags[f"-{letter}"], True) for letter in item[1:])
            else:
                name, value = self._option(item, items)
                values[self.options[name]] = value
        for attribute, nargs in self.positionals:
            if nargs in ("+", "*"):
                if nargs == "+" and not words:
                    raise ToolError(USAGE, f"{attribute} is missing (see {self.prog} --help)")
                values[attribute], words = words, []
            elif words:
                values[attribute] = words.pop(0)
            elif nargs == "?":
                values[attribute] = None
            else:
                raise ToolError(USAGE, f"{attribute} is missing (see {self.prog} --help)")
        if words:
            raise ToolError(USAGE, f"too many arguments: {' '.join(words)}")
        for attribute, convert in self.types.items():
            if values[attribute] is not None:
                values[attribute] = convert(values[attribute])
        return Arguments(values)

    def usage(self) -> str:
        return "\n".join([f"usage: {self.prog} [OPTIONS] ...", self.description, *self.lines])

    def _option(self, item: str, items: Iterator[str]) -> tuple[str, str]:
        name, equals, value = item.partition("=")
        if name not in self.options and item[:2] in self.options and not item.startswith("--"):
            name, equals, value = item[:2], "=", item[2:]  # -s20
        if name not in self.options:
            raise ToolError(USAGE, f"unknown option {name} (see {self.prog} --help)")
        if equals:
            return name, value
        following: str | None = next(items, None)
        if following is None:
            raise ToolError(USAGE, f"{name} needs a value")
        return name, following


def seconds(text: str) -> float:
    """A ``--timeout``: seconds, 0 for no limit."""
    import math

    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise ToolError(INVALID, f"invalid timeout {text!r}: give seconds, 0 for no limit")
    return value


def size(text: str) -> int:
    """An ``ss-random -s``: a positive number."""
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise ToolError(INVALID, f"invalid size {text!r}: give a positive number")
    return int(text)


def wait_options(parser: ToolParser) -> None:
    """The options of the tools that wait for values to be set."""
    parser.add_argument("--timeout", default="60", type=seconds, help="seconds (0: for ever)")
    parser.add_argument("--noblock", action="store_true", help="do not wait: exit 1 if unset")


def ignore_abort_option(parser: ToolParser) -> None:
    parser.add_argument("--ignore-abort", action="store_true", help="work on an aborted run")


def secret_option(parser: ToolParser) -> None:
    parser.add_argument(
        "--secret",
        action="store_true",
        help="keep the value secret: masked in listings, redacted from logs (for good)",
    )
