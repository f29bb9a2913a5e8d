"""Runs as users see them: starting one, finding one, reading one and its events.

Node tokens (``tokens``), recipe output (``logs``), report archives (``reports``) and runtime
parameters (``params``) are services of their own; the state machine is ``control``.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.engine import Engine

from stratuslab.cloud.quotas import Quotas
from stratuslab.db.models import (
    NodeInstanceRecord,
    RunEventRecord,
    RunRecord,
    RuntimeParameterRecord,
)
from stratuslab.db.session import session_scope
from stratuslab.deploy import access, events, overrides, placing, reservations, secrets
from stratuslab.deploy.imagecheck import DecideImage, check_plan
from stratuslab.deploy.keys import initial_rows
from stratuslab.deploy.model import ApplicationModule
from stratuslab.deploy.modules import ModuleStore, split_address
from stratuslab.deploy.plan import Plan, resolve
from stratuslab.deploy.rights import Right
from stratuslab.deploy.run_requests import RunRequest as RunRequest
from stratuslab.deploy.run_requests import check_request
from stratuslab.deploy.run_volumes import shown as volumes_shown
from stratuslab.deploy.run_volumes import states as volume_states
from stratuslab.deploy.secrets import RunSecrets
from stratuslab.deploy.states import ACTIVE, FINAL, RunState
from stratuslab.deploy.tx import run_topic, transaction
from stratuslab.deploy.work import Work, WorkQueue
from stratuslab.errors import Forbidden, Invalid
from stratuslab.hub import Hub
from stratuslab.principal import SERVER, Principal

_SHOWN = ("hostname", "vmstate", "statecustom", "abort", "url.service")
MAX_EVENTS = 1000  # events answered by one read
DEFAULT_MAX_INSTANCES = 10_000  # node instances in one run, unless the site says otherwise


class RunService:
    def __init__(
        self,
        engine: Engine,
        hub: Hub,
        *,
        modules: ModuleStore,
        work: WorkQueue,
        secrets: RunSecrets,
        max_instances: int = DEFAULT_MAX_INSTANCES,
        quotas: Quotas | None = None,
        decide_image: DecideImage | None = None,
        baked_images: Callable[[Plan, str], Plan] | None = None,
        bind_volumes: Callable[[Plan, str], Plan] | None = None,
        place: placing.Place | None = None,
    ) -> None:
        self.engine = engine
        # Which cloud each node instance goes to (deploy/placing.py), decided here, once.
        self.place = place
        self.quotas = quotas
        self.decide_image = decide_image  # the site's trust policy, for every node's image
        # The plan with each node whose component is baked starting from its image (the
        # run's owner's, deploy/bake.py); chosen once, here, and kept in the plan.
        self.baked_images = baked_images
        # The plan with each bound volume looked up as the run's owner reaches it, or the
        # refusal naming the node (deploy/run_volumes.py).
        self.bind_volumes = bind_volumes
        self.hub = hub
        self.modules = modules
        self.work = work
        self.secrets = secrets
        self.max_instances = max_instances

    # -- starting -------------------------------------------------------------------------

    def create(self, request: RunRequest, *, caller: Principal) -> dict[str, Any]:
        """Check the application against its modules and record a run in Initializing, owned by
        ``caller``, with every runtime parameter it starts with; its provisioning is asked for
        once recorded. A run over its owner's quota (every node instance at the size the plan
        asks) is refused (``CapacityExceeded``) with nothing recorded; once recorded, it holds
        its node instances against the quota (``deploy/reservations.py``). A node's image that
        the site's trust policy refuses refuses the run too (``Untrusted``, imagecheck.py), and
        so does a bound volume the owner cannot attach as the plan says (run_volumes.py)."""
        access.users_only(caller, "start runs")
        owner = caller.user or ""
        if not owner:
            raise Forbidden("only a user starts runs")
        check_request(request, max_instances=self.max_instances)
        path, version = split_address(request.module)
        # The caller must be allowed to run the application and to read every module it
        # reaches (deploy/rights.py); a run of someone's public module is still the caller's.
        stored = self.modules.get(path, version, caller=caller, need=Right.RUN)
        application = stored.parse()
        if not isinstance(application, ApplicationModule):
            raise Invalid(
                f"{path} is a {stored.kind}: deploy an application", hint="see docs/modules.md"
            )
        application = overrides.apply(
            application,
            self.engine,
            clouds=request.clouds,
            max_provisioning_failures=request.max_provisioning_failures,
        )
        counts = {
            name: request.multiplicity.get(name, node.multiplicity)
            for name, node in application.nodes.items()
        }
        if sum(counts.values()) > self.max_instances:
            raise Invalid(
                f"the run would have {sum(counts.values())} node instances; this site allows "
                f"at most {self.max_instances} in one run",
                hint="lower the multiplicities",
            )
        plan = resolve(
            application,
            stored.version,
            self.modules.lookup_for(caller),
            given=request.given,
            multiplicities=request.multiplicity,
        )
        if self.bind_volumes is not None:
            plan = self.bind_volumes(plan, owner)
        if self.baked_images is not None and not request.pristine:
            plan = self.baked_images(plan, owner)
        return self.record(plan, request, caller=caller)

    def record(self, plan: Plan, request: RunRequest, *, caller: Principal) -> dict[str, Any]:
        """Record a run of ``plan`` (resolved and checked) as :meth:`create` does; a bake's
        run (deploy/bake.py) comes here with the plan of one node's install steps."""
        owner = caller.user or ""
        path, version = plan.application, plan.application_version
        if self.decide_image is not None:
            check_plan(plan, self.decide_image)  # Untrusted, before anything is recorded
        members = [
            placing.Member(node, index)
            for node, spec in plan.nodes.items()
            for index in range(1, spec.multiplicity + 1)
        ]
        # Placed before the transaction: placement asks the backends, which may be slow.
        placed = placing.place(self.place, owner, plan, members)
        facts = placing.facts(placed)
        run_id = str(uuid.uuid4())
        now = datetime.now(UTC)
        tags = ",".join(request.tags)
        with transaction(self.engine, self.hub) as tx:
            if self.quotas is not None:  # checked and recorded under the owner's lock
                demand = reservations.demand_of(plan, {n: p.cloud for n, p in placed.items()})
                self.quotas.enforce(tx.session, owner, demand)
            tx.session.add(
                RunRecord(
                    id=run_id,
                    owner=owner,
                    module_path=path,
                    module_version=version,
                    state=RunState.INITIALIZING.value,
                    keep_running=request.keep_running.value,
                    mutable=request.mutable,
                    tags=tags,
                    plan=plan.to_dict(),
                    given=dict(request.given),
                    timeout_s=math.ceil(request.timeout_s) if request.timeout_s else None,
                    deadline=now + timedelta(seconds=request.timeout_s)
                    if request.timeout_s
                    else None,
                    created_at=now,
                    last_state_change=now,
                )
            )
            tx.session.flush()
            # Rows written in bulk: a run of ten thousand node instances has ten thousand of
            # these and a hundred thousand parameters, too many to build as objects.
            connection = tx.session.connection()  # Core: one statement for all the rows
            connection.execute(
                insert(cast(Table, NodeInstanceRecord.__table__)),
                [
                    {
                        "run_id": run_id,
                        "name": member.name,
                        "node": member.node,
                        "idx": member.index,
                        "token_hash": "",
                        "cloud": placed[member.name].cloud,
                        "placement": placed[member.name].reason,
                    }
                    for member in members
                ],
            )
            connection.execute(
                insert(cast(Table, RuntimeParameterRecord.__table__)),
                [
                    {
                        "run_id": run_id,
                        "key": row.key,
                        "value": facts.get(row.key, row.value),
                        "kind": row.kind,
                        "description": row.description,
                        "set_at": now if facts.get(row.key, row.value) is not None else None,
                        "secret": row.secret,
                    }
                    for row in initial_rows(plan, given=request.given, tags=tags)
                ],
            )
            tx.event(run_id, events.created(f"{path}/{version}", owner))
            for event in placing.announced(placed):
                tx.event(run_id, event)
            tx.later(lambda: self.work.ask(run_id, Work.PROVISION))
        return self.view(run_id, caller=caller)

    # -- reading --------------------------------------------------------------------------

    def resolve(self, ref: str, *, caller: Principal) -> str:
        """A run's id from its id or a unique prefix of it (at least 4 characters), among the
        runs ``caller`` may reach: another user's run is not there, even to a prefix."""
        if len(ref) > 36:
            raise access.no_run(ref)
        with session_scope(self.engine) as session:
            exact = session.get(RunRecord, ref)
            if exact is not None and access.may_reach(caller, run_id=ref, owner=exact.owner):
                return ref
            query = select(RunRecord.id).where(RunRecord.id.startswith(ref, autoescape=True))
            if caller.is_node:
                query = query.where(RunRecord.id == caller.run_id)
            elif caller.owner_filter is not None:
                query = query.where(RunRecord.owner == caller.owner_filter)
            found = session.scalars(query.limit(2)).all() if len(ref) >= 4 else []
        if len(found) == 1:
            return found[0]
        if found:
            raise Invalid(f"{ref!r} matches several runs", hint="give more of the id")
        raise access.no_run(ref)

    def view(self, run_id: str, *, caller: Principal) -> dict[str, Any]:
        with session_scope(self.engine) as session:
            run = access.checked(session.get(RunRecord, run_id), run_id, caller)
            nodes = session.scalars(
                select(NodeInstanceRecord)
                .where(NodeInstanceRecord.run_id == run_id)
                .order_by(NodeInstanceRecord.node, NodeInstanceRecord.idx)
            ).all()
            masked = {
                key: secrets.shown(value, secret)
                for key, value, secret in session.execute(
                    select(
                        RuntimeParameterRecord.key,
                        RuntimeParameterRecord.value,
                        RuntimeParameterRecord.secret,
                    ).where(
                        RuntimeParameterRecord.run_id == run_id,
                        RuntimeParameterRecord.kind.in_(("standard", "global")),
                    )
                )
            }
            # A value a node built from a secret is shown redacted, as in every listing.
            shown = self.secrets.redact_values(run_id, masked)
            states = volume_states(session, run_id, run.plan or {})
            return _run_dict(run, shown) | {
                # Which nodes start from a baked image (deploy/bake.py), as the plan keeps it.
                "baked": {
                    name: node["baked"]
                    for name, node in (run.plan or {}).get("nodes", {}).items()
                    if node.get("baked")
                },
                "nodes": [
                    {
                        "name": n.name,
                        "node": n.node,
                        "index": n.idx,
                        "instance_id": n.instance_id,
                        "provisioning": n.provisioning,
                        "removed": n.removed,
                        "lost": n.lost,
                        "completed": n.completed,
                        "cloud": n.cloud or (run.plan or {})["nodes"][n.node]["cloud"],
                        "placement": n.placement,  # why there (deploy/placing.py)
                        **{k.replace(".", "_"): shown.get(f"{n.name}:{k}") for k in _SHOWN},
                        "volumes": volumes_shown(run.plan or {}, run, n, states),
                    }
                    for n in nodes
                ],
            }

    def summary(self, run_id: str, *, caller: Principal) -> dict[str, Any]:
        with session_scope(self.engine) as session:
            return _run_dict(access.checked(session.get(RunRecord, run_id), run_id, caller), {})

    def list_runs(
        self,
        *,
        caller: Principal,
        all_owners: bool = False,
        active_only: bool = False,
        offset: int = 0,
        limit: int = 20,
    ) -> list[dict[str, Any]]:
        """The caller's runs, newest first; with ``all_owners``, an administrator's view of every
        owner's (asked by anybody else, it is still their own)."""
        owner = None if all_owners and caller.sees_all else (caller.user or "")
        with session_scope(self.engine) as session:
            query = (
                select(RunRecord)
                .order_by(RunRecord.created_at.desc())
                .offset(max(offset, 0))
                .limit(min(max(limit, 1), 500))
            )
            if owner is not None:
                query = query.where(RunRecord.owner == owner)
            if active_only:
                query = query.where(RunRecord.state.not_in([s.value for s in FINAL]))
            return [_run_dict(run, {}) for run in session.scalars(query)]

    def settled(self, run_id: str) -> bool:
        """Ended, or waiting in Ready with every node done (its instances kept)."""
        with session_scope(self.engine) as session:
            run = access.checked(session.get(RunRecord, run_id), run_id, SERVER)
            if RunState(run.state) in FINAL:
                return True
            if run.state != RunState.READY or run.scaling is not None:
                return False  # a scale action under way goes round again
            return run.waiting == 0

    def ended(self, run_id: str) -> bool:
        return RunState(self.summary(run_id, caller=SERVER)["state"]) in FINAL

    def working(self) -> bool:
        """Whether any run needs the server: provisioning, working nodes, or tearing down."""
        with session_scope(self.engine) as session:
            states = [s.value for s in ACTIVE | {RunState.FINALIZING}]
            return (
                session.scalar(select(RunRecord.id).where(RunRecord.state.in_(states)).limit(1))
                is not None
            )

    def plan(self, run_id: str, *, caller: Principal) -> Plan:
        with session_scope(self.engine) as session:
            return Plan.from_dict(
                access.checked(session.get(RunRecord, run_id), run_id, caller).plan
            )

    def owner(self, run_id: str) -> str:
        return str(self.summary(run_id, caller=SERVER)["owner"])

    def events(
        self,
        run_id: str,
        *,
        caller: Principal,
        after: int = 0,
        limit: int = MAX_EVENTS,
        kinds: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """The run's events after ``after``, oldest first; only those of ``kinds`` if given
        (what a verdict is read from, among the thousands a large run makes)."""
        with session_scope(self.engine) as session:
            access.checked(session.get(RunRecord, run_id), run_id, caller)
            query = select(RunEventRecord).where(
                RunEventRecord.run_id == run_id, RunEventRecord.id > after
            )
            if kinds is not None:
                query = query.where(RunEventRecord.kind.in_(list(kinds)))
            rows = session.scalars(
                query.order_by(RunEventRecord.id).limit(min(max(limit, 1), MAX_EVENTS))
            )
            return [
                {
                    "id": e.id,
                    "at": e.at.isoformat(),
                    "kind": e.kind,
                    "node_instance": e.node_instance,
                    "fields": dict(e.fields or {}),
                    "message": e.message,
                }
                for e in rows
            ]

    def watch_topic(self, run_id: str) -> str:
        return run_topic(run_id)


def _run_dict(run: RunRecord, params: Mapping[str, str | None]) -> dict[str, Any]:
    return {
        "id": run.id,
        "owner": run.owner,
        "module": f"{run.module_path}/{run.module_version}",
        "state": run.state,
        "abort_reason": run.abort_reason,
        "timed_out": run.timed_out,
        "cancelled": run.cancelled,
        "keep_running": run.keep_running,
        "mutable": run.mutable,
        "scaling": run.scaling,
        "tags": [t for t in run.tags.split(",") if t],
        "service_url": params.get("ss:url.service"),
        "timeout_s": run.timeout_s,
        "waiting": run.waiting if RunState(run.state) not in FINAL else 0,
        "teardown": {
            "attempts": run.teardown_attempts,
            "error": run.teardown_error,
            "retry_at": run.retry_at.isoformat() if run.retry_at else None,
        }
        if run.teardown_attempts
        else None,
        "created_at": run.created_at.isoformat(),
        "last_state_change": run.last_state_change.isoformat(),
        "ended_at": run.ended_at.isoformat() if run.ended_at else None,
    }
