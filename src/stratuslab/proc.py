"""The one way this project runs a subprocess.

Every command goes through :func:`run`, never through a shell, and a failure raises
:class:`~stratuslab.errors.CommandFailed` carrying the command, exit code, stdout and stderr, so
that whoever reads the error can tell what went wrong without re-running anything.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen

from stratuslab.errors import BackendUnavailable, CommandFailed

_KILL_GRACE = 5.0  # once a command's group is killed, how long its pipes may take to close


@dataclass(frozen=True)
class Completed:
    """What a finished command produced."""

    command: list[str]
    returncode: int
    stdout: str
    stderr: str


def which(program: str) -> str | None:
    """Where ``program`` is on PATH (also /usr/sbin and /sbin, which root's tools live in)."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin:/usr/bin:/bin"
    return shutil.which(program, path=path)


def run(
    command: Sequence[str],
    *,
    check: bool = True,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    on_line: Callable[[str], None] | None = None,
    hint: str | None = None,
) -> Completed:
    """Run ``command`` and wait for it.

    ``on_line`` receives each line of stdout as it arrives (for progress), in the calling
    thread; stdout is still returned whole. With ``check`` (the default) a non-zero exit
    raises ``CommandFailed``. A program that is not installed raises ``BackendUnavailable``
    naming it.

    The command runs in a process group of its own. When ``timeout`` seconds pass before it
    has exited and closed its output (a background child may hold stdout open after its
    parent exits), or when the caller is interrupted, the whole group is killed; a timeout
    raises ``CommandFailed`` whose last line of stderr names it. A process that leaves the
    group (``setsid``) is out of reach: with such a command, leave stdout out of it.
    """
    argv = [str(part) for part in command]
    program = which(argv[0]) if os.sep not in argv[0] else argv[0]
    if program is None:
        raise BackendUnavailable(f"`{argv[0]}` is not installed", hint=hint or "run `make setup`")
    full_env = {**os.environ, **env} if env is not None else None
    if on_line is None:
        result = _run_captured([program, *argv[1:]], argv, input, full_env, timeout)
    else:
        result = _run_streaming([program, *argv[1:]], argv, input, full_env, timeout, on_line)
    if check and result.returncode != 0:
        raise CommandFailed(argv, result.returncode, result.stdout, result.stderr, hint=hint)
    return result


def spawn_detached(
    command: Sequence[str], *, log_file: Path, env: Mapping[str, str] | None = None
) -> int:
    """Start a long-lived daemon in its own session, its output going to ``log_file``, in
    ``env`` (this process's environment when None).

    Returns its process id. Used where there is no service manager to ask (no systemd).
    """
    argv = [str(part) for part in command]
    program = which(argv[0])
    if program is None:
        raise BackendUnavailable(f"`{argv[0]}` is not installed", hint="run `make setup`")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        child = subprocess.Popen(
            [program, *argv[1:]],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=None if env is None else dict(env),
        )
    # Kept, and reaped once it has exited, so that a long-lived caller (a test run, a server
    # restarting its successor) neither leaks the handle nor leaves a zombie.
    _DETACHED[:] = [p for p in _DETACHED if p.poll() is None]
    _DETACHED.append(child)
    return child.pid


_DETACHED: list[Popen[bytes]] = []


@atexit.register
def _leave_detached() -> None:
    """A daemon outlives the process that started it, by design: reap those that ended, and
    let go of the others without Popen's warning that they still run."""
    for child in _DETACHED:
        if child.poll() is None:
            child.returncode = 0  # not ours to wait for
    _DETACHED.clear()


def replace_process(command: Sequence[str]) -> None:
    """Become ``command`` (for interactive tools such as ssh); returns only on failure."""
    argv = [str(part) for part in command]
    program = which(argv[0])
    if program is None:
        raise BackendUnavailable(
            f"`{argv[0]}` is not installed", hint="apt-get install openssh-client"
        )
    os.execv(program, argv)  # noqa: S606 - no shell: the argument list is passed as is


def _run_captured(
    argv: list[str],
    shown: list[str],
    input: str | None,
    env: Mapping[str, str] | None,
    timeout: float | None,
) -> Completed:
    child = _start(argv, input, env)
    try:
        stdout, stderr = child.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(child)
        try:  # what it wrote before the timeout, now that the group's pipes are closed
            stdout, stderr = child.communicate(timeout=_KILL_GRACE)
        except subprocess.TimeoutExpired as exc:
            stdout, stderr = _text(exc.stdout), _text(exc.stderr)
        raise _timed_out(shown, timeout, stdout, stderr) from None
    finally:
        _reap(child, [])
    return Completed(shown, child.returncode, stdout, stderr)


def _run_streaming(
    argv: list[str],
    shown: list[str],
    input: str | None,
    env: Mapping[str, str] | None,
    timeout: float | None,
    on_line: Callable[[str], None],
) -> Completed:
    deadline = None if timeout is None else time.monotonic() + timeout
    child = _start(argv, input, env)
    stdout, stderr, stdin = child.stdout, child.stderr, child.stdin
    assert stdout is not None and stderr is not None
    # Threads read both pipes (so that neither fills up) and write the input (a command
    # that does not read it must not block us); this thread waits on the lines, bounded.
    lines: queue.Queue[str | None] = queue.Queue()
    errors: list[str] = []

    def pump() -> None:
        for line in stdout:
            lines.put(line)
        lines.put(None)

    def feed() -> None:
        assert stdin is not None
        with contextlib.suppress(BrokenPipeError):  # it exited without reading it all
            stdin.write(input or "")
            stdin.close()

    threads = [threading.Thread(target=pump, daemon=True)]
    threads.append(threading.Thread(target=lambda: errors.extend(stderr), daemon=True))
    if input is not None:
        threads.append(threading.Thread(target=feed, daemon=True))
    for thread in threads:
        thread.start()
    out: list[str] = []
    try:
        while (line := lines.get(timeout=_left(deadline))) is not None:
            out.append(line)
            on_line(line.rstrip("\n"))
        returncode = child.wait(timeout=_left(deadline))
        for thread in threads[1:]:  # stderr may be held by a background child too
            thread.join(_left(deadline, _KILL_GRACE))
        if deadline is not None and any(thread.is_alive() for thread in threads[1:]):
            raise subprocess.TimeoutExpired(argv, timeout or 0)
    except (queue.Empty, subprocess.TimeoutExpired):
        _kill_group(child)
        for thread in threads:
            thread.join(_KILL_GRACE)
        raise _timed_out(shown, timeout, "".join(out), "".join(errors)) from None
    finally:
        _reap(child, threads)
    return Completed(shown, returncode, "".join(out), "".join(errors))


def _start(argv: list[str], input: str | None, env: Mapping[str, str] | None) -> Popen[str]:
    return subprocess.Popen(
        argv,
        # Never the terminal: in a group of its own, a command reading it would be stopped.
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",  # a command may print bytes that are not text (a file name, a commit)
        env=env,
        process_group=0,  # its children too, so that a timeout can kill them all
    )


def _kill_group(child: Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is gone already
        os.killpg(child.pid, signal.SIGKILL)


def _reap(child: Popen[str], threads: list[threading.Thread]) -> None:
    """Leave nothing behind: on any way out (an interrupt too), kill the group if the command
    still runs, collect its exit, and close the pipes no thread still reads."""
    if child.poll() is None:
        _kill_group(child)
    child.wait()
    if not any(thread.is_alive() for thread in threads):
        for pipe in (child.stdin, child.stdout, child.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def _timed_out(shown: list[str], timeout: float | None, stdout: str, stderr: str) -> CommandFailed:
    return CommandFailed(shown, -1, stdout, f"{stderr}timed out after {timeout:g} s")


def _left(deadline: float | None, default: float | None = None) -> float | None:
    """Seconds until ``deadline`` (none left: 0), or ``default`` without a deadline."""
    if deadline is None:
        return default
    return max(0.0, deadline - time.monotonic())


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode(errors="replace")
