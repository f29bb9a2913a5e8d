"""What a CLI invocation needs, made on first use so that `stratus --help` stays fast."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

import click

from stratuslab.api.client import ApiClient, Response
from stratuslab.api.identity import ServerIdentity
from stratuslab.errors import BackendError, BackendUnavailable

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from stratuslab.api.daemon import Started
    from stratuslab.config import Settings

IDLE_EXIT = 300.0  # a server started on demand exits after this long with nothing to do


class Runtime:
    def __init__(self, *, debug: bool = False) -> None:
        self.debug = debug

    @cached_property
    def settings(self) -> Settings:
        from stratuslab import config

        return config.load()

    @cached_property
    def engine(self) -> Engine:
        """The store, for the site commands that work on this host directly."""
        from stratuslab.db.session import engine_for

        return engine_for(self.settings.database_url)

    @cached_property
    def client(self) -> ApiClient:
        """The API: the configured server, or the local one, started on first need."""
        settings = self.settings
        if settings.server_url:
            return ApiClient(settings.server_url, token=settings.token, user=settings.user)
        return LocalClient(settings)

    def close(self) -> None:
        if "client" in self.__dict__:
            self.client.close()


class LocalClient(ApiClient):
    """The client of the local server. Before its first request it makes sure the server
    runs this CLI's code and holds the site token: with none running it starts one (which
    exits by itself once idle); one of another build (left by another checkout) it replaces
    by one of this build, in the same mode; then the server must prove it holds the token.
    When the server answers, runs this build and proves it, that costs one round trip."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__(settings.local_server_url, token="", user=settings.user)
        self.started_server = False  # this command started the server (rather than finding it)

    def verify(self) -> ServerIdentity:
        from stratuslab import build
        from stratuslab.api import daemon

        mine = build.build_id(cache=daemon.build_cache(self.settings))
        self._token = daemon.read_token(self.settings)
        try:
            found = self.identify()
        except BackendError:
            found = None  # hung, still starting or not ours: sorted out under the start lock
        if found is not None and found.build == mine:
            return self.accept(found)
        started = daemon.start(self.settings, idle_exit=IDLE_EXIT, build=mine)
        self.started_server = started.outcome == "started"
        _announce(started, mine)
        self._token = daemon.read_token(self.settings)  # a server started first makes it
        found = self.identify()
        if found is None:
            raise BackendUnavailable(f"the StratusLab server on {self.base_url} went away")
        if found.build != mine:
            raise BackendError(
                f"the server started on {self.base_url} runs build {found.build}, "
                f"not this CLI's {mine}",
                hint=f"is its code changing under it? see {daemon.log_file(self.settings)}",
            )
        return self.accept(found)

    def unproven_hint(self) -> str:
        return (
            f"something may be posing as the local server; the site token is in "
            f"{self.settings.token_file}"
        )

    def _send(self, method: str, path: str, **options: Any) -> Response:
        if self.verified is None:
            self.verify()
        return super()._send(method, path, **options)


def _announce(started: Started, mine: str) -> None:
    """One line on stderr when this command started or replaced the server."""
    from stratuslab.cli.output import err

    state = started.state
    mode = (
        f"it exits after {state.idle_exit:.0f} s idle"
        if state.idle_exit
        else "it runs until stopped"
    )
    if started.outcome == "started":
        err.print(
            f"[dim]started the StratusLab server on {state.url} (pid {state.pid}); {mode}[/dim]"
        )
    elif started.outcome == "replaced" and started.previous is not None:
        err.print(
            f"[dim]replaced the StratusLab server on {state.url} of build "
            f"{started.previous.build or 'unknown'} (pid {started.previous.pid}) by one of "
            f"this CLI's build {mine} (pid {state.pid}); {mode}[/dim]"
        )


pass_runtime = click.make_pass_decorator(Runtime, ensure=True)
