"""Runs as users see them: starting one, reading one, its events, recipe logs and reports, and
the tokens its node instances prove themselves with."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Engine

from stratuslab.db.models import (
    NodeInstanceRecord,
    RunEventRecord,
    RunLogRecord,
    RunRecord,
    RunReportRecord,
    RuntimeParameterRecord,
)
from stratuslab.db.session import session_scope
from stratuslab.deploy.control import waiting_for
from stratuslab.deploy.keys import initial_rows
from stratuslab.deploy.model import ApplicationModule
from stratuslab.deploy.modules import ModuleStore, split_address
from stratuslab.deploy.plan import Plan, resolve
from stratuslab.deploy.states import ACTIVE, FINAL, KeepRunning, RunState
from stratuslab.deploy.tx import run_topic, transaction
from stratuslab.errors import Invalid, NotFound
from stratuslab.hub import Hub

_SHOWN = ("hostname", "vmstate", "statecustom", "abort", "url.service")


@dataclass(frozen=True)
class RunRequest:
    module: str  # "path" (the newest version) or "path/N"
    given: Mapping[str, str] = field(
        default_factory=dict
    )  # "web:greeting" -> "hi", "ss:site" -> "x"
    multiplicity: Mapping[str, int] = field(default_factory=dict)
    keep_running: KeepRunning = KeepRunning.ON_SUCCESS
    tags: Sequence[str] = ()
    timeout_s: int | None = None
    mutable: bool = False


class RunService:
    def __init__(self, engine: Engine, hub: Hub, *, modules: ModuleStore, reports: Path) -> None:
        self.engine = engine
        self.hub = hub
        self.modules = modules
        self.reports_dir = reports

    # -- starting -------------------------------------------------------------------------

    def create(self, request: RunRequest, *, owner: str) -> dict[str, Any]:
        """Check the application against its modules and record a run in Initializing, with
        every runtime parameter it starts with. Nothing is provisioned here."""
        path, version = split_address(request.module)
        stored = self.modules.get(path, version)
        application = stored.parse()
        if not isinstance(application, ApplicationModule):
            raise Invalid(
                f"{path} is a {stored.kind}: deploy an application", hint="see docs/modules.md"
            )
        if request.timeout_s is not None and request.timeout_s <= 0:
            raise Invalid(f"the run timeout must be positive, not {request.timeout_s} s")
        plan = resolve(
            application,
            stored.version,
            self.modules.lookup,
            given=request.given,
            multiplicities=request.multiplicity,
        )
        run_id = str(uuid.uuid4())
        now = datetime.now(UTC)
        tags = ",".join(request.tags)
        with transaction(self.engine, self.hub) as tx:
            tx.session.add(
                RunRecord(
                    id=run_id,
                    owner=owner,
                    module_path=path,
                    module_version=stored.version,
                    state=RunState.INITIALIZING.value,
                    keep_running=request.keep_running.value,
                    mutable=request.mutable,
                    tags=tags,
                    plan=plan.to_dict(),
                    given=dict(request.given),
                    timeout_s=request.timeout_s,
                    deadline=now + timedelta(seconds=request.timeout_s)
                    if request.timeout_s
                    else None,
                    created_at=now,
                    last_state_change=now,
                )
            )
            tx.session.flush()
            for node, spec in plan.nodes.items():
                for index in range(1, spec.multiplicity + 1):
                    tx.session.add(
                        NodeInstanceRecord(
                            run_id=run_id,
                            name=f"{node}.{index}",
                            node=node,
                            idx=index,
                            token_hash="",
                        )
                    )
            tx.session.add_all(
                RuntimeParameterRecord(
                    run_id=run_id,
                    key=row.key,
                    value=row.value,
                    kind=row.kind,
                    description=row.description,
                    set_at=now if row.value is not None else None,
                )
                for row in initial_rows(plan, given=request.given, tags=tags)
            )
            tx.event(run_id, "state", f"Initializing {path}/{stored.version} for {owner}")
        return self.view(run_id)

    # -- reading --------------------------------------------------------------------------

    def resolve(self, ref: str) -> str:
        """A run's id from its id or a unique prefix of it (at least 4 characters)."""
        with session_scope(self.engine) as session:
            if session.get(RunRecord, ref) is not None:
                return ref
            found = (
                session.scalars(
                    select(RunRecord.id)
                    .where(RunRecord.id.startswith(ref, autoescape=True))
                    .limit(2)
                ).all()
                if len(ref) >= 4
                else []
            )
        if len(found) == 1:
            return found[0]
        if found:
            raise Invalid(f"{ref!r} matches several runs", hint="give more of the id")
        raise NotFound(f"no run {ref!r}", hint="see `stratus run list`")

    def view(self, run_id: str) -> dict[str, Any]:
        with session_scope(self.engine) as session:
            run = session.get(RunRecord, run_id)
            if run is None:
                raise NotFound(f"no run {run_id!r}", hint="see `stratus run list`")
            nodes = session.scalars(
                select(NodeInstanceRecord)
                .where(NodeInstanceRecord.run_id == run_id)
                .order_by(NodeInstanceRecord.node, NodeInstanceRecord.idx)
            ).all()
            shown = {
                key: value
                for key, value in session.execute(
                    select(RuntimeParameterRecord.key, RuntimeParameterRecord.value).where(
                        RuntimeParameterRecord.run_id == run_id,
                        RuntimeParameterRecord.kind.in_(("standard", "global")),
                    )
                )
            }
            return _run_dict(run, shown) | {
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
                        **{k.replace(".", "_"): shown.get(f"{n.name}:{k}") for k in _SHOWN},
                    }
                    for n in nodes
                ]
            }

    def summary(self, run_id: str) -> dict[str, Any]:
        with session_scope(self.engine) as session:
            run = session.get(RunRecord, run_id)
            if run is None:
                raise NotFound(f"no run {run_id!r}", hint="see `stratus run list`")
            return _run_dict(run, {})

    def list_runs(
        self, *, owner: str | None, active_only: bool = False, offset: int = 0, limit: int = 20
    ) -> list[dict[str, Any]]:
        with session_scope(self.engine) as session:
            query = (
                select(RunRecord).order_by(RunRecord.created_at.desc()).offset(offset).limit(limit)
            )
            if owner is not None:
                query = query.where(RunRecord.owner == owner)
            if active_only:
                query = query.where(RunRecord.state.not_in([s.value for s in FINAL]))
            return [_run_dict(run, {}) for run in session.scalars(query)]

    def settled(self, run_id: str) -> bool:
        """Ended, or waiting in Ready with every node done (its instances kept)."""
        with session_scope(self.engine) as session:
            run = session.get(RunRecord, run_id)
            if run is None:
                raise NotFound(f"no run {run_id!r}")
            if RunState(run.state) in FINAL:
                return True
            if run.state != RunState.READY or run.scaling is not None:
                return False  # a scale action under way goes round again
            waiting = session.scalar(select(func.count()).where(*waiting_for(run)))
            return not waiting

    def ended(self, run_id: str) -> bool:
        return RunState(self.summary(run_id)["state"]) in FINAL

    def working(self) -> bool:
        """Whether any run needs the server: provisioning, working nodes, or tearing down."""
        with session_scope(self.engine) as session:
            states = [s.value for s in ACTIVE | {RunState.FINALIZING}]
            return (
                session.scalar(select(RunRecord.id).where(RunRecord.state.in_(states)).limit(1))
                is not None
            )

    def plan(self, run_id: str) -> Plan:
        with session_scope(self.engine) as session:
            run = session.get(RunRecord, run_id)
            if run is None:
                raise NotFound(f"no run {run_id!r}")
            return Plan.from_dict(run.plan)

    def owner(self, run_id: str) -> str:
        return str(self.summary(run_id)["owner"])

    def events(self, run_id: str, *, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        with session_scope(self.engine) as session:
            rows = session.scalars(
                select(RunEventRecord)
                .where(RunEventRecord.run_id == run_id, RunEventRecord.id > after)
                .order_by(RunEventRecord.id)
                .limit(limit)
            )
            return [
                {
                    "id": e.id,
                    "at": e.at.isoformat(),
                    "kind": e.kind,
                    "node_instance": e.node_instance,
                    "message": e.message,
                }
                for e in rows
            ]

    # -- logs and reports -----------------------------------------------------------------

    def add_logs(self, run_id: str, node_instance: str, lines: Sequence[Mapping[str, Any]]) -> None:
        with session_scope(self.engine) as session:
            session.add_all(
                RunLogRecord(
                    run_id=run_id,
                    node_instance=node_instance,
                    at=datetime.fromtimestamp(
                        float(line.get("t", 0)) or datetime.now(UTC).timestamp(), UTC
                    ),
                    state=str(line.get("state", ""))[:16],
                    recipe=str(line.get("recipe", ""))[:32],
                    stream=str(line.get("stream", "stdout"))[:8],
                    text=str(line.get("text", "")),
                )
                for line in lines
            )
        self.hub.publish(f"logs:{run_id}", {"node_instance": node_instance, "count": len(lines)})

    def logs(
        self, run_id: str, *, node_instance: str | None = None, after: int = 0, limit: int = 5000
    ) -> list[dict[str, Any]]:
        with session_scope(self.engine) as session:
            query = select(RunLogRecord).where(
                RunLogRecord.run_id == run_id, RunLogRecord.id > after
            )
            if node_instance:
                query = query.where(RunLogRecord.node_instance == node_instance)
            rows = session.scalars(query.order_by(RunLogRecord.id).limit(limit))
            return [
                {
                    "id": r.id,
                    "at": r.at.isoformat(),
                    "node_instance": r.node_instance,
                    "state": r.state,
                    "recipe": r.recipe,
                    "stream": r.stream,
                    "text": r.text,
                }
                for r in rows
            ]

    def store_report(self, run_id: str, node_instance: str, data: bytes) -> dict[str, Any]:
        self.summary(run_id)
        folder = self.reports_dir / run_id
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{node_instance}.tar.gz"
        path.write_bytes(data)
        with transaction(self.engine, self.hub) as tx:
            tx.session.execute(
                delete(RunReportRecord).where(
                    RunReportRecord.run_id == run_id, RunReportRecord.node_instance == node_instance
                )
            )
            tx.session.add(
                RunReportRecord(
                    run_id=run_id, node_instance=node_instance, path=str(path), size=len(data)
                )
            )
            tx.event(
                run_id,
                "report",
                f"sent its report ({len(data)} bytes)",
                node_instance=node_instance,
            )
        return {"node_instance": node_instance, "size": len(data)}

    def reports(self, run_id: str) -> list[dict[str, Any]]:
        with session_scope(self.engine) as session:
            rows = session.scalars(
                select(RunReportRecord)
                .where(RunReportRecord.run_id == run_id)
                .order_by(RunReportRecord.node_instance)
            )
            return [
                {
                    "node_instance": r.node_instance,
                    "size": r.size,
                    "uploaded_at": r.uploaded_at.isoformat(),
                }
                for r in rows
            ]

    def report_file(self, run_id: str, node_instance: str) -> Path:
        with session_scope(self.engine) as session:
            row = session.get(RunReportRecord, (run_id, node_instance))
            if row is None or not Path(row.path).exists():
                raise NotFound(f"{node_instance} has sent no report for run {run_id}")
            return Path(row.path)

    # -- node instance tokens -------------------------------------------------------------

    def issue_token(self, run_id: str, node_instance: str) -> str:
        """A new secret for one node instance of one run; only its digest is kept."""
        token = secrets.token_urlsafe(24)
        with session_scope(self.engine) as session:
            node = session.get(NodeInstanceRecord, (run_id, node_instance))
            if node is None:
                raise NotFound(f"no node instance {node_instance!r} in run {run_id}")
            node.token_hash = _digest(token)
        return token

    def node_for_token(self, run_id: str, token: str) -> str | None:
        if not token:
            return None
        with session_scope(self.engine) as session:
            name: str | None = session.scalar(
                select(NodeInstanceRecord.name).where(
                    NodeInstanceRecord.run_id == run_id,
                    NodeInstanceRecord.token_hash == _digest(token),
                )
            )
            return name

    def watch_topic(self, run_id: str) -> str:
        return run_topic(run_id)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


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
        "created_at": run.created_at.isoformat(),
        "last_state_change": run.last_state_change.isoformat(),
        "ended_at": run.ended_at.isoformat() if run.ended_at else None,
    }
