"""What routes depend on: the server's services and who is making the request.

Routes say who is calling (a :class:`~stratuslab.principal.Principal`); the services decide
what that caller may see and do.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request

from stratuslab.errors import Invalid, Unauthorized
from stratuslab.principal import Principal
from stratuslab.services import Services as Services  # routes name it from here

MAX_USER = 64  # characters of a user name, as the store keeps owners


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def is_site_token(services: Services, authorization: str) -> bool:
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        token.encode(), services.token.encode()
    )


def bearer(authorization: str) -> str:
    scheme, _, token = authorization.partition(" ")
    return token if scheme.lower() == "bearer" else ""


def current_user(
    services: ServicesDep,
    authorization: Annotated[str, Header()] = "",
    x_stratus_user: Annotated[str, Header()] = "",
) -> str:
    """The user a request acts for. The site token proves the caller may speak for a user."""
    if not is_site_token(services, authorization):
        raise Unauthorized(
            "missing or wrong API token",
            hint=f"the local token is in {services.settings.token_file}; "
            "remote clients set STRATUS_TOKEN",
        )
    return _user(services, x_stratus_user)


def _user(services: Services, name: str) -> str:
    """The user named by X-Stratus-User (the site's user when none), within what the store
    keeps of a name."""
    if len(name) > MAX_USER:
        raise Invalid(f"header x-stratus-user: a user name is at most {MAX_USER} characters")
    return name or services.settings.user


UserDep = Annotated[str, Depends(current_user)]


def run_caller(
    run_id: str,
    services: ServicesDep,
    authorization: Annotated[str, Header()] = "",
    x_stratus_user: Annotated[str, Header()] = "",
) -> Principal:
    """Who calls a run's endpoints: a user (site token) or one of its node instances."""
    if is_site_token(services, authorization):
        return Principal.for_user(_user(services, x_stratus_user))
    node = services.tokens.principal(run_id, bearer(authorization))
    if node is None:
        raise Unauthorized(f"this token is not valid for run {run_id[:40]}")
    return node


CallerDep = Annotated[Principal, Depends(run_caller)]


def resolved_run(run_id: str, services: ServicesDep) -> str:
    """A run id from the path, which users may shorten to a unique prefix."""
    return services.runs.resolve(run_id)


RunId = Annotated[str, Depends(resolved_run)]
