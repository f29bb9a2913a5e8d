"""Whether what is asked of a cloud fits what it can still host.

A batch (a run's node instances, or one ``-n`` request) is checked as a whole against one
reading of the cloud's capacity: CPUs per instance, then the memory and disk of the whole
batch. The backend's own refusal is the last word; this is the early, explained one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from stratuslab.cloud.base import Capacity
from stratuslab.errors import CapacityExceeded

MEMORY_RESERVE_MB = 512  # left to the host whatever users ask for
DISK_PER_INSTANCE_MB = 200  # a fresh container on btrfs, before it installs anything


@dataclass(frozen=True)
class Ask:
    """What one request asks of a cloud: ``count`` instances of the given size."""

    count: int
    cpu: int | None = None
    ram_mb: int | None = None


def check_cpu(capacity: Capacity, ask: Ask) -> None:
    """Raise ``CapacityExceeded`` when one instance asks more CPUs than the host has."""
    if ask.cpu and capacity.cpus and ask.cpu > capacity.cpus:
        raise CapacityExceeded(
            f"not enough capacity: {ask.cpu} CPUs asked per instance, the host has {capacity.cpus}",
            hint=f"ask for at most --cpu {capacity.cpus}",
        )


def check_batch(capacity: Capacity, asks: Sequence[Ask]) -> None:
    """Raise ``CapacityExceeded`` when the asks together need more memory or disk than the
    cloud has free, saying how much was asked and how much is free."""
    if capacity.memory_free_mb is not None:
        sizes = Counter[int]()
        for ask in asks:
            if ask.ram_mb:
                sizes[ask.ram_mb] += ask.count
        asked = sum(size * count for size, count in sizes.items())
        free = capacity.memory_free_mb - MEMORY_RESERVE_MB
        if asked > free:
            parts = " + ".join(f"{count} x {size} MiB" for size, count in sorted(sizes.items()))
            total = f" ({asked} MiB in all)" if len(sizes) > 1 else ""
            raise CapacityExceeded(
                f"not enough capacity: {parts} of memory asked{total}, {max(free, 0)} MiB free",
                hint="ask for less with --ram or fewer instances with -n",
            )
    if capacity.disk_free_mb is not None:
        count = sum(ask.count for ask in asks)
        needed = DISK_PER_INSTANCE_MB * count
        if capacity.disk_free_mb < needed:
            raise CapacityExceeded(
                f"not enough capacity: the storage pool has {capacity.disk_free_mb} MiB "
                f"free, {needed} MiB needed for {count} instance{'s' if count > 1 else ''}",
                hint="kill instances you no longer need (stratus instance list)",
            )
