"""Bodies of the /api/instances resource."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from stratuslab.api.schemas.text import Text
from stratuslab.api.schemas.volumes import InstanceVolume, VolumeMount

MAX_MOUNTS = 16  # volumes an instance is started with


class InstanceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: Text = Field(max_length=128)
    count: int = Field(default=1, ge=1, le=100)
    cpu: int | None = Field(default=None, ge=1)
    ram_mb: int | None = Field(default=None, ge=64)
    ssh_keys: list[Text] = Field(default_factory=list, max_length=100)
    user_data: Text | None = None  # the service bounds it, naming the limit
    name: Text | None = Field(default=None, max_length=63)
    # None: the site places them (its clouds' priorities, caps and the caller's quotas).
    cloud: Text | None = Field(default=None, max_length=64)
    volumes: list[VolumeMount] = Field(default_factory=list, max_length=MAX_MOUNTS)


class InstancePublic(BaseModel):
    id: str
    name: str
    cloud: str
    owner: str
    image: str
    state: str
    addresses: list[str]
    cpu: int | None
    ram_mb: int | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    error: str | None
    recovered: bool
    run_id: str | None
    node_instance: str | None
    volumes: list[InstanceVolume] = Field(default_factory=list)  # what is attached to it


class InstancesAccepted(BaseModel):
    instances: list[InstancePublic]
    watch: str


class ExecRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: list[Text] = Field(min_length=1, max_length=10_000)
    timeout: float | None = Field(default=None, gt=0, le=24 * 3600)


class ExecResponse(BaseModel):
    exit_code: int
    stdout: str
    stderr: str
