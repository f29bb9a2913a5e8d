"""The instance lifecycle service: what users ask of instances, recorded and reconciled.

Every instance is recorded in the store *before* the backend is asked to create it, and carries
tags (``user.stratus.*`` on LXD) naming its id and owner. So nothing is ever lost track of: a
crash between the two leaves a record that reconciliation resolves, or a tagged instance that
reconciliation adopts; an instance deleted behind our back shows as gone.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from stratuslab.cloud import clouds
from stratuslab.cloud.base import Connector, ExecResult, Instance, InstanceSpec
from stratuslab.cloud.context import normalise_user_data, parse_ssh_keys
from stratuslab.cloud.types import InstanceState
from stratuslab.db.models import InstanceRecord, utcnow
from stratuslab.db.session import session_scope
from stratuslab.errors import (
    BackendError,
    CapacityExceeded,
    Conflict,
    Invalid,
    NotFound,
    StratusError,
)

MAX_COUNT = 100
ADDRESS_TIMEOUT = 120.0
MEMORY_RESERVE_MB = 512  # left to the host whatever users ask for
DISK_PER_INSTANCE_MB = 200  # a fresh container on btrfs, before it installs anything
PENDING_GRACE = timedelta(minutes=10)  # a record this young may still be being created
_HOSTNAME = re.compile(r"^[a-z][a-z0-9-]{0,61}[a-z0-9]$|^[a-z]$")

Event = Callable[["InstanceView", str], None]  # (instance, what happened)
LIVE = (
    InstanceState.PENDING,
    InstanceState.RUNNING,
    InstanceState.STOPPED,
    InstanceState.ERROR,
    InstanceState.UNKNOWN,
)


@dataclass(frozen=True)
class RunRequest:
    """What ``stratus instance run`` asks for."""

    image: str
    count: int = 1
    cpu: int | None = None
    ram_mb: int | None = None
    ssh_keys: tuple[str, ...] = ()
    user_data: str | None = None
    name: str | None = None
    cloud: str = clouds.DEFAULT_CLOUD
    run_id: str | None = None
    node_instance: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class InstanceView:
    """An instance as users see it."""

    id: str
    name: str
    cloud: str
    owner: str
    image: str
    state: str
    addresses: tuple[str, ...]
    cpu: int | None
    ram_mb: int | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    error: str | None
    recovered: bool
    run_id: str | None
    node_instance: str | None

    @property
    def address(self) -> str | None:
        return self.addresses[0] if self.addresses else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            out[key] = value.isoformat() if isinstance(value, datetime) else value
        out["addresses"] = list(self.addresses)
        return out


@dataclass(frozen=True)
class Prepared:
    """Instances checked and recorded, ready to be created."""

    request: RunRequest
    views: list[InstanceView]
    ssh_keys: tuple[str, ...]
    user_data: str | None
    image: str  # the image's fingerprint on the cloud


@dataclass(frozen=True)
class ReconcileReport:
    vanished: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)


class InstanceService:
    """Runs, lists, stops, starts and kills instances for one user, on the recorded clouds."""

    def __init__(
        self,
        engine: Engine,
        *,
        owner: str,
        connectors: Callable[[str], Connector],
        name_prefix: str = "inst",
    ) -> None:
        self.engine = engine
        self.owner = owner
        self.name_prefix = name_prefix
        self.connector = connectors

    # -- run ------------------------------------------------------------------------------

    def run(self, request: RunRequest, *, on_event: Event | None = None) -> list[InstanceView]:
        """Start instances and wait until each has an address: :meth:`prepare` then
        :meth:`provision`."""
        prepared = self.prepare(request)
        return self.provision(prepared, on_event=on_event)

    def prepare(self, request: RunRequest) -> Prepared:
        """Check the request and record the instances as pending. Nothing is created yet.

        Raises ``Invalid`` (bad name, key, user-data, counts), ``NotFound`` (image),
        ``Conflict`` (name taken) or ``CapacityExceeded`` before anything is recorded.
        """
        keys = (
            parse_ssh_keys("\n".join(request.ssh_keys), source="ssh keys")
            if request.ssh_keys
            else ()
        )
        user_data = normalise_user_data(request.user_data.encode()) if request.user_data else None
        names = self._names(request)
        connector = self.connector(request.cloud)
        image = connector.get_image(request.image)
        self._check_capacity(connector, request)
        views = self._record(request, names, image.name, len(keys), user_data is not None)
        return Prepared(request, views, keys, user_data, image=image.fingerprint)

    def provision(self, prepared: Prepared, *, on_event: Event | None = None) -> list[InstanceView]:
        """Create the recorded instances in parallel and wait until each has an address.

        Instances that fail are destroyed and recorded as gone with the reason; the others are
        returned running. When every one fails, the first failure is raised.
        """
        notify = on_event or (lambda _view, _what: None)
        request, views = prepared.request, prepared.views
        connector = self.connector(request.cloud)

        def start(view: InstanceView) -> InstanceView | StratusError:
            spec = InstanceSpec(
                name=view.name,
                image=prepared.image,  # the fingerprint found when checking: no second look-up
                cpu=request.cpu,
                ram_mb=request.ram_mb,
                ssh_keys=prepared.ssh_keys,
                user_data=prepared.user_data,
                tags=self._tags(view, request),
            )
            try:
                connector.create(spec)
                notify(view, "created")
                instance = connector.wait_for_address(view.name, ADDRESS_TIMEOUT)
                return self._update(view.id, instance, started=True)
            except Exception as exc:  # every failure must be cleaned up and recorded
                error = (
                    exc
                    if isinstance(exc, StratusError)
                    else BackendError(f"{type(exc).__name__}: {exc}")
                )
                try:
                    connector.destroy(view.name)
                except StratusError as cleanup:
                    # The instance is tagged: reconciliation finds it and shows it again.
                    error = BackendError(f"{error}; destroying it failed too: {cleanup}")
                return error

        with ThreadPoolExecutor(max_workers=min(len(views), 16)) as pool:
            outcomes = list(pool.map(start, views))
        results: list[InstanceView] = []
        failures: list[StratusError] = []
        for view, outcome in zip(views, outcomes, strict=True):
            if isinstance(outcome, StratusError):
                failures.append(outcome)
                results.append(self._mark_gone(view.id, error=str(outcome)))
                notify(results[-1], "failed")
            else:
                results.append(outcome)
                notify(outcome, "running")
        if failures and len(failures) == len(views):
            raise failures[0]
        return results

    # -- queries --------------------------------------------------------------------------

    def list_instances(
        self, *, all_owners: bool = False, include_gone: bool = False, reconcile: bool = True
    ) -> list[InstanceView]:
        if reconcile:
            for cloud in clouds.all_clouds(self.engine):
                self.reconcile(cloud.name)
        with session_scope(self.engine) as session:
            query = select(InstanceRecord).order_by(InstanceRecord.created_at, InstanceRecord.name)
            if not all_owners:
                query = query.where(InstanceRecord.owner == self.owner)
            if not include_gone:
                query = query.where(InstanceRecord.state != InstanceState.GONE.value)
            return [_view(row) for row in session.scalars(query)]

    def get(self, ref: str, *, refresh: bool = True) -> InstanceView:
        """An instance by id, unique id prefix or name (the live one, if names were reused)."""
        with session_scope(self.engine) as session:
            row = self._find(session, ref)
            view = _view(row)
        if refresh and view.state != InstanceState.GONE.value:
            connector = self.connector(view.cloud)
            try:
                return self._update(view.id, connector.get(view.name))
            except NotFound:
                return self._mark_gone(view.id, error="deleted outside StratusLab")
        return view

    def for_run(self, run_id: str) -> list[InstanceView]:
        with session_scope(self.engine) as session:
            query = select(InstanceRecord).where(InstanceRecord.run_id == run_id)
            return [_view(row) for row in session.scalars(query.order_by(InstanceRecord.name))]

    # -- actions --------------------------------------------------------------------------

    def stop(self, ref: str) -> InstanceView:
        view = self._live(ref)
        return self._update(view.id, self.connector(view.cloud).stop(view.name))

    def start(self, ref: str) -> InstanceView:
        view = self._live(ref)
        connector = self.connector(view.cloud)
        connector.start(view.name)
        return self._update(
            view.id, connector.wait_for_address(view.name, ADDRESS_TIMEOUT), started=True
        )

    def kill(self, ref: str) -> InstanceView:
        """Destroy an instance. Killing one that is already gone succeeds."""
        with session_scope(self.engine) as session:
            view = _view(self._find(session, ref))
        if view.state == InstanceState.GONE.value:
            return view
        self.connector(view.cloud).destroy(view.name)
        return self._mark_gone(view.id)

    def exec(self, ref: str, command: Sequence[str], *, timeout: float | None = None) -> ExecResult:
        view = self._live(ref)
        if view.state != InstanceState.RUNNING.value:
            raise Conflict(
                f"instance {view.id} is {view.state}",
                hint=f"start it: stratus instance start {view.id}",
            )
        return self.connector(view.cloud).exec(view.name, command, timeout=timeout)

    # -- reconciliation -------------------------------------------------------------------

    def reconcile(self, cloud: str) -> ReconcileReport:
        """Bring the store in line with the backend: mark what vanished as gone, adopt
        tagged instances the store does not know, revive records wrongly marked gone, and
        refresh states and addresses."""
        report = ReconcileReport()
        backend = {
            i.tags["id"]: i for i in self.connector(cloud).list_instances() if "id" in i.tags
        }
        now = utcnow()
        with session_scope(self.engine) as session:
            rows = {
                row.id: row
                for row in session.scalars(
                    select(InstanceRecord).where(
                        InstanceRecord.cloud == cloud,
                        or_(
                            InstanceRecord.state != InstanceState.GONE.value,
                            InstanceRecord.id.in_(backend),
                        ),
                    )
                )
            }
            for row in rows.values():
                if row.id in backend or row.state == InstanceState.GONE.value:
                    continue
                if (
                    row.state == InstanceState.PENDING.value
                    and now - row.created_at < PENDING_GRACE
                ):
                    continue  # another process may be creating it right now
                never = row.state == InstanceState.PENDING.value
                row.error = row.error or (
                    "never created" if never else "deleted outside StratusLab"
                )
                row.state, row.ended_at, row.addresses = InstanceState.GONE.value, now, []
                report.vanished.append(row.id)
            for instance_id, instance in backend.items():
                found = rows.get(instance_id)
                if found is None:
                    session.add(_adopted(cloud, instance))
                    report.recovered.append(instance_id)
                    continue
                if found.state == InstanceState.GONE.value:
                    found.ended_at = None
                    found.error = f"recorded as gone but still exists ({found.error})"
                if _apply(found, instance):
                    report.updated.append(instance_id)
        return report

    # -- helpers --------------------------------------------------------------------------

    def _names(self, request: RunRequest) -> list[str]:
        if not 1 <= request.count <= MAX_COUNT:
            raise Invalid(f"-n must be between 1 and {MAX_COUNT}, not {request.count}")
        if request.cpu is not None and request.cpu < 1:
            raise Invalid(f"--cpu must be at least 1, not {request.cpu}")
        if request.ram_mb is not None and request.ram_mb < 64:
            raise Invalid(f"--ram must be at least 64 (MiB), not {request.ram_mb}")
        if request.name is None:
            return [f"{self.name_prefix}-{secrets.token_hex(4)}" for _ in range(request.count)]
        if not _HOSTNAME.match(request.name) or len(request.name) > 58:
            raise Invalid(
                f"instance name {request.name!r} is not a valid host name",
                hint="use lowercase letters, digits and '-', starting with a letter",
            )
        names = (
            [request.name]
            if request.count == 1
            else [f"{request.name}-{i}" for i in range(1, request.count + 1)]
        )
        with session_scope(self.engine) as session:
            taken = session.scalars(
                select(InstanceRecord.name).where(
                    InstanceRecord.cloud == request.cloud,
                    InstanceRecord.name.in_(names),
                    InstanceRecord.state != InstanceState.GONE.value,
                )
            ).all()
        if taken:
            raise Conflict(
                f"an instance called {taken[0]!r} already exists", hint="choose another --name"
            )
        return names

    @staticmethod
    def _check_capacity(connector: Connector, request: RunRequest) -> None:
        capacity = connector.capacity()
        if request.cpu and capacity.cpus and request.cpu > capacity.cpus:
            raise CapacityExceeded(
                f"not enough capacity: {request.cpu} CPUs asked per instance, "
                f"the host has {capacity.cpus}",
                hint=f"ask for at most --cpu {capacity.cpus}",
            )
        if request.ram_mb and capacity.memory_free_mb is not None:
            asked = request.ram_mb * request.count
            free = capacity.memory_free_mb - MEMORY_RESERVE_MB
            if asked > free:
                raise CapacityExceeded(
                    f"not enough capacity: {request.count} x {request.ram_mb} MiB of memory "
                    f"asked, {max(free, 0)} MiB free",
                    hint="ask for less with --ram or fewer instances with -n",
                )
        if capacity.disk_free_mb is not None:
            needed = DISK_PER_INSTANCE_MB * request.count
            if capacity.disk_free_mb < needed:
                raise CapacityExceeded(
                    f"not enough capacity: the storage pool has {capacity.disk_free_mb} MiB "
                    f"free, {needed} MiB needed",
                    hint="kill instances you no longer need (stratus instance list)",
                )

    def _record(
        self, request: RunRequest, names: list[str], image: str, keys: int, user_data: bool
    ) -> list[InstanceView]:
        with session_scope(self.engine) as session:
            rows = [
                InstanceRecord(
                    id=f"i-{secrets.token_hex(5)}",
                    name=name,
                    cloud=request.cloud,
                    owner=self.owner,
                    image=image,
                    state=InstanceState.PENDING.value,
                    addresses=[],
                    cpu=request.cpu,
                    ram_mb=request.ram_mb,
                    ssh_keys=keys,
                    user_data=user_data,
                    run_id=request.run_id,
                    node_instance=request.node_instance,
                    recovered=False,
                    created_at=utcnow(),
                )
                for name in names
            ]
            session.add_all(rows)
            session.flush()
            return [_view(row) for row in rows]

    def _tags(self, view: InstanceView, request: RunRequest) -> dict[str, str]:
        tags = {"id": view.id, "owner": self.owner, "image": view.image, **request.tags}
        if request.run_id:
            tags["run"] = request.run_id
        if request.node_instance:
            tags["node-instance"] = request.node_instance
        return tags

    def _update(
        self, instance_id: str, instance: Instance, *, started: bool = False
    ) -> InstanceView:
        with session_scope(self.engine) as session:
            row = session.get_one(InstanceRecord, instance_id)
            _apply(row, instance)
            if started:
                row.started_at = utcnow()
            return _view(row)

    def _mark_gone(self, instance_id: str, *, error: str | None = None) -> InstanceView:
        with session_scope(self.engine) as session:
            row = session.get_one(InstanceRecord, instance_id)
            row.state, row.addresses, row.ended_at = InstanceState.GONE.value, [], utcnow()
            row.error = error or row.error
            return _view(row)

    def _live(self, ref: str) -> InstanceView:
        view = self.get(ref)
        if view.state == InstanceState.GONE.value:
            raise Conflict(
                f"instance {view.id} is gone", hint="start a new one with `stratus instance run`"
            )
        return view

    def _find(self, session: Session, ref: str) -> InstanceRecord:
        row = session.get(InstanceRecord, ref)
        if row is not None:
            return row
        candidates = session.scalars(
            select(InstanceRecord)
            .where(
                or_(InstanceRecord.name == ref, InstanceRecord.id.startswith(ref, autoescape=True))
            )
            .order_by(InstanceRecord.created_at.desc())
        ).all()
        live = [r for r in candidates if r.state != InstanceState.GONE.value]
        for pool in (live, candidates):
            by_name = [r for r in pool if r.name == ref]
            if by_name:
                return by_name[0]
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            raise Invalid(
                f"{ref!r} matches {len(candidates)} instances", hint="give more of the id"
            )
        raise NotFound(f"no instance {ref!r}", hint="see `stratus instance list`")


def _apply(row: InstanceRecord, instance: Instance) -> bool:
    """Copy what the backend says onto the record; True when something changed."""
    before = (row.state, list(row.addresses))
    row.state = instance.state.value
    row.addresses = list(instance.addresses)
    return before != (row.state, row.addresses)


def _adopted(cloud: str, instance: Instance) -> InstanceRecord:
    return InstanceRecord(
        id=instance.tags["id"],
        name=instance.name,
        cloud=cloud,
        owner=instance.tags.get("owner", "unknown"),
        image=instance.tags.get("image", instance.image),
        state=instance.state.value,
        addresses=list(instance.addresses),
        cpu=instance.cpu,
        ram_mb=instance.ram_mb,
        ssh_keys=0,
        user_data=False,
        run_id=instance.tags.get("run"),
        node_instance=instance.tags.get("node-instance"),
        recovered=True,
        created_at=instance.created_at or datetime.now(UTC),
    )


def _view(row: InstanceRecord) -> InstanceView:
    return InstanceView(
        id=row.id,
        name=row.name,
        cloud=row.cloud,
        owner=row.owner,
        image=row.image,
        state=row.state,
        addresses=tuple(row.addresses or ()),
        cpu=row.cpu,
        ram_mb=row.ram_mb,
        created_at=row.created_at,
        started_at=row.started_at,
        ended_at=row.ended_at,
        error=row.error,
        recovered=row.recovered,
        run_id=row.run_id,
        node_instance=row.node_instance,
    )
