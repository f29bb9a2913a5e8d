"""The orchestrator: provisions a run's instances and tears them down.

It works in the server process, one job per run at a time, each under the run's claim.
Provisioning asks the cloud layer for instances (never a connector directly), each recorded
before it is created and tagged with its run and node instance, with the bootstrap as
user-data; it also adopts what a killed server left half made, whatever state the run is in
now. A node instance's fresh volumes are made before its machine and every volume it mounts is
claimed in its request (``deploy/run_volumes.py``). Teardown destroys every instance recorded
for the run, then whatever the backend still has with the run's tag, then the run's fresh
volumes; a teardown that fails is recorded and retried with back-off, a bounded
number of times (see ``RunControl.teardown_failed``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.engine import Engine

from stratuslab.cloud.instances import InstanceService, InstanceView, Prepared, RunRequest
from stratuslab.cloud.types import InstanceState
from stratuslab.cloud.volume_claims import VolumeClaim
from stratuslab.db.models import NodeInstanceRecord
from stratuslab.db.session import session_scope
from stratuslab.deploy import bootstrap
from stratuslab.deploy.claims import Claims
from stratuslab.deploy.control import RunControl
from stratuslab.deploy.plan import Plan
from stratuslab.deploy.run_volumes import Member, RunVolumes
from stratuslab.deploy.runs import RunService
from stratuslab.deploy.states import RunState
from stratuslab.deploy.tokens import NodeTokens
from stratuslab.deploy.work import Work
from stratuslab.errors import (
    BackendError,
    BackendUnavailable,
    NotFound,
    NotSupported,
    StratusError,
)
from stratuslab.principal import SERVER

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclass(frozen=True)
class OrchestratorConfig:
    agent_url: str  # where nodes reach the server, over TLS
    agent_ca: Callable[[], str]  # the site CA's certificate (PEM): the only one nodes trust
    name_prefix: str = "inst"
    parallel: int = 16  # instances created or destroyed at once per run
    teardown_attempts: int = 6  # then the run waits in Finalizing for `run terminate`
    teardown_backoff: float = 5.0  # seconds before the second attempt, doubling after


class _StillProvisioning:
    """Whether the run is still in Provisioning, asked of the store at most every half
    second: a run of thousands of node instances creates them in a loop that must stop soon
    after the run is aborted, without reading the run for each one."""

    EVERY = 0.5

    def __init__(
        self, runs: RunService, run_id: str, holds: Callable[[str], bool] = lambda _r: True
    ) -> None:
        self.runs, self.run_id = runs, run_id
        self.holds = holds  # whether this process still holds the run's claim
        self._lock = threading.Lock()
        self._asked = 0.0
        self._answer = True

    def __call__(self) -> bool:
        if not self.holds(self.run_id):
            return False  # another process took the run over: it makes what is left
        with self._lock:
            if time.monotonic() - self._asked > self.EVERY:
                state = self.runs.summary(self.run_id, caller=SERVER)["state"]
                self._answer = state == RunState.PROVISIONING
                self._asked = time.monotonic()
            return self._answer


class Orchestrator:
    def __init__(
        self,
        engine: Engine,
        *,
        runs: RunService,
        control: RunControl,
        tokens: NodeTokens,
        claims: Claims,
        instances_for: Callable[[str], InstanceService],
        submit: Callable[..., object],
        config: OrchestratorConfig,
        volumes: RunVolumes | None = None,
    ) -> None:
        self.engine = engine
        self.runs = runs
        self.control = control
        self.tokens = tokens
        self.claims = claims
        self.instances_for = instances_for
        self.submit = submit
        self.config = config
        self.volumes = volumes  # the runs' volumes (deploy/run_volumes.py); None: no volumes
        self._in_flight: set[str] = set()  # runs with a job under way in this process
        self._lock = threading.Lock()

    # -- scheduling -----------------------------------------------------------------------

    def schedule(self, run_id: str, work: Work) -> bool:
        """Start ``work`` for a run, unless a job of that run is under way here: one job per
        run at a time, so that a teardown never runs beside the provisioning still creating
        instances it would miss. Work refused meanwhile is not lost: each supervision round
        asks again for whatever a run still needs. True when started."""
        with self._lock:
            if run_id in self._in_flight:
                return False
            self._in_flight.add(run_id)
        job = {
            Work.PROVISION: self._provision,
            Work.SHRINK: self._shrink,
            Work.TEARDOWN: self._teardown,
        }[work]
        self.submit(self._guarded, run_id, work, job)
        return True

    def busy(self, run_id: str) -> bool:
        with self._lock:
            return run_id in self._in_flight

    def _guarded(self, run_id: str, work: Work, job: Callable[[str], None]) -> None:
        try:
            with self.claims.claimed(run_id) as claimed:
                if claimed:
                    job(run_id)
        except Exception:
            log.exception("%s of run %s failed", work, run_id)
        finally:
            with self._lock:
                self._in_flight.discard(run_id)

    # -- provisioning ---------------------------------------------------------------------

    def _provision(self, run_id: str) -> None:
        self.control.start_provisioning(run_id)  # Initializing -> Provisioning, if not yet
        nodes = self._nodes(run_id, provisioning=("pending", "creating"))
        if not nodes:
            return
        owner = self.runs.owner(run_id)
        service = self.instances_for(owner)
        half_made = [n for n in nodes if n.provisioning == "creating" and n.instance_id]
        adopted = set(self._in_parallel(lambda n: self._adopted(run_id, service, n), half_made))
        provisioning = _StillProvisioning(self.runs, run_id, self.claims.holds)
        if not provisioning():
            for node in nodes:  # its machine is gone and will not be made now
                if node.provisioning == "creating" and node.name not in adopted:
                    self.control.provisioning_failed(run_id, node.name, "never created")
            return  # aborted, terminated or past Provisioning: start nothing more
        todo = [n for n in nodes if n.name not in adopted]
        plan = self.runs.plan(run_id, caller=SERVER)
        mounts = self._volumes(run_id, owner, plan, todo, provisioning)
        if not provisioning():
            return  # stopped while making volumes: teardown deletes what was made
        todo = [n for n in todo if n.name in mounts or not plan.nodes[n.node].volumes]
        tokens = self.tokens.issue_many(run_id, [n.name for n in todo])
        outcomes = service.prepare_many(
            [
                self._request(run_id, plan, node, tokens[node.name], mounts.get(node.name, ()))
                for node in todo
            ]
        )
        accepted: list[tuple[NodeInstanceRecord, Prepared]] = []
        for node, outcome in zip(todo, outcomes, strict=True):
            if isinstance(outcome, StratusError):
                self.control.provisioning_failed(run_id, node.name, str(outcome))
            else:
                accepted.append((node, outcome))
        self.control.creating(run_id, {n.name: p.views[0].id for n, p in accepted})
        node_of = {id(prepared): node for node, prepared in accepted}
        recorded: list[tuple[str, Future[None]]] = []

        def made(prepared: Prepared, outcome: list[InstanceView] | StratusError) -> None:
            node = node_of[id(prepared)]
            if isinstance(outcome, StratusError):
                self.control.provisioning_failed(run_id, node.name, str(outcome))
                return
            (view,) = outcome
            if view.state == InstanceState.RUNNING and view.address:
                # Not waited for here: machines that come up together are recorded together.
                future = self.control.provisioning(
                    run_id, node.name, instance_id=view.id, address=view.address
                )
                recorded.append((node.name, future))
            else:
                self.control.provisioning_failed(
                    run_id, node.name, view.error or f"instance is {view.state}"
                )

        service.provision_many(
            [prepared for _, prepared in accepted], on_each=made, proceed=provisioning
        )
        for name, future in recorded:
            error = future.exception()
            if error is not None:
                log.warning("run %s: recording %s as provisioned failed: %s", run_id, name, error)

    def _volumes(
        self,
        run_id: str,
        owner: str,
        plan: Plan,
        todo: list[NodeInstanceRecord],
        proceed: Callable[[], bool],
    ) -> dict[str, tuple[VolumeClaim, ...]]:
        """The volume claims of each node instance of ``todo`` whose node has volumes, fresh
        ones made first; an instance whose volumes fail fails its provisioning with the reason,
        and is left out, as is one not reached when the run stopped provisioning."""
        members = [Member(n.name, n.node, n.idx) for n in todo if plan.nodes[n.node].volumes]
        if not members:
            return {}
        found: Mapping[str, tuple[VolumeClaim, ...] | StratusError]
        if self.volumes is None:
            found = {m.name: NotSupported("this server makes no volumes") for m in members}
        else:
            found = self.volumes.claims(run_id, owner, plan, members, proceed=proceed)
        claims: dict[str, tuple[VolumeClaim, ...]] = {}
        for name, outcome in found.items():
            if isinstance(outcome, StratusError):
                self.control.provisioning_failed(run_id, name, str(outcome))
            else:
                claims[name] = outcome
        return claims

    def _request(
        self,
        run_id: str,
        plan: Plan,
        node: NodeInstanceRecord,
        token: str,
        volumes: tuple[VolumeClaim, ...] = (),
    ) -> RunRequest:
        spec = plan.nodes[node.node]
        cloud = node.cloud or spec.cloud  # where the run placed it (deploy/placing.py)
        return RunRequest(
            image=spec.image_on(cloud),
            name=self.instance_name(run_id, node.node, node.idx),
            cloud=cloud,
            user_data=bootstrap.user_data(
                server=self.config.agent_url,
                ca=self.config.agent_ca(),
                run_id=run_id,
                node_instance=node.name,
                token=token,
            ),
            run_id=run_id,
            node_instance=node.name,
            volumes=volumes,
        )

    def _in_parallel(self, work: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
        if not items:
            return []
        with ThreadPoolExecutor(max_workers=min(self.config.parallel, len(items))) as pool:
            return list(pool.map(work, items))

    def instance_name(self, run_id: str, node: str, index: int) -> str:
        return f"{self.config.name_prefix}-{run_id[:8]}-{node.replace('_', '-')}-{index}"

    def _adopted(
        self, run_id: str, service: InstanceService, node: NodeInstanceRecord
    ) -> str | None:
        """After a crash mid-creation: adopt the instance if it came up (its name), else
        destroy what there is of it (None: it is to be made again, or given up)."""
        try:
            view = service.get(node.instance_id or "")
        except NotFound:
            return None
        if view.state == InstanceState.RUNNING and view.address:
            self.control.provisioned(run_id, node.name, instance_id=view.id, address=view.address)
            return node.name
        if view.state != InstanceState.GONE:
            service.kill(view.id)
        return None

    # -- teardown -------------------------------------------------------------------------

    def _shrink(self, run_id: str) -> None:
        """Destroy the machines of node instances removed from a scalable run, then their
        fresh volumes."""
        owner = self.runs.owner(run_id)
        service = self.instances_for(owner)
        with session_scope(self.engine) as session:
            removed = session.execute(
                select(
                    NodeInstanceRecord.instance_id,
                    NodeInstanceRecord.name,
                    NodeInstanceRecord.node,
                    NodeInstanceRecord.idx,
                ).where(
                    NodeInstanceRecord.run_id == run_id,
                    NodeInstanceRecord.removed.is_(True),
                    NodeInstanceRecord.instance_id.is_not(None),
                )
            ).all()
        for instance_id, *_ in removed:
            if instance_id and service.get(instance_id).state != InstanceState.GONE:
                service.kill(instance_id)
        if self.volumes is not None:
            plan = self.runs.plan(run_id, caller=SERVER)
            members = [Member(name, node, idx) for _, name, node, idx in removed]
            self.volumes.delete_removed(run_id, owner, plan, members)
        self.control.begin_round(run_id)

    def _teardown(self, run_id: str) -> None:
        run = self.runs.summary(run_id, caller=SERVER)
        if run["state"] != RunState.FINALIZING:
            return
        try:
            destroyed = self._destroy_all(run_id, run["owner"])
        except StratusError as exc:
            self.control.teardown_failed(
                run_id,
                str(exc),
                attempts=self.config.teardown_attempts,
                backoff=self.config.teardown_backoff,
                unreachable=isinstance(exc, BackendUnavailable),
            )
            return
        self.control.finish(run_id, destroyed=destroyed)

    def _destroy_all(self, run_id: str, owner: str) -> int:
        """Destroy what the store records for the run, then what the backend still has with
        the run's tag, then the run's fresh volumes (bound ones stay). Raises the first
        failure, after trying every instance (or every volume)."""
        service = self.instances_for(owner)
        live = [v.id for v in service.for_run(run_id) if v.state != InstanceState.GONE]
        failures = service.kill_many(live)
        if failures:
            # A cloud that does not answer may come back: then the teardown is tried until it
            # does (deploy/control.py); any other refusal is given up on in the end.
            unreachable = all(isinstance(f, BackendUnavailable) for f in failures)
            raise (BackendUnavailable if unreachable else BackendError)(
                f"{len(failures)} of {len(live)} instance(s) could not be destroyed: "
                + "; ".join(str(f) for f in failures[:3])
            )
        clouds = {spec.cloud for spec in self.runs.plan(run_id, caller=SERVER).nodes.values()}
        with session_scope(self.engine) as session:  # and wherever it placed node instances
            clouds.update(
                c
                for c in session.scalars(
                    select(NodeInstanceRecord.cloud)
                    .where(NodeInstanceRecord.run_id == run_id)
                    .distinct()
                )
                if c
            )
        swept = service.sweep_run(run_id, sorted(clouds))
        for name in swept:
            log.warning("run %s: destroyed %s, found by its tag", run_id, name)
        if self.volumes is not None:
            deleted = self.volumes.delete_for_run(run_id, owner)
            if deleted:
                log.info("run %s: deleted %d fresh volume(s)", run_id, len(deleted))
        return len(live) + len(swept)

    # -- what the supervisor asks ---------------------------------------------------------

    def _nodes(self, run_id: str, provisioning: tuple[str, ...]) -> list[NodeInstanceRecord]:
        with session_scope(self.engine) as session:
            return list(
                session.scalars(
                    select(NodeInstanceRecord).where(
                        NodeInstanceRecord.run_id == run_id,
                        NodeInstanceRecord.removed.is_(False),
                        NodeInstanceRecord.provisioning.in_(provisioning),
                    )
                )
            )
