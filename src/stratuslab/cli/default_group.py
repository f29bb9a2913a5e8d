"""A command group whose first argument, when it names no subcommand, goes to a default one:
`snapshot NAME` takes a snapshot, `snapshot list|restore|delete ...` does the rest."""

from __future__ import annotations

from typing import Any

import click


class DefaultGroup(click.Group):
    """A group that runs ``default`` when the first argument is not one of its commands."""

    def __init__(self, *args: Any, default: str = "create", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.default = default

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = [self.default, *args]
        return super().parse_args(ctx, args)
