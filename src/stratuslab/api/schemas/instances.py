"""Bodies of the /api/instances resource."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class InstanceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: str
    count: int = Field(default=1, ge=1, le=100)
    cpu: int | None = Field(default=None, ge=1)
    ram_mb: int | None = Field(default=None, ge=64)
    ssh_keys: list[str] = Field(default_factory=list)
    user_data: str | None = None
    name: str | None = None
    cloud: str = "local"


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


class InstancesAccepted(BaseModel):
    instances: list[InstancePublic]
    watch: str


class ExecRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: list[str] = Field(min_length=1)
    timeout: float | None = Field(default=None, gt=0)


class ExecResponse(BaseModel):
    exit_code: int
    stdout: str
    stderr: str
