"""Bodies of what users make of images: saves, snapshots, imports."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from stratuslab.api.schemas.text import Text
from stratuslab.cloud.download import MAX_URL
from stratuslab.cloud.imaging import MAX_DESCRIPTION
from stratuslab.cloud.marketplace.xmlsafe import MAX_XML


class SaveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text = Field(max_length=160)
    public: bool = False
    description: Text = Field(default="", max_length=MAX_DESCRIPTION)


class SnapshotCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text | None = Field(default=None, max_length=63)  # default: the time, in UTC


class ImportBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Text = Field(min_length=1, max_length=MAX_URL)  # an http(s) URL, or a server path
    name: Text | None = Field(default=None, max_length=160)
    cloud: Text = Field(default="local", max_length=64)
    entry: Text | None = Field(default=None, max_length=MAX_XML)  # a signed entry's XML
    identifier: Text | None = Field(default=None, min_length=27, max_length=27)
    public: bool = False
    description: Text = Field(default="", max_length=MAX_DESCRIPTION)
