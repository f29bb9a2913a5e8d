"""The supervisor: one thread that hands asked-for work to the orchestrator and, every second,
looks over every run that is not over.

A round enforces run timeouts, ends the bounded wait of SendingReports after an abort, marks
node instances whose machine is gone or stopped as lost, asks again for work a run still needs
(provisioning not finished, a teardown due again, a removal whose machines remain) and so picks
up whatever a killed server left. A round that fails is logged; the next one comes anyway.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.engine import Engine

from stratuslab.cloud.instances import InstanceService
from stratuslab.cloud.types import InstanceState
from stratuslab.db.models import InstanceRecord, NodeInstanceRecord, RunRecord, utcnow
from stratuslab.db.session import session_scope
from stratuslab.deploy.bulk import READY
from stratuslab.deploy.control import RunControl
from stratuslab.deploy.orchestrator import Orchestrator
from stratuslab.deploy.silence import Silence
from stratuslab.deploy.states import ACTIVE, FINAL, RunState
from stratuslab.deploy.work import Work, WorkQueue
from stratuslab.errors import StratusError

log = logging.getLogger(__name__)
LIVENESS_EVERY = 2.0  # seconds between checks that node instances' machines still run
LIVENESS_SHARE = 0.1  # at most this share of the time goes to those checks (a big run's
# listing is slow: then the checks come less often, never more than LIVENESS_EVERY apart
# times the ratio)


@dataclass(frozen=True)
class _Due:
    """What a round needs to know of one run."""

    id: str
    owner: str
    state: RunState
    deadline: datetime | None
    state_deadline: datetime | None
    aborted: bool
    timeout_s: int | None
    scaling: str | None
    teardown_attempts: int
    retry_at: datetime | None
    unprovisioned: bool  # node instances a provisioning job should take up (see below)
    clouds: frozenset[str]  # where its nodes' machines are


class Supervisor:
    def __init__(
        self,
        engine: Engine,
        *,
        control: RunControl,
        orchestrator: Orchestrator,
        work: WorkQueue,
        instances_for: Callable[[str], InstanceService],
        every: float = 1.0,
        silence: Silence | None = None,
    ) -> None:
        self.engine = engine
        self.control = control
        self.orchestrator = orchestrator
        self.work = work
        self.instances_for = instances_for
        self.every = every
        self.silence = silence or Silence()  # clouds whose listing fails, since when
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_liveness = 0.0
        self._liveness_every = LIVENESS_EVERY

    def start(self) -> None:
        """The first round now (work a previous server left), then the thread."""
        self._round_guarded()
        self._thread = threading.Thread(target=self._loop, name="supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        next_round = time.monotonic() + self.every
        while not self._stop.is_set():
            item = self.work.take(timeout=min(next_round - time.monotonic(), 0.25))
            if item is not None:
                self.orchestrator.schedule(*item)
            if time.monotonic() >= next_round:
                self._round_guarded()
                next_round = time.monotonic() + self.every

    def _round_guarded(self) -> None:
        try:
            self.round()
        except Exception:  # the supervisor must outlive any one bad round
            log.exception("supervision round failed")

    # -- one round ------------------------------------------------------------------------

    def round(self) -> None:
        now = utcnow()
        due = self._due()
        for run in due:
            try:
                self._look_over(run, now)
            except StratusError as exc:
                log.warning("supervising run %s: %s", run.id, exc)
        active = [run for run in due if run.state in ACTIVE]
        if active and time.monotonic() - self._last_liveness > self._liveness_every:
            started = time.monotonic()
            self._check_liveness(active)
            self._last_liveness = time.monotonic()
            took = self._last_liveness - started
            self._liveness_every = max(LIVENESS_EVERY, took / LIVENESS_SHARE)

    def _check_liveness(self, runs: list[_Due]) -> None:
        """Node instances whose machine is recorded as running but is gone or stopped on the
        backend are lost (the run aborts, naming them); so are those on a cloud silent for
        longer than the silence allows (deploy/silence.py). What the store says is read
        before the backends are listed: a machine recorded after the listing is judged next
        round, never against a listing older than its record."""
        ready = self._ready_machines(runs)
        if not ready:
            return
        machines = self._machines(runs)
        for run_id, nodes in ready.items():
            found = machines.get(run_id, {})
            for name, instance_id, cloud in nodes:
                try:
                    if self.silence.silent(cloud):
                        why = self.silence.lost(cloud)
                        if why is not None:
                            self.control.lost(run_id, name, why)
                        continue  # not judged by a listing its cloud did not give
                    state = found.get(name)
                    if state is None:
                        self.control.lost(
                            run_id, name, f"its machine {instance_id} is gone (deleted or killed)"
                        )
                    elif state not in (InstanceState.RUNNING, InstanceState.PENDING):
                        self.control.lost(
                            run_id, name, f"its machine {instance_id} is {state.value}"
                        )
                except StratusError as exc:
                    log.warning("supervising run %s: %s", run_id, exc)

    def _ready_machines(self, runs: list[_Due]) -> dict[str, list[tuple[str, str | None, str]]]:
        """Each run's node instances whose machine is recorded as running, with the cloud
        the machine is on."""
        found: dict[str, list[tuple[str, str | None, str]]] = {}
        with session_scope(self.engine) as session:
            for run_id, name, instance_id, cloud in session.execute(
                select(
                    NodeInstanceRecord.run_id,
                    NodeInstanceRecord.name,
                    NodeInstanceRecord.instance_id,
                    InstanceRecord.cloud,
                )
                # A node instance whose machine has no record is judged by the listings
                # (as gone), never by a cloud's silence.
                .outerjoin(InstanceRecord, InstanceRecord.id == NodeInstanceRecord.instance_id)
                .where(
                    NodeInstanceRecord.run_id.in_([run.id for run in runs]),
                    NodeInstanceRecord.removed.is_(False),
                    NodeInstanceRecord.lost.is_(False),
                    NodeInstanceRecord.provisioning == READY,
                )
            ):
                found.setdefault(run_id, []).append((name, instance_id, cloud or ""))
        return found

    def _machines(self, due: list[_Due]) -> dict[str, dict[str, InstanceState]]:
        """Every run's machines as the backends have them now: one listing per cloud for all
        runs, whoever owns them. A cloud whose listing fails is silent (deploy/silence.py)
        and adds nothing: nobody is judged lost on a partial answer."""
        clouds = sorted({cloud for run in due if run.state in ACTIVE for cloud in run.clouds})
        found: dict[str, dict[str, InstanceState]] = {}
        service = self.instances_for("")
        self.silence.only(set(clouds))
        for cloud in clouds:
            try:
                listed = service.machines_by_run([cloud])
            except StratusError as exc:
                log.warning("cannot list the machines of runs on %s: %s", cloud, exc)
                self.silence.failed(cloud, str(exc))
                continue
            self.silence.answered(cloud)
            for run_id, machines in listed.items():
                mine = found.setdefault(run_id, {})
                for name, state in machines.items():  # one cloud's answer per node instance
                    mine.setdefault(name, state)
        return found

    def _look_over(self, run: _Due, now: datetime) -> None:
        if run.state is RunState.FINALIZING:
            if run.teardown_attempts == 0 or (run.retry_at is not None and now >= run.retry_at):
                self.orchestrator.schedule(run.id, Work.TEARDOWN)
            return  # a teardown that gave up waits for `stratus run terminate`
        if run.state is RunState.INITIALIZING or run.unprovisioned:
            # Provisioning not finished, or machines a killed server left half recorded: the
            # job adopts what the backend has whatever state the run is in.
            self.orchestrator.schedule(run.id, Work.PROVISION)
        elif run.scaling == "vm_remove" and run.state is RunState.READY:
            self.orchestrator.schedule(run.id, Work.SHRINK)
        overdue = run.deadline is not None and now > run.deadline
        if overdue and run.state in ACTIVE and not run.aborted:
            self.control.abort(
                run.id,
                f"the run timed out after {run.timeout_s} s in {run.state.value}",
                timed_out=True,
            )
        elif run.state_deadline is not None and now > run.state_deadline:
            self.control.give_up_waiting(run.id)

    def _due(self) -> list[_Due]:
        with session_scope(self.engine) as session:
            runs = session.scalars(
                select(RunRecord).where(RunRecord.state.not_in([s.value for s in FINAL]))
            ).all()
            unprovisioned: dict[str, set[str]] = {}
            for run_id, provisioning in session.execute(
                select(NodeInstanceRecord.run_id, NodeInstanceRecord.provisioning)
                .where(
                    NodeInstanceRecord.run_id.in_([r.id for r in runs]),
                    NodeInstanceRecord.removed.is_(False),
                    NodeInstanceRecord.provisioning.in_(("pending", "creating")),
                )
                .distinct()
            ):
                unprovisioned.setdefault(run_id, set()).add(provisioning)
            placed: dict[str, set[str]] = {}  # the clouds the runs' node instances went to
            for run_id, cloud in session.execute(
                select(NodeInstanceRecord.run_id, NodeInstanceRecord.cloud)
                .where(
                    NodeInstanceRecord.run_id.in_([r.id for r in runs]),
                    NodeInstanceRecord.cloud.is_not(None),
                )
                .distinct()
            ):
                placed.setdefault(run_id, set()).add(cloud or "")
            return [
                _Due(
                    id=r.id,
                    owner=r.owner,
                    state=RunState(r.state),
                    deadline=r.deadline,
                    state_deadline=r.state_deadline,
                    aborted=r.abort_reason is not None,
                    timeout_s=r.timeout_s,
                    scaling=(r.scaling or {}).get("action"),
                    teardown_attempts=r.teardown_attempts,
                    retry_at=r.retry_at,
                    unprovisioned=self._needs_provisioning(r, unprovisioned.get(r.id, set())),
                    clouds=frozenset(n["cloud"] for n in r.plan.get("nodes", {}).values())
                    | placed.get(r.id, set()),
                )
                for r in runs
            ]

    @staticmethod
    def _needs_provisioning(run: RunRecord, provisioning: set[str]) -> bool:
        """Whether the run has node instances whose provisioning a job should take up:
        pending ones while it provisions, half-made ones (creating) whatever its state."""
        return "creating" in provisioning or (
            bool(provisioning) and run.state == RunState.PROVISIONING
        )
