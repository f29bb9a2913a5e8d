"""What users hold at once: the amounts quotas bound.

An owner holds every instance of theirs that is not gone (pending, running or stopped: a
stopped instance can be started again at any moment, so it keeps its share, as OpenStack
counts it), each at its size, and whatever runs reserve beyond their instances (node instances
whose machine is not recorded yet, told by the deployment engine through ``Reserved``). An
instance asked without a size is charged ``DEFAULT_CPU`` and ``DEFAULT_RAM_MB`` (and given that
size when a quota bounds its owner's vCPUs or memory, see ``InstanceService``). An owner also
holds storage: every volume of theirs that is not gone, at its size in whole GiB rounded up
(``volume_values.gib_of``), whether it is attached anywhere or not.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from stratuslab.cloud.types import InstanceState
from stratuslab.cloud.volume_values import gib_of
from stratuslab.db.models import InstanceRecord
from stratuslab.db.volume_models import VolumeRecord

ALL = "*"  # the scope of a quota on every cloud together
DEFAULT_CPU = 1  # vCPUs charged for an instance asked without --cpu
DEFAULT_RAM_MB = 512  # MiB charged for an instance asked without --ram


@dataclass(frozen=True)
class Amount:
    """Instances and what they hold: vCPUs and memory (MiB); and volume storage (GiB)."""

    instances: int = 0
    cpu: int = 0
    ram_mb: int = 0
    storage_gib: int = 0

    def __add__(self, other: Amount) -> Amount:
        return Amount(
            self.instances + other.instances,
            self.cpu + other.cpu,
            self.ram_mb + other.ram_mb,
            self.storage_gib + other.storage_gib,
        )

    def __bool__(self) -> bool:
        return any((self.instances, self.cpu, self.ram_mb, self.storage_gib))

    def to_dict(self) -> dict[str, int]:
        return {
            "instances": self.instances,
            "cpu": self.cpu,
            "ram_mb": self.ram_mb,
            "storage_gib": self.storage_gib,
        }


def charge_of(cpu: int | None, ram_mb: int | None, count: int = 1) -> Amount:
    """What ``count`` instances of a size hold; an unsized one counts at the default size."""
    return Amount(count, count * (cpu or DEFAULT_CPU), count * (ram_mb or DEFAULT_RAM_MB))


@dataclass(frozen=True)
class Holding:
    owner: str
    cloud: str
    amount: Amount


# What runs hold beyond their instances, for some owners, read in the caller's transaction.
Reserved = Callable[[Session, Collection[str]], Iterable[Holding]]


def nothing_reserved(_session: Session, _owners: Collection[str]) -> list[Holding]:
    return []


def held(
    session: Session, owners: Collection[str], reserved: Reserved
) -> dict[str, dict[str, Amount]]:
    """What each of ``owners`` holds on each cloud: their live instances (one grouped query),
    their volumes that are not gone (one query) and what ``reserved`` adds."""
    found: dict[str, dict[str, Amount]] = {}

    def add(owner: str, cloud: str, amount: Amount) -> None:
        per_cloud = found.setdefault(owner, {})
        per_cloud[cloud] = per_cloud.get(cloud, Amount()) + amount

    if not owners:
        return found
    rows = session.execute(
        select(
            InstanceRecord.owner,
            InstanceRecord.cloud,
            func.count(),
            func.sum(func.coalesce(InstanceRecord.cpu, DEFAULT_CPU)),
            func.sum(func.coalesce(InstanceRecord.ram_mb, DEFAULT_RAM_MB)),
        )
        .where(
            InstanceRecord.owner.in_(sorted(owners)),
            InstanceRecord.state != InstanceState.GONE.value,
        )
        .group_by(InstanceRecord.owner, InstanceRecord.cloud)
    )
    for owner, cloud, count, cpu, ram in rows:
        add(owner, cloud, Amount(int(count), int(cpu or 0), int(ram or 0)))
    volumes = session.execute(
        select(VolumeRecord.owner, VolumeRecord.cloud, VolumeRecord.size_bytes).where(
            VolumeRecord.owner.in_(sorted(owners)), VolumeRecord.state != "gone"
        )
    )
    for owner, cloud, size in volumes:
        add(owner, cloud, Amount(storage_gib=gib_of(int(size))))
    for holding in reserved(session, owners):
        add(holding.owner, holding.cloud, holding.amount)
    return found


def totals(per_cloud: dict[str, Amount]) -> dict[str, Amount]:
    """Per cloud, and on all clouds together under ``ALL``."""
    return {**per_cloud, ALL: sum(per_cloud.values(), Amount())}
