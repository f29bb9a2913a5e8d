"""Running the server: uvicorn in the foreground, optionally exiting when idle.

It listens twice, on one port: plain HTTP on ``server_host`` (loopback) for the CLI, whose
requests prove the server's identity by the site token (``api/identity.py``), and HTTPS on the
bridge gateway for the nodes, with the site certificate whose CA each node's user-data carries
(``cloud/sitecert.py``): a neighbour on the bridge can neither pose as the server nor read a
node's token. A server the CLI starts on demand exits after ``idle_exit`` seconds with no
request in flight and no background work, so that nothing lingers; one a site administrator
starts runs until stopped.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import uvicorn
from fastapi import FastAPI

from stratuslab import __version__, build
from stratuslab.api import tls
from stratuslab.api.app import create_app
from stratuslab.cloud import sitecert
from stratuslab.config import Settings
from stratuslab.errors import BackendUnavailable, Conflict, Invalid

log = logging.getLogger("stratuslab.server")


def listen(host: str, port: int, *, shared: bool = False) -> socket.socket:
    """A listening TCP socket on ``host:port`` (OSError when it cannot bind). A ``shared``
    one (SO_REUSEPORT) binds beside the other processes of this user doing so: the kernel
    spreads new connections among them, and the survivors take them all when one dies."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    return sock


def listening_sockets(
    settings: Settings, *, host: str, port: int
) -> tuple[socket.socket, list[socket.socket]]:
    """The plain socket for the CLI, which must bind, and the TLS one for the nodes on the
    bridge gateway, skipped with a warning when this host does not have that address."""
    if host == settings.bridge_gateway:
        raise Invalid(
            f"setting server_host: {host} is the bridge gateway, where nodes are served over TLS",
            hint="keep the plain API on loopback (127.0.0.1)",
        )
    shared = shares_ports(settings)
    try:
        plain = listen(host, port, shared=shared)
    except OSError as exc:
        raise BackendUnavailable(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    try:
        return plain, [listen(settings.bridge_gateway, port, shared=shared)]
    except OSError as exc:
        log.warning(
            "not listening on %s:%s (%s): nodes cannot reach this server",
            settings.bridge_gateway,
            port,
            exc.strerror,
        )
        return plain, []


class Server(uvicorn.Server):
    """uvicorn's server, with TLS listeners beside the plain ones, each with its own context
    (the nodes' on the bridge, the users' on ``tls_port``): one application, one lifespan, one
    graceful shutdown for all."""

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        tls_listeners: Sequence[tuple[socket.socket, ssl.SSLContext]] = (),
    ) -> None:
        super().__init__(config)
        self.tls_listeners = list(tls_listeners)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if not self.started:
            return
        config, loop = self.config, asyncio.get_running_loop()

        def protocol() -> asyncio.Protocol:
            made: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )
            return made

        for sock, context in self.tls_listeners:
            listener = await loop.create_server(
                protocol, sock=sock, ssl=context, backlog=config.backlog
            )
            self.servers.append(listener)  # closed and waited for by shutdown, as uvicorn's


def shares_ports(settings: Settings) -> bool:
    """Whether this server shares its ports with other processes of its store: when the site
    asks (``server_share_ports``, for several processes on one PostgreSQL; config.py refuses
    it on SQLite, where only one may run). Not by default: another server of this user on
    the same port, of another store, would take half of its connections."""
    return settings.server_share_ports and settings.database_path is None


