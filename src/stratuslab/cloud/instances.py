"""The instance lifecycle service: what users and the deployment engine ask of instances,
recorded and reconciled.

Every instance is recorded in the store *before* the backend is asked to create it, and carries
tags (``user.stratus.*`` on LXD) naming its id and owner, and for deployments its run and node
instance. So nothing is ever lost track of: a crash between the two leaves a record that
reconciliation resolves, or a tagged instance that reconciliation adopts; an instance deleted
behind our back shows as gone. Every change the service makes is told to its event sink once
committed (:mod:`stratuslab.cloud.events`). Nothing outside the cloud layer needs a connector:
the engine's questions about a run's machines are answered here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.engine import Engine

from stratuslab.cloud import admission, events, fleet, machines, records, usage
from stratuslab.cloud.admission import Admitted, RunRequest
from stratuslab.cloud.base import Connector, ExecResult, Instance
from stratuslab.cloud.clouds import all_clouds
from stratuslab.cloud.events import Event
from stratuslab.cloud.fleet import Outcome
from stratuslab.cloud.holdings import nothing_reserved
from stratuslab.cloud.instance_images import OwnerImages
from stratuslab.cloud.placement import Ask, Pending, Placed, Placer, no_pending
from stratuslab.cloud.quotas import Quotas, charged
from stratuslab.cloud.reconcile import ReconcileReport, apply_listing
from stratuslab.cloud.records import InstanceView
from stratuslab.cloud.types import InstanceState
from stratuslab.cloud.volume_claims import claim_volumes
from stratuslab.db.models import InstanceRecord, utcnow
from stratuslab.db.session import session_scope
from stratuslab.errors import BackendError, Conflict, NotFound, StratusError

if TYPE_CHECKING:
    from stratuslab.cloud.marketplace.gate import ImagePolicy

__all__ = ["InstanceService", "InstanceView", "Prepared", "ReconcileReport", "RunRequest"]

log = logging.getLogger(__name__)
ADDRESS_TIMEOUT = 120.0
_PARALLEL = 16  # instances created at once: LXD serialises much of the work beyond that


@dataclass(frozen=True)
class Prepared:
    """Instances checked and recorded, ready to be created."""

    request: RunRequest
    views: list[InstanceView]
    ssh_keys: tuple[str, ...]
    user_data: str | None
    image: str  # the image's fingerprint on the cloud


class InstanceService(OwnerImages):
    """Runs, lists, stops, starts and kills instances for one user, on the recorded clouds.

    ``on_event`` is told every change the service makes, after it is committed (see
    :mod:`stratuslab.cloud.events`); without it, changes are made and told to no one. With
    ``quotas``, what it records for the owner is checked against their quotas in the
    transaction that records it (instances made for a run's node instances are not: the run
    reserved them when it was started or scaled). With ``policy``, each image is decided by
    the site's trust policy before anything is recorded (``Untrusted`` when refused).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        owner: str,
        connectors: Callable[[str], Connector],
        name_prefix: str = "inst",
        on_event: Event | None = None,
        sees_all: bool = False,
        quotas: Quotas | None = None,
        policy: ImagePolicy | None = None,
        pending: Pending = no_pending,
    ) -> None:
        self.engine = engine
        self.quotas = quotas
        self.policy = policy
        # Which cloud what is asked goes to (the site's priorities, caps and quotas).
        self.placer = Placer(
            engine,
            connectors,
            reserved=quotas.reserved if quotas else nothing_reserved,
            pending=pending,  # node instances placed whose machines are not made yet
            vet=self._may_start,
        )
        self.owner = owner  # who what it creates belongs to
        self.sees_all = sees_all  # an administrator or the server: every owner's instances
        self.name_prefix = name_prefix
        self.on_event = on_event
        # The service's own: nothing outside the cloud layer reaches a connector (the engine
        # asks the methods below).
        self._connector = connectors

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
        (outcome,) = self.prepare_many([request])
        if isinstance(outcome, StratusError):
            raise outcome
        return outcome

    def prepare_many(self, requests: Sequence[RunRequest]) -> list[Prepared | StratusError]:
        """Check a batch of requests (a run's node instances) and record every admitted
        instance as pending, all in one transaction. Nothing is created yet.

        Post-conditions: the answer has one entry per request, in order: its ``Prepared``
        (instances recorded pending, ``recorded`` told for each), or the error that refused
        it, with nothing recorded for it (``Invalid``, ``NotFound`` for an image or cloud,
        ``Untrusted`` for an image the site's policy refuses (decided once per image),
        ``Conflict`` for a name taken, also by an earlier request of the batch,
        ``CapacityExceeded``, ``BackendError`` when the cloud does not answer in time). Each
        cloud's images and capacity are read once for the batch, and memory and disk are
        checked for the batch's total on each cloud: when it does not fit, every request of
        that cloud is refused. Over the owner's quota, every request of the batch not made for
        a run is refused (``CapacityExceeded``, saying what is over and by how much). Errors
        other than ``StratusError`` (bugs) are raised.
        """
        if self.quotas is not None:
            requests = self.quotas.sized(self.owner, requests)
        placed = self.placer.requests(self.owner, requests)
        todo = [i for i, p in enumerate(placed) if isinstance(p, RunRequest)]
        admitted = admission.admit_batch(
            self.engine,
            self._connector,
            [cast(RunRequest, placed[i]) for i in todo],
            name_prefix=self.name_prefix,
            vet=self._may_start,
        )
        in_order = iter(admitted)  # what placement refused keeps its place in the answer
        outcomes: list[Admitted | StratusError] = [
            next(in_order) if isinstance(p, RunRequest) else p for p in placed
        ]
        recorded = iter(self._record([o for o in outcomes if isinstance(o, Admitted)]))
        answer: list[Prepared | StratusError] = []
        for outcome in outcomes:
            if isinstance(outcome, StratusError):
                answer.append(outcome)
                continue
            item, views = outcome.checked, next(recorded)
            if isinstance(views, StratusError):
                answer.append(views)
                continue
            answer.append(
                Prepared(
                    item.request, views, item.ssh_keys, item.user_data, outcome.image.fingerprint
                )
            )
            for view in views:
                self.tell(view, events.RECORDED)
        return answer

    def place(self, asks: Sequence[Ask]) -> list[Placed | StratusError]:
        """Where what this owner asks would go, and why (cloud/placement.py); nothing is
        recorded (the deployment engine places a run's node instances this way)."""
        return self.placer.place(self.owner, asks)

    def provision(self, prepared: Prepared, *, on_event: Event | None = None) -> list[InstanceView]:
        """Create the recorded instances in parallel and wait until each has an address.

        Instances that fail are destroyed and recorded as gone with the reason; the others are
        returned running. When every one fails, the first failure is raised. Each instance is
        told ``created``, then ``running`` or ``failed``, to the sink and to ``on_event``.
        """
        found: list[Outcome] = []
        service = self if on_event is None else self._also_telling(on_event)
        fleet.provision_many(
            service, self._connector, [prepared], on_each=lambda _p, outcome: found.append(outcome)
        )
        (outcome,) = found
        if isinstance(outcome, StratusError):
            raise outcome
        return outcome

    def provision_many(
        self,
        batch: Sequence[Prepared],
        *,
        on_each: Callable[[Prepared, Outcome], None],
        proceed: Callable[[], bool] = lambda: True,
    ) -> None:
        """Create many prepared requests' instances at once (see :func:`fleet.provision_many`:
        ``on_each`` hears each request's outcome as soon as it is known)."""
        fleet.provision_many(self, self._connector, batch, on_each=on_each, proceed=proceed)

    def kill_many(self, ids: Sequence[str]) -> list[StratusError]:
        """Destroy many instances at once (see :func:`fleet.kill_many`); the failures."""
        return fleet.kill_many(self, self._connector, ids)

    # -- queries --------------------------------------------------------------------------

    def list_instances(
        self, *, all_owners: bool = False, include_gone: bool = False, reconcile: bool = True
    ) -> list[InstanceView]:
        if reconcile:
            for cloud in all_clouds(self.engine):
                self.reconcile(cloud.name)
        with session_scope(self.engine) as session:
            query = select(InstanceRecord).order_by(InstanceRecord.created_at, InstanceRecord.name)
            if not (all_owners and self.sees_all):
                query = query.where(InstanceRecord.owner == self.owner)
            if not include_gone:
                query = query.where(InstanceRecord.state != InstanceState.GONE.value)
            return [records.view_of(row) for row in session.scalars(query)]

    def get(self, ref: str, *, refresh: bool = True) -> InstanceView:
        """An instance by id, unique id prefix or name (the live one, if names were reused).
        With ``refresh``, its state is read from the backend (a change is told)."""
        with session_scope(self.engine) as session:
            view = records.view_of(records.find(session, ref, owner=self._reach))
        if refresh and view.state != InstanceState.GONE.value:
            connector = self._connector(view.cloud)
            try:
                instance = connector.get(view.name)
            except NotFound:
                gone = self._mark_gone(view.id, error="deleted outside StratusLab")
                self.tell(gone, events.VANISHED)
                return gone
            updated, changed = self._update(view.id, instance)
            if changed:
                self.tell(updated, events.CHANGED)
            return updated
        return view

    def for_run(self, run_id: str) -> list[InstanceView]:
        with session_scope(self.engine) as session:
            query = select(InstanceRecord).where(InstanceRecord.run_id == run_id)
            if not self.sees_all:
                query = query.where(InstanceRecord.owner == self.owner)
            return [
                records.view_of(row) for row in session.scalars(query.order_by(InstanceRecord.name))
            ]

    # -- what the deployment engine asks about runs ---------------------------------------

    def machines_by_run(self, clouds: Iterable[str]) -> dict[str, dict[str, InstanceState]]:
        """For every run with machines on ``clouds``, whoever owns it: each node instance's
        machine state as the backend has it now. One listing per cloud, for all runs.

        Post-conditions: the store is neither read nor written and nothing is told; a run or
        a node instance absent from the answer has no machine on those clouds (destroyed,
        deleted behind our back, or never created). When two machines carry the same node
        instance, the state of the one furthest along (running, then pending) is given.
        Raises the backend's error when a cloud cannot be listed: a partial answer would make
        every machine on that cloud look gone.
        """
        listings = (
            self._connector(cloud).list_instances(has_tag="run", addresses=False)
            for cloud in dict.fromkeys(clouds)
        )
        return machines.by_run(instance for listing in listings for instance in listing)

    def sweep_run(self, run_id: str, clouds: Iterable[str]) -> list[str]:
        """Destroy every instance on ``clouds`` tagged with ``run_id`` that is still there
        (the second pass of a teardown, after the recorded ones were killed), then reconcile
        those clouds. Returns the backend names of what it destroyed.

        Post-conditions: each destroyed instance is recorded gone (a record made for one the
        store never had, from its tags) and told ``gone``; each cloud is reconciled. When a
        cloud cannot be listed or an instance destroyed, the rest is still done and the first
        failure is raised at the end, so that the teardown is tried again.
        """
        destroyed: list[str] = []
        failures: list[StratusError] = []
        for cloud in dict.fromkeys(clouds):
            try:
                connector = self._connector(cloud)
                leftovers = connector.list_instances(tags={"run": run_id}, addresses=False)
            except StratusError as exc:
                failures.append(exc)
                continue
            for leftover in leftovers:
                try:
                    connector.destroy(leftover.name)
                except StratusError as exc:
                    failures.append(
                        BackendError(f"destroying {leftover.name} of run {run_id}: {exc}")
                    )
                    continue
                destroyed.append(leftover.name)
                swept = self._record_swept(cloud, leftover)
                if swept is not None:
                    self.tell(swept, events.GONE)
            try:
                self.reconcile(cloud)
            except StratusError as exc:
                failures.append(exc)
        if failures:
            raise failures[0]
        return destroyed

    # -- actions --------------------------------------------------------------------------

    def stop(self, ref: str) -> InstanceView:
        view = self._live(ref)
        stopped = self._update(view.id, self._connector(view.cloud).stop(view.name))[0]
        self.tell(stopped, events.STOPPED)
        return stopped

    def start(self, ref: str) -> InstanceView:
        view = self._live(ref)
        connector = self._connector(view.cloud)
        connector.start(view.name)
        instance = connector.wait_for_address(view.name, ADDRESS_TIMEOUT)
        started = self._update(view.id, instance, started=True)[0]
        self.tell(started, events.STARTED)
        return started

    def kill(self, ref: str) -> InstanceView:
        """Destroy an instance and tell ``gone``. Killing one that is already gone succeeds
        and changes nothing."""
        with session_scope(self.engine) as session:
            view = records.view_of(records.find(session, ref, owner=self._reach))
        if view.state == InstanceState.GONE.value:
            return view
        self._connector(view.cloud).destroy(view.name)
        gone = self._mark_gone(view.id)
        self.tell(gone, events.GONE)
        return gone

    def exec(self, ref: str, command: Sequence[str], *, timeout: float | None = None) -> ExecResult:
        view = self._live(ref)
        if view.state != InstanceState.RUNNING.value:
            raise Conflict(
                f"instance {view.id} is {view.state}",
                hint=f"start it: stratus instance start {view.id}",
            )
        return self._connector(view.cloud).exec(view.name, command, timeout=timeout)

    # -- reconciliation -------------------------------------------------------------------

    def reconcile(self, cloud: str) -> ReconcileReport:
        """Bring the store in line with the backend (see :mod:`stratuslab.cloud.reconcile`)
        and tell each change: ``vanished``, ``recovered``, ``reappeared`` or ``changed``."""
        listed_at = utcnow()  # what changes after this, the listing cannot speak for
        listing = self._connector(cloud).list_instances()
        report = apply_listing(self.engine, cloud, listing, listed_at=listed_at)
        for view, what in report.changes:
            self.tell(view, what)
        return report

    # -- helpers --------------------------------------------------------------------------

    def _also_telling(self, also: Event) -> InstanceService:
        """This service, telling ``also`` each change as well as its own sink."""
        mine = self.on_event

        def both(view: InstanceView, what: str) -> None:
            for sink in (mine, also):
                if sink is not None:
                    sink(view, what)

        return InstanceService(
            self.engine,
            owner=self.owner,
            connectors=self._connector,
            name_prefix=self.name_prefix,
            on_event=both,
            sees_all=self.sees_all,
            quotas=self.quotas,
            policy=self.policy,
        )

    @property
    def _reach(self) -> str | None:
        """The owner whose instances this service finds; None for every owner's."""
        return None if self.sees_all else self.owner

    def tell(self, view: InstanceView, what: str, also: Event | None = None) -> None:
        for sink in (self.on_event, also):
            if sink is None:
                continue
            try:
                sink(view, what)
            except Exception:  # the change is committed: a sink's failure must not undo it
                log.exception("telling %s %s failed", view.id, what)

    def _record(self, batch: Sequence[Admitted]) -> list[list[InstanceView] | StratusError]:
        """Record each admitted request's instances as pending, all in one transaction (one
        statement: a run's thousands of node instances are recorded at once), after checking
        in it those not made for a run against the owner's quotas: refused together, they are
        not recorded."""
        if not batch:
            return []
        groups = [
            [
                records.pending_values(
                    name=name,
                    owner=self.owner,
                    image=admitted.image.name,
                    request=admitted.checked.request,
                    ssh_keys=len(admitted.checked.ssh_keys),
                    user_data=admitted.checked.user_data is not None,
                )
                for name in admitted.checked.names
            ]
            for admitted in batch
        ]
        with session_scope(self.engine) as session:
            refusal = self.quotas.refusal(session, self.owner, batch) if self.quotas else None
            refused: list[StratusError | None] = [
                refusal if refusal is not None and charged(a) else None for a in batch
            ]
            for n, (admitted, group) in enumerate(zip(batch, groups, strict=True)):
                if refused[n] is None and admitted.checked.request.volumes:
                    refused[n] = claim_volumes(
                        session, admitted.checked.request, group, viewer=self._reach
                    )
            kept = [
                v for group, no in zip(groups, refused, strict=True) if no is None for v in group
            ]
            if kept:
                session.connection().execute(insert(cast(Table, InstanceRecord.__table__)), kept)
        return [
            no if no is not None else [records.view_of_values(v) for v in group]
            for group, no in zip(groups, refused, strict=True)
        ]

    def _record_swept(self, cloud: str, instance: Instance) -> InstanceView | None:
        with session_scope(self.engine) as session:
            row = records.swept(session, cloud, instance)
            if row is None:
                return None
            usage.follow(session, [row.id])
            return records.view_of(row)

    def tags_of(self, view: InstanceView, request: RunRequest) -> dict[str, str]:
        tags = {"id": view.id, "owner": self.owner, "image": view.image, **request.tags}
        if request.run_id:
            tags["run"] = request.run_id
        if request.node_instance:
            tags["node-instance"] = request.node_instance
        return tags

    def _update(
        self, instance_id: str, instance: Instance, *, started: bool = False
    ) -> tuple[InstanceView, bool]:
        """The record brought in line with ``instance``, and whether that changed it."""
        with session_scope(self.engine) as session:
            row = session.get_one(InstanceRecord, instance_id)
            changed = records.apply(row, instance)
            if started:
                row.started_at = utcnow()
            usage.follow(session, [row.id])
            return records.view_of(row), changed

    def _mark_gone(self, instance_id: str, *, error: str | None = None) -> InstanceView:
        with session_scope(self.engine) as session:
            row = session.get_one(InstanceRecord, instance_id)
            records.mark_gone(row, error=error)
            usage.follow(session, [row.id])
            return records.view_of(row)

    def _live(self, ref: str) -> InstanceView:
        view = self.get(ref)
        if view.state == InstanceState.GONE.value:
            raise Conflict(
                f"instance {view.id} is gone", hint="start a new one with `stratus instance run`"
            )
        return view
