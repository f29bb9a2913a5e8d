"""The agent itself (``run``): it follows the run's state and does this node's part of each.

docs/agent.md, "The agent", says what each state means to a node; this module does it.
"""

from __future__ import annotations

import os
import sys

from .client import RunClient, connect
from .config import Locations
from .exits import OK, ToolError
from .logger import log
from .progress import LogShipper, Markers, StateFollower
from .protocol import (
    BARRIER_STATES,
    EXECUTING,
    FINAL_STATES,
    FINALIZING,
    MAX_VALUE,
    SENDING_REPORTS,
)
from .steps import Outcome, Step, package_steps, recipe_steps, run_step

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing; mypy knows the name
if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path
    from typing import IO, Any

EXIT_STATES = (FINALIZING, *FINAL_STATES)  # a node has nothing left to do in these
SCALING_HOOKS = {"vm_add": "on-vm-add", "vm_remove": "on-vm-remove"}


class Agent:
    """Follows the run's state and does this node's part of each, once."""

    def __init__(self, client: RunClient, locations: Locations, environ: Mapping[str, str]) -> None:
        self.client = client
        self.config = client.config
        self.locations = locations
        self.environ = environ
        self.follower = StateFollower(client)
        self.shipper = LogShipper(client)
        self.markers = Markers(locations.state_dir / "markers" / self.config.run)

    def run(self) -> int:
        """Handle each state once, until the run reaches a final state (then exit 0)."""
        # Created, never emptied: it is named by the environment, and the agent runs as root.
        self.locations.report_dir.mkdir(parents=True, exist_ok=True)
        (self.locations.state_dir / "recipes").mkdir(parents=True, exist_ok=True)
        self.locations.workdir.mkdir(parents=True, exist_ok=True)
        self.follower.start()
        log.info("agent of %s in run %s started", self.config.node_instance, self.config.run)
        state = ""
        while True:
            state = self.follower.next_state(state)
            log.info("ss:state is %s", state)
            if state in EXIT_STATES:
                self.shipper.flush()
                log.info("the run is over (%s): agent exits", state)
                return OK
            if state not in BARRIER_STATES:
                continue  # Initializing: nothing for a node to do yet
            if self.markers.begin(state):
                status = "complete" if self._handle(state) else "done"
                self.markers.record(state, status)
            else:  # handled before this agent started: what it still owes is on disk
                status = self.markers.status(state)
            if status == "complete":
                self._complete(state)

    def _handle(self, state: str) -> bool:
        """Do this node's part of ``state``; whether it should then post ``complete``."""
        if state == EXECUTING:
            return self._execute()
        if state == SENDING_REPORTS:
            return self._send_reports()
        return True  # Provisioning and Ready: nothing to do but say so

    def _complete(self, state: str) -> None:
        self.shipper.flush()
        if self.follower.state == state and self.client.complete(state):
            self.markers.record(state, "completed")
            log.info("%s complete", state)
        else:  # completing it now could count for the state the run is in
            self.markers.record(state, "done")
            log.info("the run left %s before this node completed it", state)

    def _execute(self) -> bool:
        try:
            plan = self.client.plan()
        except ToolError as exc:  # without recipes the run cannot succeed: say why at once
            self._abort(f"{self.config.node_instance}: no plan for Executing: {exc.message}")
            return False
        scaling = plan.get("scaling")
        if isinstance(scaling, dict) and self.markers.executed_before():
            action = str(scaling.get("action") or "")
            env = {
                "SLIPSTREAM_SCALING_NODE": str(scaling.get("node") or ""),
                "SLIPSTREAM_SCALING_VMS": str(scaling.get("vms") or ""),
                "SLIPSTREAM_SCALING_ACTION": action,
            }
            steps = self._recipes(EXECUTING, SCALING_HOOKS.get(action, ""), plan, env)
        else:
            apt = self.environ.get("STRATUS_AGENT_APT") or "apt-get"
            steps = [
                *self._recipes(EXECUTING, "pre-install", plan),
                *package_steps(plan, apt),
                *self._recipes(EXECUTING, "post-install", plan),
                *self._recipes(EXECUTING, "deployment", plan),
            ]
        for step in steps:
            outcome = self._run(step)
            if outcome.interrupted:
                return False
            if outcome.code != 0:
                self._abort(self._reason(step, outcome))
                return False
        return True

    def _send_reports(self) -> bool:
        try:
            plan = self.client.plan()
        except ToolError as exc:  # the logs still make a report worth sending
            log.error("no report recipes: %s", exc.message)
            plan = {}
        for step in self._recipes(SENDING_REPORTS, "report", plan):
            outcome = self._run(step)
            if outcome.interrupted:
                return False
            if outcome.code != 0:
                log.warning("%s (a report recipe: the run goes on)", self._reason(step, outcome))
        try:
            self.client.upload_report(self._pack_report())
            log.info("report uploaded")
        except ToolError as exc:
            log.error("report not uploaded: %s", exc.message)
        return True

    def _recipes(
        self, state: str, name: str, plan: Mapping[str, Any], env: Mapping[str, str] | None = None
    ) -> list[Step]:
        return recipe_steps(state, name, plan, self.locations.state_dir / "recipes", env)

    def _run(self, step: Step) -> Outcome:
        if step.state == EXECUTING:  # report steps leave the recipes' last ss-display shown
            self._display(f"{step.state}: {step.name} ({step.module})")
        return run_step(
            step,
            cwd=self.locations.workdir,
            env=self._recipe_env(step.env),
            log_path=self.locations.log_dir / f"{step.label}.log",
            shipper=self.shipper,
            in_state=lambda: self.follower.state == step.state,
        )

    def _recipe_env(self, extra: Mapping[str, str]) -> dict[str, str]:
        env = dict(self.environ)
        path = [str(self.locations.bin_dir), "/usr/local/bin", *env.get("PATH", "").split(":")]
        env.update(
            {
                "SLIPSTREAM_SERVICEURL": self.config.server,
                "SLIPSTREAM_DIID": self.config.run,
                "SLIPSTREAM_NODE_INSTANCE_NAME": self.config.node_instance,
                "SLIPSTREAM_REPORT_DIR": str(self.locations.report_dir),
                "STRATUS_AGENT_CONF": str(self.config.path),
                # Recipes run as root beside the file that holds it: giving them the token
                # spares every ss-* call in a recipe reading (and parsing) that file.
                "STRATUS_NODE_TOKEN": self.config.token,
                "STRATUS_SERVER_CA": self.config.ca,
                "PATH": ":".join(dict.fromkeys(part for part in path if part)),
            }
        )
        env.setdefault("HOME", str(self.locations.workdir))  # systemd gives services none
        env.update(extra)
        return env

    def _reason(self, step: Step, outcome: Outcome) -> str:
        reason = (
            f"{self.config.node_instance}: {step.name} recipe of {step.module} "
            f"exited with {outcome.code}"
        )
        if outcome.last_error_line:
            reason += f": {outcome.last_error_line}"
        return reason[:MAX_VALUE]

    def _abort(self, reason: str) -> None:
        log.error("aborting the run: %s", reason)
        try:
            self.client.abort(reason)
        except ToolError as exc:
            log.error("could not raise the abort flag: %s", exc.message)

    def _display(self, text: str) -> None:
        """Set this node's statecustom, even on an aborted run: the step runs until the run
        leaves its state, and people looking at the run want to see where each node was.
        It is only shown to people, so failing is logged, not raised."""
        try:
            self.client.display(text[:MAX_VALUE], ignore_abort=True)
        except ToolError as exc:
            log.warning("statecustom not set: %s", exc.message)

    def _pack_report(self) -> bytes:
        """A .tar.gz of the log directory (as logs/) and the report directory (as reports/)."""
        import io
        import tarfile

        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            for directory, name in (
                (self.locations.log_dir, "logs"),
                (self.locations.report_dir, "reports"),
            ):
                for path in sorted(directory.rglob("*")):
                    try:
                        archive.add(path, f"{name}/{path.relative_to(directory)}", recursive=False)
                    except OSError as exc:  # a file that went away: the rest still matters
                        log.warning("left out of the report: %s (%s)", path, exc)
        return buffer.getvalue()


def try_lock(state_dir: Path) -> IO[str] | None:
    """The agent's lock (``agent.pid``), held by the running agent; None if another has it."""
    import fcntl

    state_dir.mkdir(parents=True, exist_ok=True)
    # Held open for the agent's life; "a+" so that a contender does not wipe the running
    # agent's pid before it gets the lock.
    handle = (state_dir / "agent.pid").open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def agent_main(environ: Mapping[str, str]) -> int:
    """``run``: one agent per node (the lock says whether another runs), logging to agent.log."""
    import logging

    locations = Locations(environ)
    locations.log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(locations.log_dir / "agent.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    lock = try_lock(locations.state_dir)
    if lock is None:
        log.info("another agent is running: leaving the run to it")
        return OK
    with lock:
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        try:
            return Agent(connect(environ), locations, environ).run()
        except ToolError as exc:
            log.error("agent stopped: %s", exc.message)
            print(f"stratus-agent: {exc.message}", file=sys.stderr)
            return exc.code
        except Exception:
            log.exception("agent failed")
            raise
