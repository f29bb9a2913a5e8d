"""Running the server: uvicorn in the foreground, optionally exiting when idle.

A server the CLI starts on demand exits after ``idle_exit`` seconds with no request in flight
and no background work, so that nothing lingers; one a site administrator starts runs until
stopped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from stratuslab import __version__, build
from stratuslab.api import tls
from stratuslab.api.app import create_app
from stratuslab.config import Settings
from stratuslab.errors import BackendUnavailable

log = logging.getLogger("stratuslab.server")


def listening_sockets(hosts: list[str], port: int) -> list[socket.socket]:
    """One listening socket per address. The first must bind; the others (the bridge, where
    node agents call from) are skipped with a warning when this host does not have them."""
    sockets = []
    for index, host in enumerate(dict.fromkeys(hosts)):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            if index == 0:
                raise BackendUnavailable(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
            log.warning(
                "not listening on %s:%s (%s): nodes cannot reach this server",
                host,
                port,
                exc.strerror,
            )
            continue
        sock.listen(2048)
        sockets.append(sock)
    return sockets


def serve(settings: Settings, *, host: str, port: int, idle_exit: float = 0) -> None:
    # The build id of the code loaded now, before anything can change the files under us:
    # /health reports it, and a CLI of another build replaces this server.
    log.info("StratusLab %s, build %s, pid %d", __version__, build.running(), os.getpid())
    sockets = listening_sockets([host, settings.bridge_gateway], port)
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
    )
    server = uvicorn.Server(config)
    servers = [(server, sockets)]
    if settings.tls_cert_file:
        servers.append(https_server(app, settings, host=host))
    if idle_exit > 0:
        threading.Thread(
            target=_exit_when_idle, args=(app, server, activity), daemon=True, name="idle"
        ).start()
    pid_file = settings.data_dir / "server.pid"
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{os.getpid()}\n")
    try:
        if len(servers) == 1:
            server.run(sockets=sockets)
        else:
            asyncio.run(_serve_all(servers))
    finally:
        if pid_file.exists() and pid_file.read_text().strip() == str(os.getpid()):
            pid_file.unlink()


def https_server(
    app: Any, settings: Settings, *, host: str
) -> tuple[uvicorn.Server, list[socket.socket]]:
    """The HTTPS listener for users (``tls_port``), beside the plain one: the same application,
    with client certificates handed to it (``api/tls.py``)."""
    made = tls.context(
        cert_file=Path(settings.tls_cert_file),
        key_file=Path(settings.tls_key_file),
        client_ca_file=Path(settings.tls_client_ca_file) if settings.tls_client_ca_file else None,
        allow_proxies=settings.tls_allow_proxies,
    )
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
        proxy_headers=False,
        lifespan="off",  # the plain listener's server starts and stops the services
        http=tls.protocol_class(),
        ssl_context_factory=lambda _config, _default: made,
    )
    return uvicorn.Server(config), listening_sockets([host], settings.tls_port)


async def _serve_all(servers: list[tuple[uvicorn.Server, list[socket.socket]]]) -> None:
    """Several listeners in one loop; when one is told to exit (a signal, idleness), all are."""

    async def together() -> None:
        while not all(server.should_exit for server, _ in servers):
            if any(server.should_exit for server, _ in servers):
                for server, _ in servers:
                    server.should_exit = True
            await asyncio.sleep(0.2)

    await asyncio.gather(*(server.serve(sockets=s) for server, s in servers), together())


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
