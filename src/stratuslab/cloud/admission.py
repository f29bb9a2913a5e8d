"""Admission: what is asked for instances, checked before anything is recorded.

A request is checked on its own first (counts, sizes, name, ssh keys, user-data: no store, no
backend), then against the store (names taken) and, for each cloud, against one reading of
its images and capacity for the whole batch. Each request is admitted or refused with its own
error: one bad request does not refuse the others.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

from sqlalchemy import select
from sqlalchemy.engine import Engine

from stratuslab.cloud import capacity, clouds
from stratuslab.cloud.base import Connector, Image
from stratuslab.cloud.context import normalise_user_data, parse_ssh_keys
from stratuslab.cloud.types import InstanceState
from stratuslab.cloud.volume_claims import VolumeClaim
from stratuslab.db.models import InstanceRecord
from stratuslab.db.session import session_scope
from stratuslab.errors import Conflict, Invalid, StratusError

MAX_COUNT = 100
# Whether an image may start on a cloud: None, or the error that refuses it (the site's policy).
Vet = Callable[[str, Image], StratusError | None]
_HOSTNAME = re.compile(r"^[a-z][a-z0-9-]{0,61}[a-z0-9]$|^[a-z]$")


@dataclass(frozen=True)
class RunRequest:
    """What ``stratus instance run`` (or the deployment engine, for one node instance) asks."""

    image: str
    count: int = 1
    cpu: int | None = None
    ram_mb: int | None = None
    ssh_keys: tuple[str, ...] = ()
    user_data: str | None = None
    name: str | None = None
    cloud: str = clouds.DEFAULT_CLOUD
    # The site places it (cloud/placement.py): ``cloud`` is then only where it goes when the
    # site has that cloud alone. False: it goes to ``cloud`` or nowhere.
    anywhere: bool = False
    run_id: str | None = None
    node_instance: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    # Volumes each instance is created with, claimed when the instances are recorded.
    volumes: tuple[VolumeClaim, ...] = ()


@dataclass(frozen=True)
class Checked:
    """A request that passed the checks of its own: the names its instances will have and
    its contextualization, normalised."""

    request: RunRequest
    names: list[str]
    ssh_keys: tuple[str, ...]
    user_data: str | None
    explicit: bool  # the user chose the names, so they may clash with others

    @property
    def ask(self) -> capacity.Ask:
        return capacity.Ask(self.request.count, self.request.cpu, self.request.ram_mb)


def check(request: RunRequest, *, name_prefix: str) -> Checked:
    """Check ``request`` on its own; raises ``Invalid`` naming what is wrong."""
    keys = (
        parse_ssh_keys("\n".join(request.ssh_keys), source="ssh keys") if request.ssh_keys else ()
    )
    user_data = normalise_user_data(request.user_data.encode()) if request.user_data else None
    if not 1 <= request.count <= MAX_COUNT:
        raise Invalid(f"-n must be between 1 and {MAX_COUNT}, not {request.count}")
    if request.cpu is not None and request.cpu < 1:
        raise Invalid(f"--cpu must be at least 1, not {request.cpu}")
    if request.ram_mb is not None and request.ram_mb < 64:
        raise Invalid(f"--ram must be at least 64 (MiB), not {request.ram_mb}")
    writable = [c.label for c in request.volumes if not c.mount.read_only]
    if writable and request.count > 1:
        raise Invalid(
            f"volume {writable[0]} is attached read-write: it can go to one instance, "
            f"not {request.count}"
        )
    if request.name is None:
        names = [f"{name_prefix}-{secrets.token_hex(4)}" for _ in range(request.count)]
        return Checked(request, names, keys, user_data, explicit=False)
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
    return Checked(request, names, keys, user_data, explicit=True)


def name_conflicts(engine: Engine, batch: Sequence[Checked]) -> dict[int, Conflict]:
    """The requests of ``batch`` (by position) whose names a live instance of the same cloud
    has, or an earlier request of the batch asks for too. One query per cloud."""
    wanted: dict[str, set[str]] = {}
    for item in batch:
        if item.explicit:
            wanted.setdefault(item.request.cloud, set()).update(item.names)
    taken: dict[str, set[str]] = {}
    with session_scope(engine) as session:
        for cloud, names in wanted.items():
            taken[cloud] = set(
                session.scalars(
                    select(InstanceRecord.name).where(
                        InstanceRecord.cloud == cloud,
                        InstanceRecord.name.in_(names),
                        InstanceRecord.state != InstanceState.GONE.value,
                    )
                )
            )
    refused: dict[int, Conflict] = {}
    for index, item in enumerate(batch):
        if not item.explicit:
            continue
        cloud_taken = taken.setdefault(item.request.cloud, set())
        clash = next((n for n in item.names if n in cloud_taken), None)
        if clash is not None:
            refused[index] = Conflict(
                f"an instance called {clash!r} already exists", hint="choose another --name"
            )
        else:
            cloud_taken.update(item.names)  # later requests of the batch may not take them
    return refused


@dataclass(frozen=True)
class Admitted:
    """A request that may be recorded: checked, and the image it starts from found."""

    checked: Checked
    image: Image


def admit_batch(
    engine: Engine,
    connectors: Callable[[str], Connector],
    requests: Sequence[RunRequest],
    *,
    name_prefix: str,
    vet: Vet | None = None,
) -> list[Admitted | StratusError]:
    """Each request of a batch admitted, or the error that refuses it, in order.

    Refusals: ``Invalid`` (the request itself), ``Conflict`` (a name a live instance has, or
    an earlier request of the batch asks for), ``NotFound`` (the cloud, the image), then what
    :func:`admit` says for each cloud's share of the batch (with ``vet``, the site's trust
    policy too: ``Untrusted``). Nothing is recorded.
    """
    outcomes: list[Admitted | StratusError | None] = [None] * len(requests)
    checked: dict[int, Checked] = {}
    for index, request in enumerate(requests):
        try:
            checked[index] = check(request, name_prefix=name_prefix)
        except StratusError as exc:
            outcomes[index] = exc
    order = sorted(checked)
    for position, conflict in name_conflicts(engine, [checked[i] for i in order]).items():
        outcomes[order[position]] = conflict
    by_cloud: dict[str, list[int]] = {}
    for index in order:
        if outcomes[index] is None:
            by_cloud.setdefault(requests[index].cloud, []).append(index)
    for cloud, indexes in by_cloud.items():
        try:
            found = admit(
                connectors(cloud),
                [checked[i] for i in indexes],
                vet=None if vet is None else partial(vet, cloud),
            )
        except StratusError as exc:  # no such cloud, or its connector cannot be made
            found = [exc] * len(indexes)
        for index, image in zip(indexes, found, strict=True):
            outcomes[index] = Admitted(checked[index], image) if isinstance(image, Image) else image
    done = [outcome for outcome in outcomes if outcome is not None]
    assert len(done) == len(requests), "every request is admitted or refused"
    return done


def admit(
    connector: Connector,
    batch: Sequence[Checked],
    *,
    vet: Callable[[Image], StratusError | None] | None = None,
) -> list[Image | StratusError]:
    """For requests of one cloud: the image each starts from, or why it is refused.

    Each image is looked up once, and ``vet`` asked about it once (the site's trust policy),
    and the capacity read once for the whole batch. A request whose image is unknown or
    refused, or whose instances ask more CPUs than the host has, is refused on its own; when
    the requests left need more memory or disk together than the cloud has free, all of them
    are refused, saying how much was asked and how much is free (a batch is a run's nodes,
    which are of little use without each other).
    """
    images: dict[str, Image | StratusError] = {}
    outcome: list[Image | StratusError] = []
    for item in batch:
        name = item.request.image
        if name not in images:
            try:
                images[name] = connector.get_image(name)
            except StratusError as exc:
                images[name] = exc
            found = images[name]
            if vet is not None and isinstance(found, Image):
                images[name] = vet(found) or found
        outcome.append(images[name])
    admitted = [i for i, found in enumerate(outcome) if isinstance(found, Image)]
    if not admitted:
        return outcome
    try:
        free = connector.capacity()
    except StratusError as exc:  # a backend too slow to say: refuse in bounded time
        return [exc if i in admitted else found for i, found in enumerate(outcome)]
    for i in admitted:
        try:
            capacity.check_cpu(free, batch[i].ask)
        except StratusError as exc:
            outcome[i] = exc
    admitted = [i for i in admitted if isinstance(outcome[i], Image)]
    try:
        capacity.check_batch(free, [batch[i].ask for i in admitted])
    except StratusError as exc:
        for i in admitted:
            outcome[i] = exc
    return outcome
