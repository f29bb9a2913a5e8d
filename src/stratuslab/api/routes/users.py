"""/api/users: accounts, managed by administrators; a user reads their own and changes its
password. Who may do what is decided by the accounts service (``accounts/users.py``): anyone
else's account is not found, and managing accounts is an administrator's (403)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, status

from stratuslab.api.deps import ServicesDep, UserDep
from stratuslab.api.schemas.accounts import PasswordChange, UserCreate, UserPublic

router = APIRouter(prefix="/api/users", tags=["users"])
Name = Annotated[str, Path(max_length=200, description="a user name")]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=UserPublic)
def add(body: UserCreate, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    """Add a user (administrators only); without a password they cannot log in until one is
    set, but an administrator may act as them."""
    return services.accounts.add_user(
        body.name, caller=user, email=body.email, admin=body.admin, password=body.password
    )


@router.get("", response_model=list[UserPublic])
def list_users(services: ServicesDep, user: UserDep) -> list[dict[str, Any]]:
    return services.accounts.list_users(caller=user)


@router.get("/{name}", response_model=UserPublic)
def show(name: Name, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return services.accounts.show_user(name, caller=user)


@router.post("/{name}/disable", response_model=UserPublic)
def disable(name: Name, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    """Disable an account: its password, keys and sessions stop working at once, and its
    sessions stay ended when it is enabled again."""
    shown = services.accounts.set_disabled(name, True, caller=user)
    services.credentials.close_sessions_of(name)
    return shown


@router.post("/{name}/enable", response_model=UserPublic)
def enable(name: Name, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return services.accounts.set_disabled(name, False, caller=user)


@router.put("/{name}/password", response_model=UserPublic)
def set_password(
    name: Name, body: PasswordChange, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    """A user changes their own password; an administrator anyone's."""
    services.accounts.set_password(name, body.password, caller=user)
    services.authn.forget_passwords()  # a Basic login remembered with the old one ends
    return services.accounts.show_user(name, caller=user)
