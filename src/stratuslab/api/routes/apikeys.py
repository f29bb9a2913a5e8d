"""/api/apikeys: a user's API keys. The secret is in the answer that creates a key and
nowhere else (the store keeps its SHA-256); a user lists and revokes their own keys only, and
another user's key is not found (``accounts/credentials.py`` decides)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, status

from stratuslab.api.deps import ServicesDep, UserDep
from stratuslab.api.schemas.accounts import ApiKeyCreate, ApiKeyCreated, ApiKeyPublic

router = APIRouter(prefix="/api/apikeys", tags=["apikeys"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated)
def create(body: ApiKeyCreate, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    """A new key of the caller's; ``token`` (``<id>.<secret>``) is what a client sends as
    ``Authorization: Bearer``."""
    return services.credentials.create_key(
        caller=user, name=body.name, expires_days=body.expires_days
    )


@router.get("", response_model=list[ApiKeyPublic])
def list_keys(
    services: ServicesDep,
    user: UserDep,
    all: Annotated[bool, Query(description="every user's keys (administrators)")] = False,
) -> list[dict[str, Any]]:
    return services.credentials.list_keys(caller=user, all_owners=all)


@router.delete("/{key_id:path}", response_model=ApiKeyPublic)
def revoke(
    key_id: Annotated[str, Path(max_length=64, description="credential/<id> or <id>")],
    services: ServicesDep,
    user: UserDep,
) -> dict[str, Any]:
    """Revoke a key: it stops working on the next request. Revoking it again changes nothing."""
    return services.credentials.revoke_key(key_id, caller=user)
