"""Bodies of the /api/volumes resource.

A size is given as users write it (``"2GiB"``, ``"500MiB"``) or as a number of bytes, and is
read by :func:`stratuslab.cloud.volume_values.parse_size` in the route, so that a size that does
not parse is refused in the words the CLI and the module parser use, naming the value.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from stratuslab.api.schemas.text import Text
from stratuslab.cloud.imaging import MAX_DESCRIPTION

MAX_REF = 160  # characters of a volume reference: owner (64) / name (63), or an id
MAX_SIZE_TEXT = 40  # characters of a size as written ("1.5TiB"); parse_size reads up to 32
MAX_PATH = 255  # characters of a mount path (the store's column)
MAX_INSTANCE = 64  # characters of an instance reference (an id, an id prefix or a name)

# A bool is no size: StrictInt refuses true and false.
Size = StrictInt | Annotated[Text, Field(max_length=MAX_SIZE_TEXT)]


class VolumeCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text = Field(max_length=63)
    size: Size | None = Field(
        default=None,
        description='bytes, or a number and a unit: "2GiB", "500MiB", "8GB"; with a source, '
        "at least the source's size (its size when left out)",
    )
    public: bool = False
    description: Text = Field(default="", max_length=MAX_DESCRIPTION)
    source: Text | None = Field(
        default=None,
        max_length=MAX_REF,
        description="a copy of this volume (OWNER/NAME) or of one of its snapshots "
        "(OWNER/NAME/SNAPSHOT)",
    )
    cloud: Text = Field(default="local", max_length=64)


class VolumeResize(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size: Size = Field(description="the new size, as for a volume's creation")


class VolumeAttach(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instance: Text = Field(min_length=1, max_length=MAX_INSTANCE)
    path: Text | None = Field(default=None, max_length=MAX_PATH, description="default /mnt/NAME")
    read_only: bool = False


class VolumeDetach(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instance: Text = Field(min_length=1, max_length=MAX_INSTANCE)


class VolumeSnapshotCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text | None = Field(default=None, max_length=63)  # default: the time, in UTC


class VolumeMount(BaseModel):
    """A volume an instance is started with (``POST /api/instances``)."""

    model_config = ConfigDict(extra="forbid")

    volume: Text = Field(min_length=1, max_length=MAX_REF, description="NAME or OWNER/NAME")
    path: Text | None = Field(default=None, max_length=MAX_PATH, description="default /mnt/NAME")
    read_only: bool = False


class AttachmentPublic(BaseModel):
    instance: str
    instance_name: str
    path: str
    read_only: bool
    state: str


class VolumePublic(BaseModel):
    id: str
    ref: str
    owner: str
    name: str
    cloud: str
    size_bytes: int
    public: bool
    description: str
    state: str
    source: str | None
    run_id: str | None
    created_at: datetime
    error: str | None
    recovered: bool  # found on the backend after the store had lost it
    attachments: list[AttachmentPublic]


class VolumeSnapshotPublic(BaseModel):
    volume: str  # the volume's OWNER/NAME
    volume_id: str
    name: str
    created_at: datetime | None


class InstanceVolume(BaseModel):
    """A volume as an instance shows it."""

    ref: str  # OWNER/NAME
    path: str
    read_only: bool
    state: str  # attaching, attached, detaching
