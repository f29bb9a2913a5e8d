"""The local server as a background process: find it, start it, replace it, stop it.

The CLI starts one on demand (it exits by itself once idle); a site administrator starts one
with ``stratus server start`` (it runs until stopped). A server of another build than the
CLI's (left running by another checkout) is replaced by one of the CLI's, in the same mode.
Only the process recorded in the pid file *and* answering on the port with that pid, and whose
command line is a StratusLab server's, is ever signalled; the server stops gracefully on
SIGTERM, and the runs it was carrying are in the store for the next one to carry on.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

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
    build: str | None = None  # None: not running, or a server older than build ids
    idle_exit: float | None = None  # seconds idle before it exits (0: never); None: unknown
    proven: bool = False  # it proved it holds this data dir's site token

    @property
    def running(self) -> bool:
        return self.pid is not None

    def describe(self) -> str:
        """The server in a few words, for messages: pid, version and build."""
        return f"pid {self.pid}, version {self.version}, build {self.build or 'unknown'}"


class Started(NamedTuple):  # not a dataclass: it is defined on the CLI's way to its request
    """What :func:`start` did: found one ('running'), 'started' one, or 'replaced' one."""

    outcome: str
    state: ServerState
    previous: ServerState | None = None  # the server of another build that was replaced


def log_file(settings: Settings) -> Path:
    return settings.data_dir / "server.log"


def build_cache(settings: Settings) -> Path:
    """Where the CLI keeps its build id between invocations (see ``stratuslab.build``)."""
    return settings.cache_dir / "build-id"


def state(settings: Settings) -> ServerState:
    """What answers on the local server's port. Nothing: not running; anything but a
    StratusLab server: an error saying what answers."""
    url = settings.local_server_url
    client = ApiClient(url, token=read_token(settings))
    try:
        found = client.identify()
    finally:
        client.close()
    if found is None:
        return ServerState(url, None, None)
    return ServerState(url, found.pid, found.version, found.build, found.idle_exit, found.proven)


def read_token(settings: Settings) -> str:
    if settings.token:
        return settings.token
    try:
        return settings.token_file.read_text().strip()
    except OSError:
        return ""


def start(
    settings: Settings, *, idle_exit: float = 0, build: str | None = None, wait: float = 30.0
) -> Started:
    """Start the local server unless it runs already. With ``build``, a running server of
    another build is replaced by one of this code, with the idle mode it had."""
    with _start_lock(settings):
        current = state(settings)
        if not current.running:
            return Started("started", _spawn(settings, idle_exit, wait))
        if build in (None, current.build):
            return Started("running", current)  # another CLI started or replaced it meanwhile
        mode = _idle_exit_of(current)
        _terminate(
            settings,
            current,
            refusal=f"{current.url} answers with a StratusLab server of another build "
            f"({current.describe()}) that was not started from {settings.data_dir}: "
            f"not replacing it with this CLI's build {build}",
        )
        return Started("replaced", _spawn(settings, mode, wait), previous=current)


def stop(settings: Settings, *, wait: float = 15.0) -> str:
    """Stop the local server. Returns 'stopped' or 'not running'."""
    current = state(settings)
    if not current.running:
        return "not running"
    _terminate(
        settings,
        current,
        refusal=f"the server on {current.url} ({current.describe()}) "
        f"was not started from {settings.data_dir}",
        wait=wait,
    )
    return "stopped"


@contextlib.contextmanager
def _start_lock(settings: Settings) -> Iterator[None]:
    """Held while a server is started or replaced: two CLIs doing it at once start one."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with (settings.data_dir / "server.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _spawn(settings: Settings, idle_exit: float, wait: float) -> ServerState:
    """Start a server from this process's code and wait until it answers."""
    command = [
        sys.executable,
        "-P",  # not the current directory's `stratuslab`, if it has one: this process's
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
    # The server's site token is its token file's. A CLI's STRATUS_TOKEN (perhaps a user's API
    # key) must not become the administrator credential of the server it starts.
    env = {k: v for k, v in os.environ.items() if k != "STRATUS_TOKEN"}
    pid = proc.spawn_detached(command, log_file=log_file(settings), env=env)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        with contextlib.suppress(StratusError):  # not answering yet
            current = state(settings)
            if current.running:
                return current
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


def _terminate(
    settings: Settings, current: ServerState, *, refusal: str, wait: float = 15.0
) -> None:
    """Stop ``current`` if it is this data dir's server; refuse with ``refusal`` otherwise."""
    pid = current.pid
    if pid is None or _recorded_pid(settings) != pid or not _is_server(_command_line(pid)):
        raise BackendUnavailable(refusal, hint="stop it where it was started")
    try:
        os.kill(pid, signal.SIGTERM)  # graceful: requests finish, runs stay in the store
    except PermissionError as exc:  # another user's process
        raise BackendUnavailable(refusal, hint="stop it where it was started") from exc
    if not _gone(pid, wait):
        os.kill(pid, signal.SIGKILL)
        _gone(pid, 5)


def _gone(pid: int, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL)
    return True


def _idle_exit_of(current: ServerState) -> float:
    """The idle mode of a running server: from its /health, or, for a server older than
    that, from its command line."""
    if current.idle_exit is not None:
        return current.idle_exit
    return _idle_exit_in(_command_line(current.pid) if current.pid is not None else [])


def _idle_exit_in(argv: list[str]) -> float:
    """``--idle-exit N`` in a server's command line; absent, it runs until stopped."""
    for index, arg in enumerate(argv):
        value = arg.removeprefix("--idle-exit=") if arg.startswith("--idle-exit=") else None
        if arg == "--idle-exit" and index + 1 < len(argv):
            value = argv[index + 1]
        if value is not None:
            with contextlib.suppress(ValueError):
                return max(float(value), 0.0)
    return 0.0


def _is_server(argv: list[str]) -> bool:
    """A command line of `stratus server run` (or `python -m stratuslab server run`)."""
    runs_server = ("server", "run") in itertools.pairwise(argv)
    return runs_server and any(a == "stratuslab" or Path(a).name == "stratus" for a in argv)


def _command_line(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").rstrip("\0").split("\0")


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
