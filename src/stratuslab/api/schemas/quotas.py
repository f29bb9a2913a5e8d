"""Bodies of the /api/quotas resource."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from stratuslab.api.schemas.text import Text
from stratuslab.cloud.quotas import MAX_LIMIT

Limit = int | None


class QuotaUpdate(BaseModel):
    """A quota's limits on one cloud (or ``*``, all clouds together); a limit left out or
    null is no limit, and a quota with no limit at all is removed."""

    model_config = ConfigDict(extra="forbid")

    cloud: Text = Field(default="*", max_length=64, description="a cloud's name, or * for all")
    instances: Limit = Field(default=None, ge=0, le=MAX_LIMIT)
    cpu: Limit = Field(default=None, ge=0, le=MAX_LIMIT, description="vCPUs")
    ram_mb: Limit = Field(default=None, ge=0, le=MAX_LIMIT, description="memory, MiB")
    storage_gib: Limit = Field(default=None, ge=0, le=MAX_LIMIT, description="volume storage, GiB")
