"""Report archives: what each node instance sends back in SendingReports.

A report comes from a node, which is not to be trusted: it is written to disk as it arrives,
never held whole in memory, and refused the moment it passes ``MAX_REPORT`` bytes or turns out
not to be gzip data. Only a complete upload replaces the node instance's previous report.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.engine import Engine

from stratuslab.db.models import NodeInstanceRecord, RunRecord, RunReportRecord
from stratuslab.db.session import session_scope
from stratuslab.deploy import access, events
from stratuslab.deploy.tx import transaction
from stratuslab.errors import Forbidden, Invalid, NotFound, TooLarge
from stratuslab.hub import Hub
from stratuslab.principal import Principal

MAX_REPORT = 64 * 2**20  # bytes: logs and test results, not data sets
_GZIP = b"\x1f\x8b"


class Upload:
    """One report arriving: :meth:`write` its chunks, then :meth:`commit` (or :meth:`discard`)."""

    def __init__(self, store: ReportStore, run_id: str, node_instance: str, final: Path) -> None:
        self.store, self.run_id, self.node_instance = store, run_id, node_instance
        self.final = final
        self.partial = final.with_name(f".{final.name}.{secrets.token_hex(4)}.part")
        self.size = 0
        self._file = self.partial.open("wb")

    def write(self, chunk: bytes) -> None:
        if self.size == 0 and chunk and not _GZIP.startswith(chunk[:2]):
            self.discard()
            raise Invalid("a report is a .tar.gz archive; this upload is not gzip data")
        self.size += len(chunk)
        if self.size > MAX_REPORT:
            self.discard()
            raise TooLarge(f"a report is at most {MAX_REPORT // 2**20} MiB; this one is larger")
        self._file.write(chunk)

    def commit(self) -> dict[str, Any]:
        self._file.close()
        if self.size == 0:
            self.discard()
            raise Invalid("the report is empty")
        self.partial.replace(self.final)
        return self.store.record(self.run_id, self.node_instance, self.final, self.size)

    def discard(self) -> None:
        self._file.close()
        self.partial.unlink(missing_ok=True)


class ReportStore:
    def __init__(self, engine: Engine, hub: Hub, *, folder: Path) -> None:
        self.engine = engine
        self.hub = hub
        self.folder = folder

    def begin(
        self, run_id: str, node_instance: str, *, caller: Principal, size: int | None = None
    ) -> Upload:
        """Start receiving ``node_instance``'s report (``size``: what the sender announced).
        Only that node instance's agent sends it."""
        if not caller.is_node:
            with session_scope(self.engine) as session:
                access.checked(session.get(RunRecord, run_id), run_id, caller)
            access.nodes_only(caller, "send reports")
        if caller.is_node and (caller.run_id, caller.node_instance) != (run_id, node_instance):
            raise Forbidden(f"{caller} may not send the report of {node_instance}")
        if size is not None and size > MAX_REPORT:
            raise TooLarge(
                f"a report is at most {MAX_REPORT // 2**20} MiB; this one has "
                f"{size / 2**20:.0f} MiB"
            )
        with session_scope(self.engine) as session:
            if session.get(NodeInstanceRecord, (run_id, node_instance)) is None:
                raise NotFound(f"no node instance {node_instance!r} in run {run_id}")
        folder = self.folder / run_id
        folder.mkdir(parents=True, exist_ok=True)
        return Upload(self, run_id, node_instance, folder / f"{node_instance}.tar.gz")

    def record(self, run_id: str, node_instance: str, path: Path, size: int) -> dict[str, Any]:
        with transaction(self.engine, self.hub) as tx:
            tx.session.execute(
                delete(RunReportRecord).where(
                    RunReportRecord.run_id == run_id, RunReportRecord.node_instance == node_instance
                )
            )
            tx.session.add(
                RunReportRecord(
                    run_id=run_id, node_instance=node_instance, path=str(path), size=size
                )
            )
            tx.event(run_id, events.reported(node_instance, size))
        return {"node_instance": node_instance, "size": size}

    def of_run(self, run_id: str, *, caller: Principal) -> list[dict[str, Any]]:
        with session_scope(self.engine) as session:
            access.checked(session.get(RunRecord, run_id), run_id, caller)
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

    def file(self, run_id: str, node_instance: str, *, caller: Principal) -> Path:
        with session_scope(self.engine) as session:
            access.checked(session.get(RunRecord, run_id), run_id, caller)
            row = session.get(RunReportRecord, (run_id, node_instance))
            if row is None or not Path(row.path).exists():
                raise NotFound(f"{node_instance} has sent no report for run {run_id}")
            return Path(row.path)
