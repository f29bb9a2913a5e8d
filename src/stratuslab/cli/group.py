"""`stratus group`: groups of users. Administrators make them and change who is in them;
members see the groups they belong to."""

from __future__ import annotations

from typing import Any

import click

from stratuslab.cli.output import emit_json, err, out, output_option, table
from stratuslab.cli.runtime import Runtime, pass_runtime


@click.group(name="group", no_args_is_help=True)
def group() -> None:
    """Manage groups of users (administrators), or see your own."""


@group.command("add")
@click.argument("name")
@click.option("-d", "--description", default="", help="what the group is for")
@output_option
@pass_runtime
def add(rt: Runtime, name: str, description: str, output: str) -> None:
    """Add the group NAME (administrators only)."""
    shown = rt.client.add_group(name, description=description)
    if output == "json":
        emit_json(shown)
    else:
        out.print(f"Added the group {shown['name']}.", markup=False, highlight=False)


@group.command("list")
@output_option
@pass_runtime
def list_groups(rt: Runtime, output: str) -> None:
    """Every group to an administrator; to anyone else, the groups they belong to."""
    groups = rt.client.groups()
    if output == "json":
        emit_json(groups)
    elif not groups:
        err.print("No groups.")
    else:
        table(
            None,
            ("NAME", "MEMBERS", "DESCRIPTION"),
            ((g["name"], ", ".join(g["members"]), g["description"]) for g in groups),
        )


@group.command("show")
@click.argument("name")
@output_option
@pass_runtime
def show(rt: Runtime, name: str, output: str) -> None:
    """A group and its members."""
    _print_group(rt.client.group(name), output)


@group.command("add-member")
@click.argument("name")
@click.argument("users", nargs=-1, required=True)
@output_option
@pass_runtime
def add_member(rt: Runtime, name: str, users: tuple[str, ...], output: str) -> None:
    """Add USERS to the group NAME (those already in it stay)."""
    shown: dict[str, Any] = {}
    for user in users:
        shown = rt.client.add_member(name, user)
    _print_group(shown, output)


@group.command("remove-member")
@click.argument("name")
@click.argument("users", nargs=-1, required=True)
@output_option
@pass_runtime
def remove_member(rt: Runtime, name: str, users: tuple[str, ...], output: str) -> None:
    """Remove USERS from the group NAME."""
    shown: dict[str, Any] = {}
    for user in users:
        shown = rt.client.remove_member(name, user)
    _print_group(shown, output)


def _print_group(found: dict[str, Any], output: str) -> None:
    if output == "json":
        emit_json(found)
        return
    table(
        None,
        ("", ""),
        [
            ("name", found["name"]),
            ("description", found["description"]),
            ("members", ", ".join(found["members"]) or "none"),
            ("created", found["created_at"]),
        ],
    )
