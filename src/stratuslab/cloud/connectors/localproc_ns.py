"""A localproc instance's namespaces as the host sees them: its PID 1 started (through
util-linux's ``unshare``), found, stopped and killed, and the ``unshare`` processes reaped.

PID 1 itself is ``localproc_init.py``; the connector (``localproc.py``) keeps the folders and
what they describe. What ties the two: ``<folder>/init.json``, where PID 1 writes its host pid
and start time, so that any process can find it again; the start time tells it from a later
process given the same pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from stratuslab import proc
from stratuslab.errors import BackendError, BackendUnavailable, Conflict

OVERLAID = ("/etc",)  # the host's files seen through, writes kept in the instance
# Empty at first, as on a pristine image. Private directories: not the host's temporary files.
PRIVATE = ("/opt", "/root", "/usr/local/bin", "/var/lib", "/var/log", "/var/tmp")  # noqa: S108
LAUNCHER = Path(__file__).with_name("localproc_init.py")
LAUNCH_TIMEOUT = 10.0  # seconds for PID 1 to say it is ready (it takes some 50 ms)
KILL_WAIT = 5.0  # seconds for a killed PID 1 to be gone

# unshare processes this process started, by folder: they are reaped here (whoever destroys
# the instance), so that none is left a zombie, and none warns of being left running.
_CHILDREN: dict[Path, subprocess.Popen[bytes]] = {}
_STARTING: set[Path] = set()
_LOCK = threading.Lock()


def mounts(folder: Path) -> list[list[str]]:
    """What PID 1 mounts, in order: ``["overlay", target, upper, work]`` and ``["bind",
    source, target]``, from the instance's ``fs/`` and ``work/``."""
    fs, work = folder / "fs", folder / "work"
    plan = [
        ["overlay", location, str(fs / location[1:]), str(work / location[1:])]
        for location in OVERLAID
    ]
    # Each source is found when it is mounted: a location that holds the folder itself
    # (a root under /var/lib, say) is mounted last, once nothing more is needed from it.
    holds_folder = [folder.is_relative_to(location) for location in PRIVATE]
    plan += [
        ["bind", str(fs / location[1:]), location]
        for _, location in sorted(zip(holds_folder, PRIVATE, strict=True))
    ]
    return plan


def launch(folder: Path, env: Mapping[str, str]) -> None:
    """Start the instance's PID 1 with the environment ``env`` and wait until it has mounted
    everything. Raises ``BackendError`` saying why when it does not get there."""
    unshare = proc.which("unshare")
    if unshare is None:
        raise BackendUnavailable("`unshare` is not installed", hint="apt-get install util-linux")
    (folder / "init.json").unlink(missing_ok=True)
    read_end, write_end = os.pipe()
    command = [
        *(unshare, "--mount", "--pid", "--uts", "--fork", "--kill-child"),
        *("--propagation", "private", "--"),
        *(sys.executable, "-I", "-S", str(LAUNCHER), str(folder), folder.name),
        *(str(write_end), json.dumps(mounts(folder))),
    ]
    with _LOCK:
        if folder in _STARTING:
            raise Conflict(f"instance {folder.name} is being started already")
        _STARTING.add(folder)
    try:
        with (folder / "console.log").open("ab") as console:
            # Not proc.run: this process outlives the call, and tells it is ready on a pipe.
            child = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                env=dict(env),
                pass_fds=(write_end,),
                start_new_session=True,  # nothing sent to the server's group reaches it
            )
        os.close(write_end)
        write_end = -1
        with _LOCK:
            _CHILDREN[folder] = child
        answer = _read_line(read_end, LAUNCH_TIMEOUT)
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
        with _LOCK:
            _STARTING.discard(folder)
    if answer != "ok":
        output = (folder / "console.log").read_text(errors="replace").strip()
        why = answer or (output.splitlines()[-1] if output else "it exited")
        raise BackendError(f"instance {folder.name} did not start: {why}")


def starting(folder: Path) -> bool:
    """Whether this process is starting the instance's PID 1 right now."""
    with _LOCK:
        return folder in _STARTING


def pid1(folder: Path) -> int | None:
    """The host pid of the instance's PID 1, if it runs."""
    try:
        recorded = json.loads((folder / "init.json").read_text())
    except (OSError, ValueError):
        return None
    pid, start = int(recorded["pid"]), int(recorded["start"])
    return pid if _started_at(pid) == start else None


def stop(folder: Path, timeout: float) -> None:
    """End the instance's processes: SIGTERM to PID 1, which passes it to every process it
    holds and exits when they have; SIGKILL after ``timeout`` seconds."""
    pid = pid1(folder)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not _gone(pid, timeout):
            _kill(pid)
    (folder / "init.json").unlink(missing_ok=True)
    _reap(folder)


def kill(folder: Path) -> None:
    """SIGKILL to PID 1: the kernel kills the rest of its PID namespace with it."""
    pid = pid1(folder)
    if pid is not None:
        _kill(pid)
    _reap(folder)


def enter(pid: int, env: Mapping[str, str], command: list[str]) -> list[str]:
    """The command line that runs ``command`` in the namespaces of PID 1 ``pid``, with exactly
    the environment ``env``, the shell saying "not found" (127) for a missing program."""
    environment = [f"{name}={value}" for name, value in env.items()]
    return [
        *("nsenter", f"--target={pid}", "--mount", "--uts", "--pid", "--wd=/root"),
        *("--", "env", "-i", *environment, "/bin/sh", "-c", 'exec "$@"', "sh", *command),
    ]


def reap_finished() -> None:
    """Collect the ``unshare`` processes whose instance ended some other way (stopped or
    destroyed by another process, or its PID 1 killed behind the connector's back)."""
    with _LOCK:
        for folder, child in list(_CHILDREN.items()):
            if child.poll() is not None:
                del _CHILDREN[folder]


def _started_at(pid: int) -> int | None:
    """The start time of a live (not zombie) process ``pid``, from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    start = _started_at(pid)
    while _started_at(pid) == start and start is not None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)  # forced into a PID 1 from outside its namespace
    if not _gone(pid, KILL_WAIT):
        raise BackendError(f"process {pid} survived SIGKILL for {KILL_WAIT:g} s")


def _reap(folder: Path) -> None:
    """Collect the exit of the ``unshare`` that ran the instance, if this process started it."""
    with _LOCK:
        child = _CHILDREN.pop(folder, None)
    if child is not None:
        try:
            child.wait(KILL_WAIT)  # PID 1 is gone: unshare follows at once
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _read_line(fd: int, timeout: float) -> str:
    """The first line written on ``fd`` (stripped), '' at end of file or after ``timeout``."""
    deadline = time.monotonic() + timeout
    data = b""
    waiting = select.poll()  # not select(), which fails on a descriptor numbered past 1023
    waiting.register(fd, select.POLLIN)
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not waiting.poll(left * 1000):
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").partition("\n")[0].strip()
