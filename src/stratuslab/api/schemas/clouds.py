"""Bodies of the /api/clouds resource.

A cloud is registered either from a connector kind and its options (``connector``,
``options``: how a Libcloud cloud is given, and any other kind), or, for a remote LXD or Incus,
from what enrolment needs (``lxd``): the server makes the client key pair itself, where it is
kept, pins the remote's certificate and has the remote trust the client. Credentials travel
in bodies only; no answer ever holds one.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from stratuslab.api.schemas.text import Text
from stratuslab.cloud.registry_values import (
    MAX_CONNECTOR,
    MAX_NAME,
    MAX_NOTE,
    MAX_OPTION_KEY,
    MAX_OPTIONS,
    MAX_PRIORITY,
    MAX_SITE_INSTANCES,
)

MAX_PEM = 16 * 1024  # characters of a PEM certificate or key
MAX_ENDPOINT = 2048
MAX_SECRET = 1024  # characters of a trust password

OptionValue = (
    Annotated[Text, Field(max_length=MAX_PEM)]
    | StrictInt
    | Annotated[float, Field(allow_inf_nan=False)]
    | bool
    | None
    | Annotated[list[Annotated[Text, Field(max_length=256)]], Field(max_length=100)]
)
Options = Annotated[
    dict[Annotated[Text, Field(min_length=1, max_length=MAX_OPTION_KEY)], OptionValue],
    Field(max_length=MAX_OPTIONS),
]
Priority = Annotated[StrictInt, Field(ge=0, le=MAX_PRIORITY)]
SiteCap = Annotated[StrictInt, Field(ge=0, le=MAX_SITE_INSTANCES)]


class LxdEnrollment(BaseModel):
    """A remote LXD (or Incus) to enrol: its HTTPS API, and how it comes to trust us."""

    model_config = ConfigDict(extra="forbid")

    endpoint: Text = Field(
        min_length=1, max_length=MAX_ENDPOINT, description="https://HOST:8443", pattern="^https://"
    )
    password: Text | None = Field(
        default=None,
        max_length=MAX_SECRET,
        description="the remote's trust password (core.trust_password), used once",
    )
    cert_pem: Text | None = Field(
        default=None, max_length=MAX_PEM, description="a client certificate it trusts already"
    )
    key_pem: Text | None = Field(default=None, max_length=MAX_PEM, description="its key")
    fingerprint: Text | None = Field(
        default=None,
        max_length=128,
        description="the SHA-256 of the remote's certificate, hex (else trusted on first use)",
    )
    profile: Text = Field(default="default", min_length=1, max_length=64)


class CloudCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text = Field(min_length=1, max_length=MAX_NAME)
    connector: Text | None = Field(
        default=None, min_length=1, max_length=MAX_CONNECTOR, description="lxd, libcloud, ..."
    )
    options: Options | None = Field(default=None, description="the connector's options")
    lxd: LxdEnrollment | None = Field(default=None, description="a remote LXD to enrol")
    priority: Priority = Field(default=100, description="placement tries lower ones first")
    max_instances: SiteCap | None = Field(
        default=None, description="the site's cap on live instances there (none: the backend's)"
    )

    @model_validator(mode="after")
    def one_way(self) -> CloudCreate:
        if (self.connector is None) == (self.lxd is None):
            raise ValueError("give either connector (with its options) or lxd")
        if self.lxd is not None and self.options is not None:
            raise ValueError("options go with connector; lxd's options are made by enrolment")
        return self


class CloudUpdate(BaseModel):
    """What changes; a field left out is kept. ``max_instances: null`` removes the cap."""

    model_config = ConfigDict(extra="forbid")

    priority: Priority | None = None
    max_instances: SiteCap | None = None
    enabled: bool | None = None
    note: Text | None = Field(
        default=None, max_length=MAX_NOTE, description="why it is disabled (with enabled: false)"
    )
    options: Options | None = Field(
        default=None,
        description="merged over the recorded options: null removes one, ******** keeps it",
    )


class CapacityPublic(BaseModel):
    cpus: int | None
    memory_total_mb: int | None
    memory_free_mb: int | None
    disk_total_mb: int | None
    disk_free_mb: int | None


class CloudPublic(BaseModel):
    name: str
    connector: str
    priority: int
    enabled: bool
    max_instances: int | None
    note: str | None
    instances: int  # live instances the store records there
    volumes: int  # volumes not gone the store records there
    options: dict[str, Any] | None  # administrators only, credentials redacted


class CloudDetail(CloudPublic):
    capacity: CapacityPublic | None  # None: the backend did not answer (capacity_error says)
    capacity_error: str | None
