"""What a CLI invocation needs, made on first use so that `stratus --help` stays fast."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

import click

from stratuslab.api.client import ApiClient, Response
from stratuslab.errors import BackendUnavailable

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

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
    """The client of the local server. The first request that finds no server starts one
    (it exits by itself once idle), then is sent again: it never reached a server before."""

    def __init__(self, settings: Settings) -> None:
        from stratuslab.api.daemon import read_token

        self.settings = settings
        super().__init__(settings.local_server_url, token=read_token(settings), user=settings.user)
        self._started = False
        self.started_server = False  # this command started the server (rather than finding it)

    def _send(self, method: str, path: str, **options: Any) -> Response:
        try:
            return super()._send(method, path, **options)
        except BackendUnavailable:
            if self._started:
                raise
        from stratuslab.api import daemon
        from stratuslab.cli.output import err

        outcome, state = daemon.start(self.settings, idle_exit=IDLE_EXIT)
        self._started = True
        self.started_server = outcome == "started"
        if outcome == "started":
            err.print(
                f"[dim]started the StratusLab server on {state.url} (pid {state.pid}); "
                f"it exits after {IDLE_EXIT:.0f} s idle[/dim]"
            )
        self._headers["Authorization"] = f"Bearer {daemon.read_token(self.settings)}"
        return super()._send(method, path, **options)


pass_runtime = click.make_pass_decorator(Runtime, ensure=True)
