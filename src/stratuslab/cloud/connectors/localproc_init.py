"""The first process of a localproc instance: PID 1 of the instance's own PID, mount and UTS
namespaces (see ``localproc.py``, which starts it through ``unshare``).

Standard library only, and run by its path, not imported: it must not need the project's
package, whose sources may sit under a directory it is about to hide. In order, it

1. records its host process id and start time in ``<folder>/init.json``, while ``/proc`` is
   still the host's (that is how the connector finds, enters and kills the instance);
2. sets the host name and mounts the instance's private directories over the host's, as the
   connector planned them, then a ``/proc`` of its own PID namespace;
3. says on the ready descriptor ``ok``, or ``error: <why>`` and exits;
4. runs the user-data, once per instance as cloud-init does (``/var/lib/cloud/instance``, in
   the instance's private ``/var/lib``): a started instance that was stopped runs nothing again;
5. reaps every process of the instance (orphans are handed to PID 1) until it gets SIGTERM,
   which it passes to every process of the instance; it exits once none is left. When it
   exits, the kernel kills whatever is left in the namespace.

Arguments: ``FOLDER NAME READY_FD MOUNTS``, MOUNTS a JSON list of ``["bind", source, target]``
and ``["overlay", target, upper, work]``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND = 2, 4, 8, 4096
USER_DATA = Path("/var/lib/cloud/instance/user-data.txt")
RAN = Path("/var/lib/cloud/instance/user-data.ran")
STOPPING = {signal.SIGTERM, signal.SIGINT}
WATCHED = {signal.SIGCHLD, *STOPPING}


def main(argv: list[str]) -> int:
    folder, name, ready_fd, mounts = Path(argv[1]), argv[2], int(argv[3]), json.loads(argv[4])
    # Signals are taken one at a time below, never in a handler: nothing is lost between
    # looking for children and waiting. Children get the mask cleared again (see _spawn).
    signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
    with os.fdopen(ready_fd, "w") as ready:
        try:
            record_myself(folder)
            user_data = (
                (folder / "user-data").read_bytes() if (folder / "user-data").exists() else b""
            )
            socket.sethostname(name)
            for plan in mounts:
                mount_one(plan)
            mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except (OSError, ValueError) as exc:
            ready.write(f"error: {exc}\n")
            return 1
        ready.write("ok\n")
    if user_data and not RAN.exists():
        run_user_data(user_data)
    return reap_until_stopped()


def record_myself(folder: Path) -> None:
    """This process's host pid and start time (field 22 of its stat), atomically."""
    pid = int(Path("/proc/self").readlink().name)
    stat = Path(f"/proc/{pid}/stat").read_text()
    start = int(stat.rpartition(")")[2].split()[19])
    partial = folder / ".init.json.part"
    partial.write_text(json.dumps({"pid": pid, "start": start}))
    partial.replace(folder / "init.json")


def mount_one(plan: list[str]) -> None:
    kind, *args = plan
    if kind == "bind":
        source, target = args
        mount(source, target, "", MS_BIND)
    elif kind == "overlay":
        target, upper, work = args
        options = f"lowerdir={target},upperdir={upper},workdir={work}"
        mount("overlay", target, "overlay", 0, options)
    else:
        raise ValueError(f"unknown mount {kind!r}")


def mount(source: str, target: str, fstype: str, flags: int, data: str = "") -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    done = libc.mount(
        source.encode(), target.encode(), fstype.encode() or None, flags, data.encode() or None
    )
    if done != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {source} on {target}: {os.strerror(errno)}")


def run_user_data(script: bytes) -> None:
    USER_DATA.parent.mkdir(parents=True, exist_ok=True)
    USER_DATA.write_bytes(script)
    USER_DATA.chmod(0o700)
    RAN.write_text("")  # once per instance, even if it fails or is killed: as cloud-init does
    if script.startswith(b"#!"):
        _spawn([str(USER_DATA)])


def _spawn(command: list[str]) -> None:
    subprocess.Popen(  # reaped by the loop below, with every orphan of the instance
        command,
        cwd="/root",
        stdin=subprocess.DEVNULL,
        preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_SETMASK, set()),  # one thread here
    )


def reap_until_stopped() -> int:
    stopping = False
    while True:
        if not reap() and stopping:
            return 0
        received = signal.sigwaitinfo(WATCHED)
        if received.si_signo in STOPPING and not stopping:
            stopping = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(-1, signal.SIGTERM)  # from PID 1: every process of the namespace


def reap() -> bool:
    """Collect every child that has exited; whether any is left."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


if __name__ == "__main__":
    sys.exit(main(sys.argv))
