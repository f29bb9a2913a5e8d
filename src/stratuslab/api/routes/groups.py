"""/api/groups: groups of users, managed by administrators; members see their own groups
(``accounts/users.py`` decides: another group is not found)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, status

from stratuslab.api.deps import ServicesDep, UserDep
from stratuslab.api.schemas.accounts import GroupCreate, GroupPublic, MemberAdd

router = APIRouter(prefix="/api/groups", tags=["groups"])
Name = Annotated[str, Path(max_length=200, description="a group name")]
Member = Annotated[str, Path(max_length=200, description="a user name")]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=GroupPublic)
def add(body: GroupCreate, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return services.accounts.add_group(body.name, caller=user, description=body.description)


@router.get("", response_model=list[GroupPublic])
def list_groups(services: ServicesDep, user: UserDep) -> list[dict[str, Any]]:
    """Every group to an administrator; to anyone else, the groups they belong to."""
    return services.accounts.list_groups(caller=user)


@router.get("/{name}", response_model=GroupPublic)
def show(name: Name, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return services.accounts.show_group(name, caller=user)


@router.post("/{name}/members", response_model=GroupPublic)
def add_member(name: Name, body: MemberAdd, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    """Add a user to the group (nothing changes if they are a member already)."""
    return services.accounts.add_member(name, body.user, caller=user)


@router.delete("/{name}/members/{member}", response_model=GroupPublic)
def remove_member(
    name: Name, member: Member, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    return services.accounts.remove_member(name, member, caller=user)
