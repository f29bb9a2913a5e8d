"""How the CLI shows things: tables for people, JSON for machines, progress on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from rich.console import Console


class _LazyConsole:
    """A Rich console made on first use: importing Rich costs time the CLI should spend
    waiting for the server, not before sending its request."""

    def __init__(self, *, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr, soft_wrap=True)
        return getattr(self._console, name)


out: Any = _LazyConsole(stderr=False)
err: Any = _LazyConsole(stderr=True)


F = TypeVar("F", bound=Callable[..., Any])


def output_option(command: F) -> F:
    """``-o/--output table|json``: tables for people, JSON on stdout for machines."""
    return click.option(
        "-o",
        "--output",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
        envvar="STRATUS_OUTPUT",
        help="table for people, json for machines",
    )(command)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=_default) + "\n")


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A table for people. Cells are plain text, never markup (a cell may hold what a node
    or a user wrote); pass a ``rich.text.Text`` for a styled cell."""
    from rich.table import Table
    from rich.text import Text

    grid = Table(title=title, title_justify="left", header_style="bold", box=None, pad_edge=False)
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*(cell if isinstance(cell, Text) else plain(cell) for cell in row))
    out.print(grid)


def plain(value: Any) -> Any:
    """``value`` as text Rich prints as it is."""
    from rich.text import Text

    return Text("" if value is None else str(value))


def escaped(value: Any) -> str:
    """``value`` for a string that also holds markup: its brackets are not read as tags."""
    from rich.markup import escape

    return escape("" if value is None else str(value))


def age(moment: datetime | str | None) -> str:
    """'3 s', '5 min', '2 h', '4 d' ago."""
    if moment is None:
        return ""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    seconds = max((datetime.now(UTC) - moment).total_seconds(), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


def progress_lines(quiet: bool) -> Callable[[str], None]:
    """A sink for progress messages: on stderr, so that stdout stays clean for results."""
    if quiet:
        return lambda _message: None
    return lambda message: err.print(f"[dim]{_clock()}[/dim] {message}", highlight=False)


def _clock() -> str:
    return datetime.now().strftime("%H:%M:%S")


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return str(value)
