"""Bodies of the /api/runs and /api/modules resources."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    module: str = Field(description="path (the newest version) or path/N")
    params: dict[str, str] = Field(
        default_factory=dict, description='"node:input" or "ss:name" -> value'
    )
    multiplicity: dict[str, int] = Field(default_factory=dict)
    keep_running: str = "on-success"
    tags: list[str] = Field(default_factory=list)
    timeout_s: int | None = Field(
        default=None, gt=0, description="abort the run if not Ready by then"
    )
    mutable: bool = Field(default=False, description="scalable: instances can be added and removed")


class InstancesAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(default=1, ge=1, le=1000)


class ModuleText(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    file: str
    text: str


class ModulePush(BaseModel):
    model_config = ConfigDict(extra="forbid")

    modules: list[ModuleText] = Field(min_length=1)
    only_changed: bool = Field(default=False, description="keep the newest version when unchanged")


class LogLine(BaseModel):
    t: float = 0.0
    state: str = ""
    recipe: str = ""
    stream: str = "stdout"
    text: str = ""


class LogBatch(BaseModel):
    node_instance: str
    lines: list[LogLine]
