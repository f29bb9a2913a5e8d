"""`stratus user`: accounts. An administrator adds, lists, disables and enables users; a user
reads their own account and changes their own password."""

from __future__ import annotations

from typing import Any

import click

from stratuslab.cli.output import age, emit_json, err, out, output_option, table
from stratuslab.cli.passwords import password_stdin_option, read_password, required_password
from stratuslab.cli.runtime import Runtime, pass_runtime


@click.group(name="user", no_args_is_help=True)
def group() -> None:
    """Manage user accounts (administrators), or your own password."""


@group.command("add")
@click.argument("name")
@click.option("--email", metavar="E", help="the user's email address")
@click.option("--admin", is_flag=True, help="an administrator: manages users and sees everything")
@password_stdin_option
@output_option
@pass_runtime
def add(
    rt: Runtime, name: str, email: str | None, admin: bool, password_stdin: bool, output: str
) -> None:
    """Add the user NAME. Their password is asked for twice (or read with --password-stdin);
    with neither a terminal nor --password-stdin they have none until `stratus user passwd`."""
    password = read_password(stdin=password_stdin, confirm=True, prompt=f"Password for {name}")
    shown = rt.client.add_user(name, email=email, admin=admin, password=password)
    if output == "json":
        emit_json(shown)
        return
    role = "administrator" if shown["admin"] else "user"
    out.print(f"Added the {role} {shown['name']}.", markup=False, highlight=False)
    if not shown["has_password"]:
        err.print(
            f"{shown['name']} has no password yet: `stratus user passwd {shown['name']}`",
            markup=False,
            highlight=False,
        )


@group.command("list")
@output_option
@pass_runtime
def list_users(rt: Runtime, output: str) -> None:
    """Every user (administrators only)."""
    users = rt.client.users()
    if output == "json":
        emit_json(users)
        return
    table(
        None,
        ("NAME", "EMAIL", "ROLE", "STATE", "GROUPS", "AGE"),
        (
            (
                u["name"],
                u["email"] or "",
                "admin" if u["admin"] else "user",
                _state(u),
                ", ".join(u["groups"]),
                age(u["created_at"]),
            )
            for u in users
        ),
    )


@group.command("show")
@click.argument("name")
@output_option
@pass_runtime
def show(rt: Runtime, name: str, output: str) -> None:
    """A user's account: your own, or anyone's to an administrator."""
    _print_user(rt.client.user(name), output)


@group.command("disable")
@click.argument("name")
@output_option
@pass_runtime
def disable(rt: Runtime, name: str, output: str) -> None:
    """Disable NAME: their password, API keys and sessions stop working at once."""
    _print_user(rt.client.set_user_disabled(name, True), output)


@group.command("enable")
@click.argument("name")
@output_option
@pass_runtime
def enable(rt: Runtime, name: str, output: str) -> None:
    """Enable NAME again (they log in again: their sessions ended when disabled)."""
    _print_user(rt.client.set_user_disabled(name, False), output)


@group.command("passwd")
@click.argument("name", required=False)
@password_stdin_option
@output_option
@pass_runtime
def passwd(rt: Runtime, name: str | None, password_stdin: bool, output: str) -> None:
    """Change your password, or (an administrator) NAME's. The new one is asked for twice."""
    if name is None:
        name = rt.client.whoami()["user"]
    password = required_password(
        stdin=password_stdin, confirm=True, prompt=f"New password for {name}"
    )
    shown = rt.client.set_password(name, password)
    if output == "json":
        emit_json(shown)
    else:
        out.print(f"Changed the password of {shown['name']}.", markup=False, highlight=False)


def _print_user(user: dict[str, Any], output: str) -> None:
    if output == "json":
        emit_json(user)
        return
    table(
        None,
        ("", ""),
        [
            ("name", user["name"]),
            ("email", user["email"] or ""),
            ("role", "administrator" if user["admin"] else "user"),
            ("state", _state(user)),
            ("groups", ", ".join(user["groups"]) or "none"),
            ("password", "set" if user["has_password"] else "none"),
            ("created", user["created_at"]),
        ],
    )


def _state(user: dict[str, Any]) -> str:
    return "disabled" if user["disabled"] else "enabled"
