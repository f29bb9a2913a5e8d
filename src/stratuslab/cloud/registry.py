"""The clouds of the site, as its administrators register, change and remove them.

Every user may list and show the enabled clouds (name, connector kind, priority, the site's cap
and how many instances the store records there), so that they know where their instances may
go; an administrator also sees the disabled ones and their options, with every credential
redacted (:meth:`Cloud.shown_options`). Options are kept in the store, where every server
process sharing it finds them, and never leave it through a view.

A cloud is probed before it is recorded: its connector is built from the options and asked its
capacity, so that a backend that cannot be reached or refuses the credentials is refused at
registration with its own words, and nothing is recorded. A cloud is removed only when the
store records nothing alive there (instances not gone, volumes not gone); what it keeps of the
past there (gone instances and volumes) goes with it, while the usage records, which name the
cloud as text, stay for accounting.

Disabling a cloud records why (``note``) and takes it out of placement; what runs there goes on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Final

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from stratuslab.cloud import clouds
from stratuslab.cloud.base import Capacity, Connector
from stratuslab.cloud.clouds import DEFAULT_PRIORITY, Cloud, ConnectorPool
from stratuslab.cloud.connectors import make_connector
from stratuslab.cloud.placement import Pending, no_pending
from stratuslab.cloud.registry_values import (
    CloudView,
    check_connector,
    check_max_instances,
    check_name,
    check_note,
    check_options,
    check_priority,
    merged_options,
    where,
)
from stratuslab.cloud.types import InstanceState
from stratuslab.db.models import CloudRecord, InstanceRecord
from stratuslab.db.session import session_scope
from stratuslab.db.volume_models import VolumeAttachmentRecord, VolumeRecord
from stratuslab.errors import (
    BackendError,
    CommandFailed,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    StratusError,
)
from stratuslab.principal import Principal

ADD_PROBE_TIMEOUT = 30.0  # a backend that takes longer to say its capacity is not usable
SHOW_PROBE_TIMEOUT = 3.0  # `cloud show` answers without the capacity rather than wait
_PROBES = 4  # probes at once; a hung backend holds one until its connector's own bound
_GONE_VOLUME = "gone"


class _Unset:
    """A keyword not given (``max_instances=None`` means "no cap", not "unchanged")."""


UNSET: Final = _Unset()
Enroll = Callable[..., dict[str, Any]]


class CloudRegistry:
    def __init__(
        self,
        engine: Engine,
        connectors: ConnectorPool,
        *,
        enroll: Enroll | None = None,
        pending: Pending = no_pending,
    ) -> None:
        self.engine = engine
        self.connectors = connectors
        self._enroll = enroll
        # Node instances placed on each cloud whose machine is not made yet (the engine's).
        self._pending = pending
        self._probes = ThreadPoolExecutor(max_workers=_PROBES, thread_name_prefix="probe")

    # -- reading -----------------------------------------------------------------------------

    def list(self, caller: Principal) -> list[CloudView]:
        """The clouds in placement order (priority, then name): the enabled ones for users,
        every one for administrators."""
        admin = caller.sees_all
        found = [c for c in clouds.all_clouds(self.engine) if admin or c.enabled]
        instances, volumes = self._counts()
        return [
            CloudView.of(
                c,
                instances=instances.get(c.name, 0),
                volumes=volumes.get(c.name, 0),
                admin=admin,
            )
            for c in found
        ]

    def show(self, caller: Principal, name: str) -> CloudView:
        """One cloud, with what the store records there and, if the backend answers within
        ``SHOW_PROBE_TIMEOUT``, its capacity. A disabled cloud is, to users, no cloud."""
        cloud = self._get(caller, name)
        capacity, why = self._capacity_now(cloud)
        instances, volumes = self._counts(cloud.name)
        return CloudView.of(
            cloud,
            instances=instances.get(cloud.name, 0),
            volumes=volumes.get(cloud.name, 0),
            admin=caller.sees_all,
            capacity=capacity,
            capacity_error=why,
        )

    # -- changing ----------------------------------------------------------------------------

    def add(
        self,
        caller: Principal,
        name: str,
        connector: str,
        options: dict[str, Any],
        *,
        priority: int = DEFAULT_PRIORITY,
        max_instances: int | None = None,
    ) -> CloudView:
        """Record cloud ``name`` once its backend answered (administrators)."""
        self._admin(caller, f"add the cloud {name!r}")
        self._check_new(name, connector, options, priority, max_instances)
        self._probe(name, connector, options)
        try:
            with session_scope(self.engine) as session:
                if session.get(CloudRecord, name) is not None:
                    raise self._taken(name)
                session.add(
                    CloudRecord(
                        name=name,
                        connector=connector,
                        options=options,
                        priority=priority,
                        enabled=True,
                        max_instances=max_instances,
                    )
                )
        except IntegrityError:  # recorded by someone else between the check and the insert
            raise self._taken(name) from None
        self.connectors.forget(name)  # a connector of a cloud of that name, removed earlier
        return self.show(caller, name)

    def add_lxd(
        self,
        caller: Principal,
        name: str,
        *,
        endpoint: str,
        password: str | None = None,
        cert_pem: str | None = None,
        key_pem: str | None = None,
        fingerprint: str | None = None,
        profile: str = "default",
        priority: int = DEFAULT_PRIORITY,
        max_instances: int | None = None,
    ) -> CloudView:
        """Enrol the LXD (or Incus) at ``endpoint`` and record it: a client key pair is made
        here, where it is kept, unless one is given; the remote's certificate is pinned (it
        must match ``fingerprint`` when that is given); with ``password`` the remote is asked to
        trust the client. Everything is checked before the remote is contacted."""
        self._admin(caller, f"add the cloud {name!r}")
        self._check_new(name, "lxd", {}, priority, max_instances)
        if (cert_pem is None) != (key_pem is None):
            raise Invalid("a client certificate and its key go together: give both or neither")
        options = self._enroller()(
            endpoint,
            password=password,
            cert_pem=cert_pem,
            key_pem=key_pem,
            fingerprint=fingerprint,
            profile=profile,
        )
        return self.add(
            caller, name, "lxd", options, priority=priority, max_instances=max_instances
        )

    def update(
        self,
        caller: Principal,
        name: str,
        *,
        priority: int | _Unset = UNSET,
        max_instances: int | _Unset | None = UNSET,
        enabled: bool | None = None,
        note: str | _Unset | None = UNSET,
        options: dict[str, Any] | None = None,
    ) -> CloudView:
        """Change what is given (administrators). Disabling keeps ``note`` (why); enabling
        clears it. ``options`` are merged over the recorded ones (None removes one, the
        redacted placeholder keeps it), probed, and the cached connector is dropped."""
        self._admin(caller, f"change the cloud {name!r}")
        if not isinstance(priority, _Unset):
            check_priority(priority)
        if not isinstance(max_instances, _Unset):
            check_max_instances(max_instances)
        if not isinstance(note, _Unset):
            note = check_note(note)
            if enabled is True and note is not None:
                raise Invalid("a note says why a cloud is disabled: enabling it clears the note")
        new_options = None
        if options is not None:
            current = clouds.get(self.engine, self._known(name))
            new_options = check_options(merged_options(current.options, options))
            if new_options != current.options:
                self._probe(name, current.connector, new_options)
        with session_scope(self.engine) as session:
            row = self._row(session, name, lock=True)
            if not isinstance(priority, _Unset):
                row.priority = priority
            if not isinstance(max_instances, _Unset):
                row.max_instances = max_instances
            if enabled is not None:
                row.enabled = enabled
                if enabled:
                    row.note = None
            if not isinstance(note, _Unset):
                if row.enabled and note is not None:
                    raise Invalid(
                        f"the cloud {name!r} is enabled: a note says why a cloud is disabled",
                        hint=f"`stratus cloud disable {name} --reason TEXT`",
                    )
                row.note = note
            changed_options = new_options is not None and new_options != row.options
            if changed_options:
                row.options = new_options or {}
        if changed_options:
            self.connectors.forget(name)
        return self.show(caller, name)

    def remove(self, caller: Principal, name: str) -> CloudView:
        """Forget cloud ``name`` (administrators): refused while the store records instances
        or volumes alive there. Answers the cloud as it was."""
        self._admin(caller, f"remove the cloud {name!r}")
        was = self.list(caller)
        try:
            with session_scope(self.engine) as session:
                self._row(session, name, lock=True)  # new instances there wait for this
                live_instances, live_volumes = _live(session, name)
                placed = self._pending(session).get(name, 0)
                if live_instances or live_volumes or placed:
                    held = _held(live_instances, live_volumes)
                    if placed:
                        held += (" and " if held else "") + (
                            f"{placed} node instance(s) of runs placed there, not made yet"
                        )
                    raise Conflict(
                        f"the cloud {name!r} still has {held} the store records as not gone",
                        hint="kill them (`stratus instance list --all`) and delete them "
                        "(`stratus volume list --all`) first, or disable the cloud meanwhile "
                        f"(`stratus cloud disable {name}`)",
                    )
                gone_volumes = select(VolumeRecord.id).where(VolumeRecord.cloud == name)
                session.execute(
                    delete(VolumeAttachmentRecord).where(
                        VolumeAttachmentRecord.volume_id.in_(gone_volumes)
                    )
                )
                session.execute(delete(VolumeRecord).where(VolumeRecord.cloud == name))
                session.execute(delete(InstanceRecord).where(InstanceRecord.cloud == name))
                session.execute(delete(CloudRecord).where(CloudRecord.name == name))
        except IntegrityError:  # an instance recorded there as we removed it
            raise Conflict(
                f"the cloud {name!r} got a new instance while it was being removed",
                hint=f"disable it first (`stratus cloud disable {name}`), then remove it",
            ) from None
        self.connectors.forget(name)
        (view,) = [v for v in was if v.name == name]
        return dataclasses.replace(view, instances=0, volumes=0)

    def close(self) -> None:
        self._probes.shutdown(wait=False, cancel_futures=True)

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _admin(caller: Principal, what: str) -> None:
        if not caller.sees_all:
            raise Forbidden(
                f"only a site administrator may {what}",
                hint="`stratus cloud list` shows the clouds you may use",
            )

    def _check_new(
        self,
        name: str,
        connector: str,
        options: dict[str, Any],
        priority: int,
        max_instances: int | None,
    ) -> None:
        check_name(name)
        check_connector(connector)
        check_options(options)
        check_priority(priority)
        check_max_instances(max_instances)
        with session_scope(self.engine) as session:
            if session.get(CloudRecord, name) is not None:
                raise self._taken(name)

    @staticmethod
    def _taken(name: str) -> Conflict:
        return Conflict(
            f"a cloud called {name!r} is recorded already",
            hint=f"`stratus cloud show {name}`; `stratus cloud remove {name}` first to replace it",
        )

    def _get(self, caller: Principal, name: str) -> Cloud:
        cloud = clouds.get(self.engine, self._known(name))
        if not cloud.enabled and not caller.sees_all:
            raise NotFound(f"no cloud called {name!r} is recorded")
        return cloud

    @staticmethod
    def _known(name: str) -> str:
        """``name`` if it could name a cloud; NotFound otherwise, as for any unknown name."""
        if len(name) > 64 or "\x00" in name:
            raise NotFound("no cloud of that name is recorded")
        return name

    def _row(self, session: Session, name: str, *, lock: bool) -> CloudRecord:
        row = session.get(CloudRecord, self._known(name), with_for_update=lock)
        if row is None:
            raise NotFound(f"no cloud called {name!r} is recorded")
        return row

    def _counts(self, name: str | None = None) -> tuple[dict[str, int], dict[str, int]]:
        """Per cloud: instances and volumes the store records as not gone."""
        instances = select(InstanceRecord.cloud, func.count()).where(
            InstanceRecord.state != InstanceState.GONE.value
        )
        volumes = select(VolumeRecord.cloud, func.count()).where(VolumeRecord.state != _GONE_VOLUME)
        if name is not None:
            instances = instances.where(InstanceRecord.cloud == name)
            volumes = volumes.where(VolumeRecord.cloud == name)
        with session_scope(self.engine) as session:
            found = session.execute(instances.group_by(InstanceRecord.cloud)).all()
            held = session.execute(volumes.group_by(VolumeRecord.cloud)).all()
        return {c: n for c, n in found}, {c: n for c, n in held}

    def _probe(self, name: str, connector: str, options: dict[str, Any]) -> None:
        """Build the connector from ``options`` and ask its capacity: the backend's own error,
        naming the cloud and its URL, when it does not answer as it should."""
        made = make_connector(connector, dict(options))
        future = self._probes.submit(_capacity, made, close=True)
        try:
            future.result(timeout=ADD_PROBE_TIMEOUT)
        except FutureTimeout:
            raise BackendError(
                f"{where(name, options)} did not say its capacity in {ADD_PROBE_TIMEOUT:g} s: "
                "nothing was recorded"
            ) from None
        except StratusError as exc:
            raise _about(exc, f"{where(name, options)}: ", ": nothing was recorded") from None
        except Exception as exc:  # a connector's bug: still an answer naming the backend
            raise BackendError(
                f"{where(name, options)} could not be probed ({type(exc).__name__}: {exc}): "
                "nothing was recorded"
            ) from None

    def _capacity_now(self, cloud: Cloud) -> tuple[dict[str, Any] | None, str | None]:
        try:
            connector = self.connectors(cloud.name)
            future: Future[Capacity] = self._probes.submit(_capacity, connector, close=False)
            capacity = future.result(timeout=SHOW_PROBE_TIMEOUT)
        except FutureTimeout:
            return None, f"the backend did not answer in {SHOW_PROBE_TIMEOUT:g} s"
        except StratusError as exc:
            return None, exc.message
        except Exception as exc:
            return None, f"{type(exc).__name__}: {exc}"
        return dataclasses.asdict(capacity), None

    def _enroller(self) -> Enroll:
        if self._enroll is not None:
            return self._enroll
        # Imported on first use: it loads the cryptography a server without remotes never needs.
        from stratuslab.cloud.connectors.lxd_remote import enroll

        return enroll


def _capacity(connector: Connector, *, close: bool) -> Capacity:
    try:
        return connector.capacity()
    finally:
        if close:
            connector.close()


def _live(session: Session, name: str) -> tuple[int, int]:
    instances = session.scalar(
        select(func.count())
        .select_from(InstanceRecord)
        .where(InstanceRecord.cloud == name, InstanceRecord.state != InstanceState.GONE.value)
    )
    volumes = session.scalar(
        select(func.count())
        .select_from(VolumeRecord)
        .where(VolumeRecord.cloud == name, VolumeRecord.state != _GONE_VOLUME)
    )
    return instances or 0, volumes or 0


def _held(instances: int, volumes: int) -> str:
    parts = [
        f"{instances} instance(s)" if instances else "",
        f"{volumes} volume(s)" if volumes else "",
    ]
    return " and ".join(p for p in parts if p)


def _about(exc: StratusError, prefix: str, suffix: str) -> StratusError:
    """``exc`` again, its message framed (its class and hint kept)."""
    kind = BackendError if isinstance(exc, CommandFailed) else type(exc)
    return kind(prefix + exc.message + suffix, hint=exc.hint)
