"""What a CLI invocation needs, made on first use so that `stratus --help` stays fast.

The credential a client sends is chosen here, first found first:

1. the token setting (``STRATUS_TOKEN``, or ``token`` in the configuration file): the site
   token, or an API key in its bearer form ``<id>.<secret>``;
2. the login kept for this server URL by ``stratus login`` (``cli/credfile.py``);
3. for the local server only, the site token in ``<data_dir>/api-token``, when this user can
   read it (the host-local administrator).

``X-Stratus-User`` is sent only when asked for (``stratus --user NAME``, or ``STRATUS_USER``):
an administrator acting as someone else.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any

import click

from stratuslab.api.client import ApiClient, Response, Transport, is_api_key
from stratuslab.api.identity import ServerIdentity
from stratuslab.cli import credfile
from stratuslab.errors import BackendError, BackendUnavailable, Unauthorized

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from stratuslab.api.daemon import Started
    from stratuslab.config import Settings

IDLE_EXIT = 300.0  # a server started on demand exits after this long with nothing to do


class Runtime:
    def __init__(
        self,
        *,
        debug: bool = False,
        act_as: str | None = None,
        transports: Callable[[str], Transport] | None = None,
    ) -> None:
        self.debug = debug
        self.act_as = act_as  # --user / STRATUS_USER: the user an administrator acts as
        self.transports = transports  # tests: the transport to each server URL

    @cached_property
    def settings(self) -> Settings:
        from stratuslab import config

        return config.load()

    @cached_property
    def engine(self) -> Engine:
        """The store, for the site commands that work on this host directly."""
        from stratuslab.db.session import engine_for

        return engine_for(self.settings.database_url)

    @property
    def server_url(self) -> str:
        """The server the commands talk to: the configured one, else the local one."""
        return credfile.server_key(self.settings.server_url or self.settings.local_server_url)

    @cached_property
    def client(self) -> ApiClient:
        """The API: the configured server, or the local one, started on first need; with the
        credential chosen for it (see the module's docstring)."""
        settings = self.settings
        url = self.server_url
        local = not settings.server_url
        token, cookie = settings.token, ""
        if not token:
            login = credfile.find(settings.credentials_file, url)
            if login is not None:
                if login.expired():
                    raise Unauthorized(
                        f"your session on {url} as {login.user} ended at "
                        f"{login.expires:%Y-%m-%d %H:%M} UTC",
                        hint=f"log in again: `stratus login{'' if local else ' --server ' + url}`",
                    )
                cookie = login.cookie
        return self.client_for(url, token=token, cookie=cookie, site_token=local and not cookie)

    def client_for(
        self, url: str, *, token: str = "", cookie: str = "", site_token: bool = False
    ) -> ApiClient:
        """A client of the server at ``url`` sending the credential given (``site_token``: the
        local server's, read from its file once the server runs)."""
        transport = self.transports(url) if self.transports is not None else None
        if (
            url == credfile.server_key(self.settings.local_server_url)
            and not self.settings.server_url
        ):
            return LocalClient(
                self.settings,
                token=token,
                cookie=cookie,
                site_token=site_token and not token,
                user=self.act_as,
                transport=transport,
            )
        return ApiClient(url, token=token, cookie=cookie, user=self.act_as, transport=transport)

    def close(self) -> None:
        if "client" in self.__dict__:
            self.client.close()


class LocalClient(ApiClient):
    """The client of the local server. Before its first request it makes sure the server
    runs this CLI's code and, when this user can read the site token, that it holds it: with
    none running it starts one (which exits by itself once idle); one of another build (left
    by another checkout) it replaces by one of this build, in the same mode; then the server
    must prove it holds the token before it is sent anything, a password or a session
    included. When the server answers, runs this build and proves it, that costs one round
    trip."""

    def __init__(
        self,
        settings: Settings,
        *,
        token: str = "",
        cookie: str = "",
        site_token: bool = True,
        user: str | None = None,
        transport: Transport | None = None,
    ) -> None:
        self.settings = settings
        super().__init__(
            settings.local_server_url, token=token, cookie=cookie, user=user, transport=transport
        )
        self.sends_site_token = site_token  # the site token is this client's credential
        self._site = ""  # the site token, once read: what the server must prove it holds
        self.started_server = False  # this command started the server (rather than finding it)

    @property
    def credential(self) -> str:
        if self.sends_site_token and not self._token:  # read once the server runs, if readable
            return "site token" if self.verified is None else "nothing"
        return super().credential

    @property
    def _proof_token(self) -> str:
        return self._site

    def verify(self) -> ServerIdentity:
        from stratuslab import build
        from stratuslab.api import daemon

        mine = build.build_id(cache=daemon.build_cache(self.settings))
        self._site = self._site_token()
        try:
            found = self.identify()
        except BackendError:
            found = None  # hung, still starting or not ours: sorted out under the start lock
        if found is not None and found.build == mine:
            return self._trust(found)
        started = daemon.start(self.settings, idle_exit=IDLE_EXIT, build=mine)
        self.started_server = started.outcome == "started"
        _announce(started, mine)
        self._site = self._site_token()  # a server started first makes it
        found = self.identify()
        if found is None:
            raise BackendUnavailable(f"the StratusLab server on {self.base_url} went away")
        if found.build != mine:
            raise BackendError(
                f"the server started on {self.base_url} runs build {found.build}, "
                f"not this CLI's {mine}",
                hint=f"is its code changing under it? see {daemon.log_file(self.settings)}",
            )
        return self._trust(found)

    def unproven_hint(self) -> str:
        return (
            f"something may be posing as the local server; the site token is in "
            f"{self.settings.token_file}"
        )

    def _trust(self, found: ServerIdentity) -> ServerIdentity:
        """With a site token to check it with, the server must prove it holds it; without
        (a user who cannot read it), there is nothing to check it with."""
        if self.sends_site_token:
            self._token = self._site  # none readable: nothing is sent, and the server says 401
        if self._site:
            return self.accept(found)
        self.verified = found
        return found

    def _site_token(self) -> str:
        """The site token: the token setting when it is one (not an API key), else the file's,
        if this user may read it."""
        explicit = self.settings.token
        if explicit and not is_api_key(explicit):
            return explicit
        try:
            return self.settings.token_file.read_text().strip()
        except OSError:
            return ""

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
