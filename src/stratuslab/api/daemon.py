"""The local server as a background process: find it, start it, stop it.

The CLI starts one on demand (it exits by itself once idle); a site administrator starts one
with ``stratus server start`` (it runs until stopped). Only the process recorded in the pid
file *and* answering on the port with that pid is ever signalled.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from stratuslab import proc
from stratuslab.api.client import ApiClient
from stratuslab.config import Settings
from stratuslab.errors import BackendError, BackendUnavailable, StratusError

_POLL = 0.05


@dataclass(frozen=True)
class ServerState:
    url: str
    pid: int | None
    version: str | None

    @property
    def running(self) -> bool:
        return self.pid is not None


def log_file(settings: Settings) -> Path:
    return settings.data_dir / "server.log"


def state(settings: Settings) -> ServerState:
    url = settings.local_server_url
    client = ApiClient(url, token="")
    try:
        health = client.health()
        return ServerState(url, int(health["pid"]), str(health.get("version")))
    except StratusError:
        return ServerState(url, None, None)
    finally:
        client.close()


def read_token(settings: Settings) -> str:
    if settings.token:
        return settings.token
    try:
        return settings.token_file.read_text().strip()
    except OSError:
        return ""


def start(
    settings: Settings, *, idle_exit: float = 0, wait: float = 30.0
) -> tuple[str, ServerState]:
    """Start the local server unless it runs already. Returns ('running'|'started', state)."""
    current = state(settings)
    if current.running:
        return "running", current
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with (settings.data_dir / "server.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two CLIs starting at once start one server
        current = state(settings)
        if current.running:
            return "running", current
        command = [
            sys.executable,
            "-m",
            "stratuslab",
            "server",
            "run",
            "--host",
            settings.server_host,
            "--port",
            str(settings.server_port),
        ]
        if idle_exit > 0:
            command += ["--idle-exit", str(idle_exit)]
        pid = proc.spawn_detached(command, log_file=log_file(settings))
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            current = state(settings)
            if current.running:
                return "started", current
            if not _alive(pid):
                raise BackendError(
                    "the StratusLab server exited at start",
                    hint=f"last lines of {log_file(settings)}: {_tail(log_file(settings))}",
                )
            time.sleep(_POLL)
        raise BackendError(
            f"the StratusLab server did not answer within {wait:.0f} s",
            hint=f"see {log_file(settings)}",
        )


def stop(settings: Settings, *, wait: float = 15.0) -> str:
    """Stop the local server. Returns 'stopped' or 'not running'."""
    current = state(settings)
    if not current.running or current.pid is None:
        return "not running"
    recorded = _recorded_pid(settings)
    if recorded != current.pid:
        raise BackendUnavailable(
            f"the server on {current.url} (pid {current.pid}) "
            f"was not started from {settings.data_dir}",
            hint="stop it where it was started",
        )
    os.kill(current.pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not _alive(current.pid):
            return "stopped"
        time.sleep(_POLL)
    os.kill(current.pid, signal.SIGKILL)
    return "stopped"


def _recorded_pid(settings: Settings) -> int | None:
    try:
        return int((settings.data_dir / "server.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our child and has exited
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text().strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"
