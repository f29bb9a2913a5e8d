"""Bodies of the /api/runs and /api/modules resources.

Every field a request can make grow has a bound here, before a service sees it, and every
name that is looked up or stored as sent is :data:`~stratuslab.api.schemas.text.Text`; the
services check the meaning (a run timeout within a week, a multiplicity within the site's
bound, a runtime parameter's name and value).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from stratuslab.api.schemas.text import Text
from stratuslab.deploy.logs import MAX_BATCH

MAX_ID = 2**31 - 1  # the largest id, offset or instance number the store holds
MAX_PATH = 255
MAX_KEY = 255
MAX_TEXT = 4096
MAX_FILE = 512  # characters of a module's file name, as the store keeps it


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    module: Text = Field(
        max_length=MAX_PATH + 12, description="path (the newest version) or path/N"
    )
    params: dict[str, str] = Field(
        default_factory=dict, max_length=1000, description='"node:input" or "ss:name" -> value'
    )
    multiplicity: dict[Text, int] = Field(default_factory=dict, max_length=1000)
    keep_running: Text = Field(default="on-success", max_length=16)
    tags: list[Text] = Field(default_factory=list, max_length=100)
    timeout_s: float | None = Field(
        default=None, gt=0, le=7 * 24 * 3600, description="abort the run if not Ready by then"
    )
    mutable: bool = Field(default=False, description="scalable: instances can be added and removed")
    pristine: bool = Field(default=False, description="start every node from its pristine image")


class InstancesAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(default=1, ge=1, le=1000)


class ModuleText(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: Text = Field(max_length=MAX_PATH)
    file: Text = Field(max_length=MAX_FILE)
    text: Text


class ModulePush(BaseModel):
    model_config = ConfigDict(extra="forbid")

    modules: list[ModuleText] = Field(min_length=1, max_length=1000)
    only_changed: bool = Field(default=False, description="keep the newest version when unchanged")


class LogLine(BaseModel):
    t: float = 0.0
    # Recipe output: what a recipe prints is kept, NUL characters dropped (deploy/logs.py).
    state: str = Field(default="", max_length=64)
    recipe: str = Field(default="", max_length=64)
    stream: str = Field(default="stdout", max_length=16)
    text: str = Field(default="", max_length=65536)


class LogBatch(BaseModel):
    node_instance: Text = Field(max_length=128)
    lines: list[LogLine] = Field(max_length=MAX_BATCH)
