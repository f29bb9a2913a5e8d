"""The processes the agent runs for a state: recipes and apt-get, each as its own process group,
its output going to a log file and to the server, stopped when the run leaves the state."""

from __future__ import annotations

import os
import time

from .logger import log
from .protocol import PHASE_STREAM

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing; mypy knows the name
if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable, Mapping
    from pathlib import Path
    from typing import IO, Any

    from .progress import LogShipper

LOG_LINE_LIMIT = 4096  # characters of one output line sent to the server (the file keeps all)
STOP_GRACE = 5  # seconds between SIGTERM and SIGKILL to a step the run left behind


class Step:
    """One process the agent runs for a state: a recipe, or an apt-get command."""

    __slots__ = ("command", "env", "module", "n", "name", "state")

    def __init__(
        self, state: str, name: str, n: int, module: str, command: list[str], env: dict[str, str]
    ) -> None:
        self.state = state  # the run state it belongs to
        self.name = name  # pre-install, packages, post-install, deployment, report, on-vm-add, ...
        self.n = n  # its place in that step's list, from 1
        self.module = module  # the module whose recipe it is (for packages, the apt-get command)
        self.command = command
        self.env = env

    @property
    def label(self) -> str:
        return f"{self.state}-{self.name}-{self.n}"


class Outcome:
    __slots__ = ("code", "interrupted", "last_error_line")

    def __init__(self, code: int, last_error_line: str, interrupted: bool) -> None:
        self.code = code  # the exit code; a death by signal N counts as 128 + N, as a shell says
        self.last_error_line = last_error_line  # the last non-blank line of its stderr
        self.interrupted = interrupted  # stopped by the agent because the run left the step's state


def recipe_steps(
    state: str,
    name: str,
    plan: Mapping[str, Any],
    directory: Path,
    env: Mapping[str, str] | None = None,
) -> list[Step]:
    """The recipes of step ``name`` in ``plan``, written to ``directory``, parents first. A
    recipe without a ``#!`` line runs with ``/bin/bash -e``."""
    recipes = plan.get("recipes")
    entries = recipes.get(name) if isinstance(recipes, dict) else None
    steps = []
    for n, recipe in enumerate(entries if isinstance(entries, list) else [], start=1):
        script = str(recipe.get("script") or "") if isinstance(recipe, dict) else ""
        module = str(recipe.get("module") or "") if isinstance(recipe, dict) else ""
        path = directory / f"{state}-{name}-{n}"
        path.write_text(script, encoding="utf-8")
        path.chmod(0o700)
        command = [str(path)] if script.startswith("#!") else ["/bin/bash", "-e", str(path)]
        steps.append(Step(state, name, n, module, command, dict(env or {})))
    return steps


def package_steps(plan: Mapping[str, Any], apt: str) -> list[Step]:
    """``apt-get update``, then ``apt-get install -y`` the plan's packages (none: no steps)."""
    packages = plan.get("packages")
    if not isinstance(packages, list) or not packages:
        return []
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    return [
        Step("Executing", "packages", 1, "apt-get update", [apt, "update"], env),
        Step(
            "Executing",
            "packages",
            2,
            "apt-get install",
            [apt, "install", "-y", *(str(package) for package in packages)],
            env,
        ),
    ]


class StepOutput:
    """Where the lines of a running step go: its log file, the server, and its stderr tail.

    The file is opened per line: the readers of a step can outlive it (a daemon the recipe
    started keeps the pipes open), and nothing then has to decide when to close it.
    """

    def __init__(self, step: Step, path: Path, shipper: LogShipper) -> None:
        import threading

        self.last_error_line = ""
        self._step = step
        self._path = path
        self._shipper = shipper
        self._lock = threading.Lock()

    def mark(self, event: str, **fields: Any) -> None:
        """Tell the server where the step starts or ends (see protocol.PHASE_STREAM)."""
        import json

        step = self._step
        data = {"event": event, "n": step.n, "module": step.module, **fields}
        self._shipper.add(
            {
                "t": round(time.time(), 3),
                "state": step.state,
                "recipe": step.name,
                "stream": PHASE_STREAM,
                "text": json.dumps(data),
            }
        )

    def line(self, stream: str, text: str) -> None:
        with self._lock, self._path.open("a", encoding="utf-8") as file:
            file.write(text + "\n")
            if stream == "stderr" and text.strip():
                self.last_error_line = text.strip()
        self._shipper.add(
            {
                "t": round(time.time(), 3),
                "state": self._step.state,
                "recipe": self._step.name,
                "stream": stream,
                "text": text[:LOG_LINE_LIMIT],
            }
        )


def run_step(
    step: Step,
    *,
    cwd: Path,
    env: Mapping[str, str],
    log_path: Path,
    shipper: LogShipper,
    in_state: Callable[[], bool],
) -> Outcome:
    """Run ``step`` as its own process group, its output read by two threads, while
    ``in_state()`` says the run is still in the step's state; stop it when it no longer is."""
    import subprocess
    import threading

    log.info("%s: %s", step.label, " ".join(step.command))
    output = StepOutput(step, log_path, shipper)
    output.mark("start")
    try:
        process = subprocess.Popen(
            step.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
        )
    except OSError as exc:
        output.line("stderr", f"cannot run {step.command[0]}: {exc}")
        output.mark("end", code=127, stopped=False)
        return Outcome(127, output.last_error_line, interrupted=False)
    readers = [
        threading.Thread(target=_pump, args=(process.stdout, "stdout", output), daemon=True),
        threading.Thread(target=_pump, args=(process.stderr, "stderr", output), daemon=True),
    ]
    for reader in readers:
        reader.start()
    interrupted = _wait(process, step.state, in_state)
    for reader in readers:
        reader.join(timeout=2)  # a daemon the recipe started may hold the pipes for ever
    code = process.returncode if process.returncode >= 0 else 128 - process.returncode
    log.info("%s: exited with %d%s", step.label, code, " (stopped)" if interrupted else "")
    output.mark("end", code=code, stopped=interrupted)
    return Outcome(code, output.last_error_line, interrupted)


def _wait(process: subprocess.Popen[bytes], state: str, in_state: Callable[[], bool]) -> bool:
    """Wait for the step; stop it, and say so, if the run leaves ``state`` meanwhile."""
    import subprocess

    while True:
        try:
            process.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            if not in_state():
                log.warning("the run left %s: stopping the step", state)
                _stop(process)
                return True
        else:
            return False


def _pump(pipe: IO[bytes] | None, stream: str, output: StepOutput) -> None:
    if pipe is None:
        return
    with pipe:
        for raw in iter(pipe.readline, b""):
            output.line(stream, raw.decode("utf-8", "replace").rstrip("\r\n"))


def _signal_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to a process group; whether anything (even a zombie) was left in it."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:  # something is there, just not ours to signal
        pass
    return True


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the step's process group, SIGKILL to what is left of it 5 s later."""
    import signal

    _signal_group(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    while time.monotonic() < deadline:
        if process.poll() is not None and not _signal_group(process.pid, 0):
            return
        time.sleep(0.1)
    _signal_group(process.pid, signal.SIGKILL)
    process.wait()
