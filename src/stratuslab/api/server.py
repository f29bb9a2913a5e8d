"""Running the server: uvicorn in the foreground, optionally exiting when idle.

A server the CLI starts on demand exits after ``idle_exit`` seconds with no request in flight
and no background work, so that nothing lingers; one a site administrator starts runs until
stopped.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import uvicorn
from fastapi import FastAPI

from stratuslab.api.app import create_app
from stratuslab.config import Settings

log = logging.getLogger("stratuslab.server")


def serve(settings: Settings, *, host: str, port: int, idle_exit: float = 0) -> None:
    app = create_app(settings)
    activity = _Activity()
    app.add_middleware(_CountRequests, activity=activity)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    if idle_exit > 0:
        threading.Thread(
            target=_exit_when_idle,
            args=(app, server, activity, idle_exit),
            daemon=True,
            name="idle",
        ).start()
    pid_file = settings.data_dir / "server.pid"
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{os.getpid()}\n")
    try:
        server.run()
    finally:
        if pid_file.exists() and pid_file.read_text().strip() == str(os.getpid()):
            pid_file.unlink()


class _Activity:
    def __init__(self) -> None:
        self.in_flight = 0
        self.last = time.monotonic()


class _CountRequests:
    """Counts requests until their last byte is sent (streams included)."""

    def __init__(self, app: Any, activity: _Activity) -> None:
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


def _exit_when_idle(app: FastAPI, server: uvicorn.Server, activity: _Activity, idle: float) -> None:
    while not server.should_exit:
        time.sleep(min(idle, 2))
        services = getattr(app.state, "services", None)
        if activity.in_flight > 0 or (services is not None and services.busy()):
            activity.last = time.monotonic()
        elif time.monotonic() - activity.last > idle:
            log.warning("idle for %.0f s: exiting", idle)
            server.should_exit = True
