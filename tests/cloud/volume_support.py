"""What the volume service's tests share: a service per user on the fake cloud."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from stratuslab.cloud.clouds import ConnectorPool
from stratuslab.cloud.instances import InstanceService, InstanceView, RunRequest
from stratuslab.cloud.quotas import Quotas
from stratuslab.cloud.volume_values import GiB
from stratuslab.cloud.volumes import VolumeService


def service(
    engine: Engine,
    pool: ConnectorPool,
    owner: str,
    *,
    admin: bool = False,
    quotas: Quotas | None = None,
    max_volumes: int = 100,
    max_snapshots: int = 32,
) -> VolumeService:
    instances = InstanceService(
        engine, owner=owner, connectors=pool, name_prefix="t", sees_all=admin
    )
    return VolumeService(
        engine,
        owner=owner,
        connectors=pool,
        instances=instances,
        quotas=quotas,
        sees_all=admin,
        max_volumes=max_volumes,
        max_snapshots=max_snapshots,
    )


def instance(volumes: VolumeService) -> InstanceView:
    (view,) = volumes.instances.run(RunRequest(image="debian-12"))
    return view


__all__ = ["GiB", "instance", "service"]