def hold_the_store(settings: Settings) -> TextIO | None:
    """On SQLite, the lock that says a server process holds the store, held until this
    process exits (the file stays, the lock goes with the process, even killed); a second
    server is refused with what to do instead. None on PostgreSQL: processes share it."""
    path = settings.database_path
    if path is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = (path.parent / f"{path.name}.server-lock").open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "unknown"
        lock.close()
        raise Conflict(
            f"another server process (pid {holder}) holds the SQLite store {path}: "
            "one server process per SQLite store",
            hint="for several server processes, use PostgreSQL "
            "(database_url = postgresql+psycopg://USER:PASSWORD@HOST/DB)",
        ) from None
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def serve(settings: Settings, *, host: str, port: int, idle_exit: float = 0) -> None:
    # The build id of the code loaded now, before anything can change the files under us:
    # /health reports it, and a CLI of another build replaces this server.
    log.info("StratusLab %s, build %s, pid %d", __version__, build.running(), os.getpid())
    store_lock = hold_the_store(settings)
    plain, for_nodes = listening_sockets(settings, host=host, port=port)
    site = sitecert.ensure(settings)
    app = create_app(settings)
    activity = Activity(idle=idle_exit)
    app.state.activity = activity
    app.add_middleware(_CountRequests, activity=activity)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
        proxy_headers=False,  # nothing here sits behind a proxy; one layer less per request
        http=tls.protocol_class(),  # hands a TLS client certificate to the application
    )
    for_nodes_context = site.server_context()
    listeners = [(sock, for_nodes_context) for sock in for_nodes]
    if settings.tls_cert_file:
        listeners.append(users_https(settings))
    server = Server(config, tls_listeners=listeners)
    if idle_exit > 0:
        threading.Thread(
            target=_exit_when_idle, args=(app, server, activity), daemon=True, name="idle"
        ).start()
    pid_file = settings.data_dir / "server.pid"
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    recorded = _claim_pid_file(pid_file)
    try:
        server.run(sockets=[plain])
    finally:
        if recorded and pid_file.exists() and pid_file.read_text().strip() == str(os.getpid()):
            pid_file.unlink()
        if store_lock is not None:
            store_lock.close()


def _claim_pid_file(pid_file: Path) -> bool:
    """Record this process in the pid file, unless another live server of the data dir is
    recorded there (processes sharing a PostgreSQL store and the data dir): the CLI then
    stops only the recorded one, and never signals a process it did not record."""
    try:
        other = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        other = None
    if other is not None and other != os.getpid() and _running(other):
        return False
    pid_file.write_text(f"{os.getpid()}\n")
    return True


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def users_https(settings: Settings) -> tuple[socket.socket, ssl.SSLContext]:
    """The HTTPS listener for users (``tls_port``) and its context: the site's certificate for
    users, and their client certificates verified (``api/tls.py``)."""
    made = tls.context(
        cert_file=Path(settings.tls_cert_file),
        key_file=Path(settings.tls_key_file),
        client_ca_file=Path(settings.tls_client_ca_file) if settings.tls_client_ca_file else None,
        allow_proxies=settings.tls_allow_proxies,
    )
    host, port = settings.tls_host, settings.tls_port
    try:
        return listen(host, port, shared=shares_ports(settings)), made
    except OSError as exc:
        raise BackendUnavailable(f"cannot listen on {host}:{port}: {exc.strerror}") from exc


class Activity:
    """Requests in flight and the last moment one ended. ``idle`` > 0 for a server started on
    demand: it exits after that many seconds with nothing to do."""

    def __init__(self, *, idle: float) -> None:
        self.idle = idle
        self.idle_exit = idle  # the mode it was started in, which /health reports; idle may drop
        self.in_flight = 0
        self.last = time.monotonic()


class _CountRequests:
    """Counts requests until their last byte is sent (streams included)."""

    def __init__(self, app: Any, activity: Activity) -> None:
        self.app = app
        self.activity = activity

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.activity.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.activity.in_flight -= 1
            self.activity.last = time.monotonic()


def _exit_when_idle(app: FastAPI, server: uvicorn.Server, activity: Activity) -> None:
    while not server.should_exit:
        time.sleep(min(activity.idle, 1))
        services = getattr(app.state, "services", None)
        if activity.in_flight > 0 or (services is not None and services.busy()):
            activity.last = time.monotonic()
        elif time.monotonic() - activity.last > activity.idle:
            log.warning("idle for %.0f s: exiting", activity.idle)
            server.should_exit = True
