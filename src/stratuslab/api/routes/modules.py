"""/api/modules: push modules (each push a new immutable version) and read them back."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from stratuslab.api.deps import ServicesDep, UserDep
from stratuslab.api.schemas.runs import ModulePush
from stratuslab.deploy.model import ModuleText
from stratuslab.deploy.modules import split_address

router = APIRouter(prefix="/api/modules", tags=["modules"])


@router.post("", status_code=status.HTTP_201_CREATED)
def push(body: ModulePush, services: ServicesDep, user: UserDep) -> list[dict[str, Any]]:
    texts = [ModuleText(path=m.path, file=m.file, text=m.text) for m in body.modules]
    return [
        m.summary()
        for m in services.modules.push(texts, owner=user.user or "", only_changed=body.only_changed)
    ]


@router.get("")
def list_modules(services: ServicesDep, user: UserDep) -> list[dict[str, Any]]:
    return services.modules.list_modules()


@router.get("/{address:path}")
def show(address: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    """``path`` (the newest version) or ``path/N``, with its text and every version's number."""
    path, version = split_address(address)
    stored = services.modules.get(path, version)
    return stored.summary() | {
        "text": stored.text,
        "versions": [m.version for m in services.modules.versions(stored.path)],
    }
