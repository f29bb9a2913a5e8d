"""Bodies of the /api/module-rights resource (module pushes are in ``schemas/runs.py``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from stratuslab.api.schemas.text import Text


class ModuleRightsChange(BaseModel):
    """What to change of a path's rights; a field left out stays as it is."""

    model_config = ConfigDict(extra="forbid")

    group: Text | None = Field(
        default=None, max_length=64, description='a group of yours, or "" for none'
    )
    group_rights: Text | None = Field(
        default=None, max_length=8, description="letters of rwx (read, edit, run), or -"
    )
    public_rights: Text | None = Field(
        default=None, max_length=8, description="letters of rwx (read, edit, run), or -"
    )
