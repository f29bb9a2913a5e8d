"""/api/modules: push modules (each push a new immutable version) and read them back;
/api/module-rights: who owns a module path and who may read, push and run it.

The rights have a resource of their own rather than ``/api/modules/{path}/rights``, which
would also be the address of a module named ``rights``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from stratuslab.api.deps import ServicesDep, UserDep
from stratuslab.api.schemas.modules import ModuleRightsChange
from stratuslab.api.schemas.runs import ModulePush
from stratuslab.deploy.model import ModuleText
from stratuslab.deploy.modules import split_address

router = APIRouter(tags=["modules"])


@router.post("/api/modules", status_code=status.HTTP_201_CREATED)
def push(body: ModulePush, services: ServicesDep, user: UserDep) -> list[dict[str, Any]]:
    texts = [ModuleText(path=m.path, file=m.file, text=m.text) for m in body.modules]
    return [
        m.summary()
        for m in services.modules.push(texts, caller=user, only_changed=body.only_changed)
    ]


@router.get("/api/modules")
def list_modules(services: ServicesDep, user: UserDep) -> list[dict[str, Any]]:
    """The modules the caller may read, at their newest version."""
    return services.modules.list_modules(caller=user)


@router.get("/api/modules/{address:path}")
def show(address: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    """``path`` (the newest version) or ``path/N``, with its text, every version's number, and
    its owner, group and rights."""
    path, version = split_address(address)
    stored = services.modules.get(path, version, caller=user)
    authz = services.modules.rights.show(stored.path, caller=user)
    return (
        stored.summary()
        | {
            "text": stored.text,
            "versions": [m.version for m in services.modules.versions(stored.path, caller=user)],
        }
        | {key: authz[key] for key in ("group", "rights", "allowed", "projects")}
    )


@router.get("/api/module-rights/{path:path}")
def show_rights(path: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    """Owner, group and rights of a module path or project, and what the caller may do."""
    return services.modules.rights.show(path, caller=user)


@router.put("/api/module-rights/{path:path}")
def change_rights(
    path: str, body: ModuleRightsChange, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    """Change the group and rights of a path (its owner, a project owner above it, or an
    administrator); a path nobody holds is claimed as the caller's project."""
    changes: dict[str, Any] = body.model_dump(exclude_unset=True)
    return services.modules.rights.change(path, caller=user, **changes)
