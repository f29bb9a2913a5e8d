"""The one way this project runs a subprocess.

Every command goes through :func:`run`, never through a shell, and a failure raises
:class:`~stratuslab.errors.CommandFailed` carrying the command, exit code, stdout and stderr, so
that whoever reads the error can tell what went wrong without re-running anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from stratuslab.errors import BackendUnavailable, CommandFailed


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

    ``on_line`` receives each line of stdout as it arrives (for progress); stdout is still
    returned whole. With ``check`` (the default) a non-zero exit raises ``CommandFailed``.
    A program that is not installed raises ``BackendUnavailable`` naming it.
    """
    argv = [str(part) for part in command]
    program = which(argv[0]) if os.sep not in argv[0] else argv[0]
    if program is None:
        raise BackendUnavailable(f"`{argv[0]}` is not installed", hint=hint or "run `make setup`")
    full_env = {**os.environ, **env} if env is not None else None
    try:
        if on_line is None:
            done = subprocess.run(
                [program, *argv[1:]],
                input=input,
                capture_output=True,
                text=True,
                env=full_env,
                timeout=timeout,
                check=False,
            )
            result = Completed(argv, done.returncode, done.stdout, done.stderr)
        else:
            result = _run_streaming([program, *argv[1:]], argv, input, full_env, timeout, on_line)
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(argv, -1, _text(exc.stdout), f"timed out after {timeout} s") from exc
    if check and result.returncode != 0:
        raise CommandFailed(argv, result.returncode, result.stdout, result.stderr, hint=hint)
    return result


def spawn_detached(command: Sequence[str], *, log_file: Path) -> int:
    """Start a long-lived daemon in its own session, its output going to ``log_file``.

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
        )
    return child.pid


def replace_process(command: Sequence[str]) -> None:
    """Become ``command`` (for interactive tools such as ssh); returns only on failure."""
    argv = [str(part) for part in command]
    program = which(argv[0])
    if program is None:
        raise BackendUnavailable(
            f"`{argv[0]}` is not installed", hint="apt-get install openssh-client"
        )
    os.execv(program, argv)  # noqa: S606 - no shell: the argument list is passed as is


def _run_streaming(
    argv: list[str],
    shown: list[str],
    input: str | None,
    env: Mapping[str, str] | None,
    timeout: float | None,
    on_line: Callable[[str], None],
) -> Completed:
    with subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as child:
        assert child.stdout is not None and child.stderr is not None
        stderr = child.stderr
        errors: list[str] = []

        def drain_stderr() -> None:  # read stderr alongside, so that neither pipe fills up
            errors.extend(stderr)

        drain = threading.Thread(target=drain_stderr, daemon=True)
        drain.start()
        if input is not None and child.stdin is not None:
            child.stdin.write(input)
            child.stdin.close()
        lines: list[str] = []
        for line in child.stdout:
            lines.append(line)
            on_line(line.rstrip("\n"))
        returncode = child.wait(timeout=timeout)
        drain.join(timeout=5)
    return Completed(shown, returncode, "".join(lines), "".join(errors))


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode(errors="replace")
