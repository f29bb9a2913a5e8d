"""How the CLI asks for a password: from stdin when told (``--password-stdin``, for scripts),
else at the terminal without echo. Never from an argument, which other users see in ``ps``."""

from __future__ import annotations

import sys

import click

from stratuslab.errors import Invalid

_READ_AT_MOST = 64 * 1024  # characters read from stdin: far over any password the server takes


def password_stdin_option(command: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--password-stdin",
        is_flag=True,
        help="read the password from stdin (its first line) instead of asking for it",
    )(command)


def read_password(*, stdin: bool, confirm: bool, prompt: str = "Password") -> str | None:
    """The password: the first line of stdin with ``stdin``; else asked at the terminal
    (twice with ``confirm``); None when there is no terminal to ask at. An empty password is
    refused."""
    if stdin:
        text = sys.stdin.read(_READ_AT_MOST)
        password = text.split("\n", 1)[0].removesuffix("\r")
        if not password:
            raise Invalid("the password read from stdin is empty")
        return password
    if not sys.stdin.isatty():
        return None
    import getpass

    password = getpass.getpass(f"{prompt}: ")
    if not password:
        raise Invalid("an empty password is not a password")
    if confirm and getpass.getpass(f"{prompt} (again): ") != password:
        raise Invalid("the two passwords differ: nothing was changed")
    return password


def required_password(*, stdin: bool, confirm: bool, prompt: str = "Password") -> str:
    found = read_password(stdin=stdin, confirm=confirm, prompt=prompt)
    if found is None:
        raise click.UsageError("there is no terminal to ask for the password: use --password-stdin")
    return found
