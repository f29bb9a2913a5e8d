"""Bodies of /api/users, /api/groups, /api/apikeys and /api/whoami.

Lengths are bounded here to what the store keeps; the services check the rest of the meaning
(the form of a name, an email address, a password's length, a key's lifetime) with messages
that say what is wrong.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from stratuslab.api.schemas.text import Text


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text = Field(max_length=200)  # the service says what a name is
    email: Text | None = Field(default=None, max_length=254)
    admin: bool = False
    password: Text | None = None  # the service bounds it, naming the limit


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: Text


class UserPublic(BaseModel):
    name: str
    email: str | None
    admin: bool
    disabled: bool
    has_password: bool
    groups: list[str]
    created_at: str


class GroupCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text = Field(max_length=200)
    description: Text = Field(default="", max_length=4096)


class MemberAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: Text = Field(max_length=200)


class GroupPublic(BaseModel):
    name: str
    description: str
    members: list[str]
    created_at: str


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text = Field(default="", max_length=4096)
    expires_days: int | None = Field(default=None, ge=-(2**31), le=2**31 - 1)


class ApiKeyPublic(BaseModel):
    id: str
    user: str
    name: str
    state: str
    created_at: str
    expires_at: str | None
    last_used_at: str | None


class ApiKeyCreated(ApiKeyPublic):
    secret: str  # shown in this answer only
    token: str  # <id>.<secret>: Authorization: Bearer, or STRATUS_TOKEN


class WhoAmI(BaseModel):
    user: str
    admin: bool
    groups: list[str]
    authenticated_by: str  # site-token, api-key, password or session
    authenticated_as: str  # whose credentials they are (an administrator acting as `user`)
    session: str | None  # the session resource, when a session cookie was presented
    acting_as: bool  # an administrator acting as this user (X-Stratus-User)
