"""Many instances at once: a run's instances created or destroyed in parallel, their records
written in batches.

A run of thousands of node instances would spend its time in one transaction per instance.
Here a pool of threads talks to the backend (creating, waiting for addresses, destroying), and
the calling thread writes what they report in batches: each time it wakes, it records every
outcome that has arrived since, in one transaction, then tells each change and hands each
request's outcome to the caller. With LXD, outcomes arrive seconds apart and each batch is one;
with the fake backend, hundreds.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, bindparam, select, update

from stratuslab.cloud import events, records, usage, volume_claims
from stratuslab.cloud.base import Connector, Instance, InstanceSpec
from stratuslab.cloud.records import InstanceView
from stratuslab.cloud.types import InstanceState
from stratuslab.db.models import InstanceRecord, utcnow
from stratuslab.db.session import session_scope
from stratuslab.errors import BackendError, StratusError

if TYPE_CHECKING:
    from stratuslab.cloud.instances import InstanceService, Prepared

PARALLEL = 16  # backend calls at once: LXD serialises much of the work beyond that
ADDRESS_TIMEOUT = 120.0
# A request's instances (running, or gone with the reason), or why none of them runs.
Outcome = list[InstanceView] | StratusError
_NOT_CREATED = "not created: provisioning stopped before it"


def provision_many(
    service: InstanceService,
    connectors: Callable[[str], Connector],
    batch: Sequence[Prepared],
    *,
    on_each: Callable[[Prepared, Outcome], None],
    proceed: Callable[[], bool] = lambda: True,
) -> None:
    """Create every prepared request's instances and wait for their addresses.

    Post-conditions: ``on_each`` has been called once per request, with its instances
    running, or with the error that stopped it (its instances destroyed and recorded gone with
    the reason; when only some of a request's instances fail, the others are still given).
    ``proceed`` is asked before each instance is created: once it says no, what is left is
    recorded gone as never created. Each instance is told ``created`` and then ``running`` or
    ``failed``.
    """
    done: queue.SimpleQueue[tuple[int, InstanceView, Instance | StratusError]] = queue.SimpleQueue()
    work = [(index, view) for index, prepared in enumerate(batch) for view in prepared.views]
    if not work:
        return

    def create(index: int, view: InstanceView) -> None:
        prepared = batch[index]
        if not proceed():
            done.put((index, view, StratusError(_NOT_CREATED)))
            return
        done.put(
            (index, view, _created(service, connectors(prepared.request.cloud), prepared, view))
        )

    left = {index: len(prepared.views) for index, prepared in enumerate(batch)}
    outcomes: dict[int, list[tuple[InstanceView, StratusError | None]]] = {i: [] for i in left}

    def record(arrived: list[tuple[int, InstanceView, Instance | StratusError]]) -> None:
        _record(service, arrived, outcomes)
        for index in [i for i, results in outcomes.items() if len(results) == left[i]]:
            results = outcomes.pop(index)
            errors = [error for _, error in results if error is not None]
            if len(errors) == len(results):
                on_each(batch[index], errors[0])
            else:  # running ones, and the failed ones recorded gone with their reason
                order = {view.id: n for n, view in enumerate(batch[index].views)}
                views = sorted((view for view, _ in results), key=lambda v: order[v.id])
                on_each(batch[index], views)

    with ThreadPoolExecutor(max_workers=min(PARALLEL, len(work))) as pool:
        for index, view in work:
            pool.submit(create, index, view)
        _batches(done, len(work), record)


def kill_many(
    service: InstanceService, connectors: Callable[[str], Connector], ids: Sequence[str]
) -> list[StratusError]:
    """Destroy the instances ``ids`` (those already gone are left as they are).

    Post-conditions: each destroyed instance is recorded gone and told ``gone``, in batches;
    the answer holds the failures (the instance is left as it was recorded, for the next
    try)."""
    with session_scope(service.engine) as session:
        rows = session.scalars(select(InstanceRecord).where(InstanceRecord.id.in_(list(ids))))
        live = [records.view_of(r) for r in rows if r.state != InstanceState.GONE.value]
    if not live:
        return []
    done: queue.SimpleQueue[tuple[int, InstanceView, Instance | StratusError]] = queue.SimpleQueue()
    gone = Instance(name="", state=InstanceState.GONE)  # what a destroyed instance reports

    def destroy(view: InstanceView) -> None:
        try:
            connectors(view.cloud).destroy(view.name)
            done.put((0, view, gone))
        except StratusError as exc:
            done.put((0, view, BackendError(f"destroying {view.id}: {exc}")))

    failures: list[StratusError] = []

    def record(arrived: list[tuple[int, InstanceView, Instance | StratusError]]) -> None:
        ids = [view.id for _, view, outcome in arrived if outcome is gone]
        failures.extend(o for _, _, o in arrived if isinstance(o, StratusError))
        if not ids:
            return
        with session_scope(service.engine) as session:
            rows = list(session.scalars(select(InstanceRecord).where(InstanceRecord.id.in_(ids))))
            for row in rows:
                records.mark_gone(row)
            usage.follow(session, ids)
            views = [records.view_of(row) for row in rows]
        for view in views:
            service.tell(view, events.GONE)

    with ThreadPoolExecutor(max_workers=min(PARALLEL, len(live))) as pool:
        for view in live:
            pool.submit(destroy, view)
        _batches(done, len(live), record)
    return failures


def _created(
    service: InstanceService, connector: Connector, prepared: Prepared, view: InstanceView
) -> Instance | StratusError:
    """Create one instance and wait for its address; on any failure, destroy what there is
    of it and give the reason."""
    request = prepared.request
    spec = InstanceSpec(
        name=view.name,
        image=prepared.image,  # the fingerprint found when checking: no second look-up
        cpu=request.cpu,
        ram_mb=request.ram_mb,
        ssh_keys=prepared.ssh_keys,
        user_data=prepared.user_data,
        tags=service.tags_of(view, request),
        volumes=tuple(claim.mount for claim in request.volumes),
    )
    try:
        connector.create(spec)
        service.tell(view, events.CREATED)
        return connector.wait_for_address(view.name, ADDRESS_TIMEOUT)
    except Exception as exc:  # every failure must be cleaned up and recorded
        error = (
            exc if isinstance(exc, StratusError) else BackendError(f"{type(exc).__name__}: {exc}")
        )
        try:
            connector.destroy(view.name)
        except StratusError as cleanup:
            # The instance is tagged: reconciliation finds it and shows it again.
            error = BackendError(f"{error}; destroying it failed too: {cleanup}")
        return error


_STARTED = (
    update(cast(Table, InstanceRecord.__table__))
    .where(InstanceRecord.__table__.c.id == bindparam("b_id"))
    .values(
        state=bindparam("b_state"),
        addresses=bindparam("b_addresses"),
        started_at=bindparam("b_at"),
    )
)
_FAILED = (
    update(cast(Table, InstanceRecord.__table__))
    .where(InstanceRecord.__table__.c.id == bindparam("b_id"))
    .values(
        state=InstanceState.GONE.value,
        addresses=[],
        ended_at=bindparam("b_at"),
        error=bindparam("b_error"),
    )
)


def _record(
    service: InstanceService,
    arrived: list[tuple[int, InstanceView, Instance | StratusError]],
    outcomes: dict[int, list[tuple[InstanceView, StratusError | None]]],
) -> None:
    """Write what arrived in one transaction (one statement for the started, one for the
    failed), tell each change, file each outcome. The records were made pending by this
    service: what they hold beyond state, addresses and times is what the views hold."""
    now = utcnow()
    started: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    told: list[tuple[InstanceView, str]] = []
    for index, view, outcome in arrived:
        if isinstance(outcome, Instance):
            up = replace(
                view, state=outcome.state.value, addresses=tuple(outcome.addresses), started_at=now
            )
            started.append(
                {
                    "b_id": view.id,
                    "b_state": up.state,
                    "b_addresses": list(up.addresses),
                    "b_at": now,
                }
            )
            told.append((up, events.RUNNING))
            outcomes[index].append((up, None))
        else:
            down = replace(
                view, state=InstanceState.GONE.value, addresses=(), ended_at=now, error=str(outcome)
            )
            failed.append({"b_id": view.id, "b_at": now, "b_error": down.error})
            told.append((down, events.FAILED))
            outcomes[index].append((down, outcome))
    with session_scope(service.engine) as session:
        connection = session.connection()
        if started:
            connection.execute(_STARTED, started)
            volume_claims.settle_instances(session, [row["b_id"] for row in started])
        if failed:
            connection.execute(_FAILED, failed)
        usage.follow(session, [view.id for _, view, _ in arrived], at=now)
    for view, what in told:
        service.tell(view, what)


def _batches(
    done: queue.SimpleQueue[tuple[int, InstanceView, Instance | StratusError]],
    expected: int,
    record: Callable[[list[tuple[int, InstanceView, Instance | StratusError]]], None],
) -> None:
    """Take outcomes as they come, every one that has arrived at each wake, until
    ``expected`` have; ``record`` each batch."""
    taken = 0
    while taken < expected:
        arrived = [done.get()]
        while True:
            try:
                arrived.append(done.get_nowait())
            except queue.Empty:
                break
        record(arrived)
        taken += len(arrived)
