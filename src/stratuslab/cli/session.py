"""`stratus login`, `stratus logout`, `stratus whoami`: the CLI's own session on a server.

A login opens a session through SlipStream's session resource (``POST /api/session``) and
keeps its cookie in the user's credentials file (``cli/credfile.py``, mode 0600), filed under
the server's URL; later commands to that URL send it (``cli/runtime.py`` says in which order
the credentials are chosen). Logging out ends the session on the server and forgets it here.
"""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import urlsplit

import click

from stratuslab.cli import credfile
from stratuslab.cli.output import emit_json, err, out, output_option, table
from stratuslab.cli.passwords import password_stdin_option, required_password
from stratuslab.cli.runtime import Runtime, pass_runtime
from stratuslab.errors import (
    BackendError,
    BackendUnavailable,
    Invalid,
    NotFound,
    StratusError,
    Unauthorized,
)

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@click.command("login")
@click.option(
    "--server", metavar="URL", help="the server (default: the configured one, else local)"
)
@click.option("--user", "name", metavar="NAME", help="your user name (default: setting `user`)")
@password_stdin_option
@output_option
@pass_runtime
def login(
    rt: Runtime, server: str | None, name: str | None, password_stdin: bool, output: str
) -> None:
    """Log in with your password; the session is kept for this server until it expires."""
    url = _url(server) if server else rt.server_url
    name = name or rt.settings.user
    path = rt.settings.credentials_file
    previous = credfile.find(path, url)  # refuses a file others may read, before anything else
    if urlsplit(url).scheme == "http" and urlsplit(url).hostname not in _LOOPBACK:
        err.print(
            f"warning: {url} is plain HTTP: the password and the session cross the network "
            "in clear (use https://)",
            markup=False,
            highlight=False,
        )
    password = required_password(
        stdin=password_stdin, confirm=False, prompt=f"Password for {name} on {url}"
    )
    opened = rt.client_for(url).login(name, password)
    login = credfile.Login(url, name, opened["session"], opened["cookie"], opened["expires"])
    credfile.save(path, login)
    if previous is not None and previous.session != login.session:
        # The session this one replaces is ended, not left open until it expires (unless it
        # has already).
        with contextlib.suppress(StratusError):
            rt.client_for(url, cookie=previous.cookie).logout(previous.session)
    if output == "json":
        emit_json(_login_view(login, path))
        return
    until = f" until {login.expires:%Y-%m-%d %H:%M} UTC" if login.expires else ""
    out.print(f"Logged in to {url} as {name}{until}.", markup=False, highlight=False)
    if url != rt.server_url:
        err.print(
            f"Commands talk to {rt.server_url}: set STRATUS_SERVER_URL={url} (or `server_url` "
            "in the configuration) to use this login.",
            markup=False,
            highlight=False,
        )


@click.command("logout")
@click.option(
    "--server", metavar="URL", help="the server (default: the configured one, else local)"
)
@output_option
@pass_runtime
def logout(rt: Runtime, server: str | None, output: str) -> None:
    """End your session on the server and forget it here."""
    url = _url(server) if server else rt.server_url
    path = rt.settings.credentials_file
    login = credfile.find(path, url)
    if login is None:
        if output == "json":
            emit_json({"server": url, "logged_out": False})
        else:
            err.print(f"Not logged in to {url}: nothing to do.", markup=False, highlight=False)
        return
    ended = "ended"
    try:
        rt.client_for(url, cookie=login.cookie).logout(login.session)
    except (Unauthorized, NotFound):
        ended = "had ended already"
    except BackendError as exc:
        credfile.forget(path, url)
        raise BackendUnavailable(
            f"{exc.message}: the login was forgotten here, but its session stays open on the "
            "server until it expires",
            hint=exc.hint,
        ) from exc
    credfile.forget(path, url)
    if output == "json":
        emit_json({"server": url, "user": login.user, "session": login.session, "logged_out": True})
    else:
        out.print(
            f"Logged out of {url} ({login.user}); the session {ended}.",
            markup=False,
            highlight=False,
        )


@click.command("whoami")
@output_option
@pass_runtime
def whoami(rt: Runtime, output: str) -> None:
    """Who the server takes you for, and by which credential."""
    client = rt.client
    me = client.whoami()
    me = me | {"server": rt.server_url, "credential": client.credential}
    login = credfile.find(rt.settings.credentials_file, rt.server_url)
    if client.credential == "session" and login is not None:
        me["login"] = _login_view(login, rt.settings.credentials_file)
    if output == "json":
        emit_json(me)
        return
    rows = [
        ("user", me["user"]),
        ("role", "administrator" if me["admin"] else "user"),
        ("groups", ", ".join(me["groups"]) or "none"),
        ("authenticated by", _how(me)),
        ("server", me["server"]),
    ]
    if me["acting_as"]:
        rows.insert(1, ("acting for", f"{me['authenticated_as']} (administrator)"))
    table(None, ("", ""), rows)


def _how(me: dict[str, Any]) -> str:
    login = me.get("login")
    if me["authenticated_by"] == "session" and login:
        until = f", until {login['expires']}" if login["expires"] else ""
        return f"session {me['session']} (kept in {login['file']}{until})"
    described = {
        "site-token": "the site token (this host's administrator)",
        "api-key": "an API key",
        "password": "a password",
        "session": f"session {me['session']}",
    }
    return described.get(me["authenticated_by"], str(me["authenticated_by"]))


def _login_view(login: credfile.Login, path: Any) -> dict[str, Any]:
    return {
        "server": login.server,
        "user": login.user,
        "session": login.session,
        "expires": login.expires.isoformat() if login.expires else None,
        "file": str(path),
    }


def _url(value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid(f"--server {value!r}: use http://host:port or https://host:port")
    return credfile.server_key(value)
