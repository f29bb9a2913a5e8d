"""Placement: which cloud new instances go to, and why.

A site lists its clouds in priority order (``clouds.priority``, then name). What is asked (a
user's instances, a run's node instance) goes, whole, to the first cloud in that order that

- is enabled (a disabled cloud takes nothing new; what runs there goes on),
- has the image it starts from (an image module lists one per cloud),
- has room under the site's cap (``max_instances``: instances live there, plus node instances
  placed there whose machine is not made yet),
- has room by what the backend reports (memory), and
- has room under the asker's quotas for that cloud.

So when the first cloud is full, what is asked next bursts to the next one, and the answer
says so: ``host2: local is full (4 of 4 instances)``. Something pinned to a cloud (``--cloud``,
a node's ``cloud:``) is checked against that cloud alone. When no cloud will do, the refusal
(``CapacityExceeded``) gives each cloud's reason.

:func:`choose` is the decision, pure; :class:`Placer` reads what it needs: the clouds, the
store's counts and the asker's quotas in one short transaction, then from each backend, lazily
and once per placement, its capacity and whether it has an image, with no transaction open
(a backend may take seconds to answer). So two placements at the same instant may both see the
last room of a capped cloud: a cap can be passed by what races in that instant, and quotas
are checked again, under their locks, when the instances are recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from stratuslab.cloud import capacity as capacity_checks
from stratuslab.cloud.admission import RunRequest
from stratuslab.cloud.base import Capacity, Connector, Image
from stratuslab.cloud.clouds import Cloud, all_clouds_in
from stratuslab.cloud.connectors import connector_class
from stratuslab.cloud.holdings import ALL, Amount, Reserved, charge_of, held, nothing_reserved
from stratuslab.cloud.quotas import bindings
from stratuslab.cloud.types import InstanceState
from stratuslab.db.models import InstanceRecord
from stratuslab.db.session import session_scope
from stratuslab.errors import CapacityExceeded, NotFound, StratusError

# Node instances placed on each cloud whose machine is not recorded yet (the engine's).
Pending = Callable[[Session], Mapping[str, int]]
# Whether an image may start on a cloud: None, or the error that refuses it (the site's policy).
Vet = Callable[[str, Image], StratusError | None]


def no_pending(_session: Session) -> dict[str, int]:
    return {}


@dataclass(frozen=True)
class Ask:
    """What is placed at once: ``count`` instances of one size, from the image each cloud
    lists in ``images`` (cloud -> image name), or only on ``pinned``."""

    count: int
    images: Mapping[str, str]
    cpu: int | None = None
    ram_mb: int | None = None
    pinned: str | None = None
    image: str | None = None  # the image of every cloud ``images`` does not name
    # Only clouds whose instances are on the site's networks (a run's node instances, which
    # call the server back at its site address).
    on_site: bool = False

    def image_on(self, cloud: str) -> str | None:
        return self.images.get(cloud, self.image)


@dataclass(frozen=True)
class Placed:
    cloud: str
    image: str
    reason: str  # why there, for people


@dataclass
class Room:
    """What one cloud can still take, as read for one placement."""

    cloud: Cloud
    live: int  # instances there, and node instances placed there without a machine yet
    memory_free_mb: int | None = None  # what the backend reports, less the host's reserve
    quota: list[tuple[str, Amount, Callable[[Amount, Amount], list[str]]]] = field(
        default_factory=list
    )  # (whose quota, in use now, excess(in_use, asked)) for quotas on this cloud
    placed: Amount = field(default_factory=Amount)  # what this placement put here already

    def refusal(self, ask: Ask, image_found: bool | str, *, backend: bool = True) -> str | None:
        """Why ``ask`` does not fit here, or None when it does; without ``backend``, only
        whether the site lets it come (enabled, under its cap)."""
        name = self.cloud.name
        if not self.cloud.enabled:
            # Not the administrators' note: users do not see disabled clouds (registry.py).
            return f"{name} takes no new instances"
        if image_found is not True:
            return f"{name}: {image_found or 'no image for it'}"
        cap = self.cloud.max_instances
        if cap is not None and self.live + self.placed.instances + ask.count > cap:
            return f"{name} is full ({self.live + self.placed.instances} of {cap} instances)"
        if not backend:
            return None
        if self.memory_free_mb is not None and ask.ram_mb:
            wanted = self.placed.ram_mb + ask.count * ask.ram_mb
            if wanted > self.memory_free_mb:
                free = max(self.memory_free_mb - self.placed.ram_mb, 0)
                return (
                    f"{name}: not enough capacity: {ask.count} x {ask.ram_mb} MiB of memory "
                    f"asked, {free} MiB free"
                )
        asked = charge_of(ask.cpu, ask.ram_mb, ask.count)
        for whose, in_use, excess in self.quota:
            over = excess(in_use + self.placed, asked)
            if over:
                return f"{name}: over {whose}: {'; '.join(over)}"
        return None


def choose(
    asks: Sequence[Ask],
    rooms: Sequence[Room],
    *,
    image_found: Callable[[str, str], Literal[True] | StratusError],
    on_site: Callable[[str], bool] = lambda _cloud: True,
) -> list[Placed | StratusError]:
    """Each ask placed, in order, or refused with every candidate cloud's reason.

    ``rooms`` are in priority order; ``image_found(cloud, image)`` is True, or why not (it
    may ask the backend: it is called only for the clouds an ask gets to). An ask that only
    the image kept out is refused for that (``NotFound``, or the one backend's own error);
    anything else is ``CapacityExceeded``."""
    by_name = {room.cloud.name: room for room in rooms}
    answer: list[Placed | StratusError] = []
    for ask in asks:
        if ask.pinned is not None:
            candidates = [by_name[ask.pinned]] if ask.pinned in by_name else []
        else:
            candidates = [r for r in rooms if ask.image_on(r.cloud.name) is not None]
        passed: list[str] = []
        images_refused: list[StratusError] = []
        chosen: Placed | None = None
        for room in candidates:
            name = room.cloud.name
            if ask.on_site and ask.pinned is None and not on_site(name):
                passed.append(f"{name}: its instances would not reach this server")
                continue
            image = ask.image_on(name)
            found: bool | str = "no image for it" if image is None else True
            # Where it is pinned, admission says in its own words what the image and the
            # backend's capacity refuse; placement only says whether the cloud takes it.
            if image is not None and room.cloud.enabled and ask.pinned is None:
                outcome = image_found(name, image)
                found = True if outcome is True else f"image {image!r}: {outcome.message}"
                if isinstance(outcome, StratusError):
                    images_refused.append(outcome)
            why = room.refusal(ask, found, backend=ask.pinned is None)
            if why is not None:
                passed.append(why)
                continue
            room.placed += charge_of(ask.cpu, ask.ram_mb, ask.count)
            reason = "pinned" if ask.pinned else "first by priority with room"
            if passed:
                reason = ("burst: " if ask.pinned is None else "") + "; ".join(passed)
            chosen = Placed(name, image or "", reason)
            break
        if chosen is not None:
            answer.append(chosen)
            continue
        if images_refused and len(images_refused) == len(passed):
            # Nothing but the image kept it out: say that, in the backend's words when
            # there was one cloud to ask.
            answer.append(
                images_refused[0]
                if len(images_refused) == 1
                else NotFound(
                    "no cloud has the image: " + " | ".join(passed),
                    hint="stratus image list --cloud NAME shows a cloud's images",
                )
            )
            continue
        if not candidates and ask.pinned is not None:
            answer.append(
                NotFound(
                    f"no cloud called {ask.pinned!r} is recorded",
                    hint="stratus cloud list shows the clouds",
                )
            )
            continue
        if not candidates:
            where = ", ".join(sorted(ask.images)) or "none"
            passed.append(f"no cloud the image lists is recorded (it lists: {where})")
        what = f"{ask.count} instance{'s' if ask.count > 1 else ''}"
        answer.append(
            CapacityExceeded(
                f"no cloud can take {what}: " + " | ".join(passed),
                hint="wait for instances to end, or ask an administrator "
                "(stratus cloud list shows the clouds)",
            )
        )
    return answer


class Placer:
    """Places asks on the site's clouds with what the store and the backends say."""

    def __init__(
        self,
        engine: Engine,
        connectors: Callable[[str], Connector],
        *,
        reserved: Reserved = nothing_reserved,
        pending: Pending = no_pending,
        vet: Vet | None = None,
    ) -> None:
        self.engine = engine
        self.connectors = connectors
        self.reserved = reserved
        self.pending = pending
        self.vet = vet

    def place(self, owner: str | None, asks: Sequence[Ask]) -> list[Placed | StratusError]:
        """:func:`choose` for ``asks`` of ``owner`` (None: quotas do not apply)."""
        if not asks:
            return []
        with session_scope(self.engine) as session:
            rooms = [Room(cloud, 0) for cloud in all_clouds_in(session)]
            by_name = {room.cloud.name: room for room in rooms}
            for name, count in self._live(session).items():
                if name in by_name:
                    by_name[name].live = count
            if owner:
                self._quotas(session, owner, by_name)
        cache: dict[tuple[str, str], Literal[True] | StratusError] = {}
        read: set[str] = set()

        def image_found(cloud: str, image: str) -> Literal[True] | StratusError:
            if cloud not in read:  # the backend's capacity, once, when a cloud is first tried
                read.add(cloud)
                by_name[cloud].memory_free_mb = self._memory_free(cloud)
            key = (cloud, image)
            if key not in cache:
                cache[key] = self._image(cloud, image)
            return cache[key]

        def on_site(cloud: str) -> bool:
            return connector_class(by_name[cloud].cloud.connector).on_site_network

        return choose(asks, rooms, image_found=image_found, on_site=on_site)

    def requests(
        self, owner: str, requests: Sequence[RunRequest]
    ) -> list[RunRequest | StratusError]:
        """Each request with the cloud it goes to, or why none will take it. A request made
        for a run's node instance went where the run placed it (``runs`` placed it when it
        was created or scaled) and passes as it is; one with ``anywhere`` is placed; any other
        is checked against its own cloud (disabled, full)."""
        todo = [i for i, r in enumerate(requests) if r.run_id is None]
        answer: list[RunRequest | StratusError] = list(requests)
        if not todo:
            return answer
        asks = [
            Ask(
                requests[i].count,
                {},
                requests[i].cpu,
                requests[i].ram_mb,
                pinned=None if requests[i].anywhere else requests[i].cloud,
                image=requests[i].image,
            )
            for i in todo
        ]
        placed = self.place(owner, asks)
        for i, outcome in zip(todo, placed, strict=True):
            if isinstance(outcome, Placed):
                answer[i] = replace(requests[i], cloud=outcome.cloud, anywhere=False)
            else:
                answer[i] = outcome
        return answer

    def _live(self, session: Session) -> dict[str, int]:
        rows = session.execute(
            select(InstanceRecord.cloud, func.count())
            .where(InstanceRecord.state != InstanceState.GONE.value)
            .group_by(InstanceRecord.cloud)
        )
        live = {cloud: int(count) for cloud, count in rows}
        for cloud, count in self.pending(session).items():
            live[cloud] = live.get(cloud, 0) + count
        return live

    def _quotas(self, session: Session, owner: str, rooms: Mapping[str, Room]) -> None:
        found = [b for b in bindings(session, owner) if b.limits.enforced and b.cloud != ALL]
        if not found:
            return
        holdings = held(session, {o for b in found for o in b.members}, self.reserved)
        for binding in found:
            if binding.cloud in rooms:
                rooms[binding.cloud].quota.append(
                    (binding.describe(), binding.in_use(holdings), binding.limits.excess)
                )

    def _memory_free(self, cloud: str) -> int | None:
        try:
            reading: Capacity = self.connectors(cloud).capacity()
        except StratusError:
            return None  # admission reads it again and refuses in words of its own
        if reading.memory_free_mb is None:
            return None
        return reading.memory_free_mb - capacity_checks.MEMORY_RESERVE_MB

    def _image(self, cloud: str, image: str) -> Literal[True] | StratusError:
        try:
            found = self.connectors(cloud).get_image(image)
        except StratusError as exc:
            return exc
        if self.vet is not None:
            refused = self.vet(cloud, found)
            if refused is not None:
                return refused
        return True
