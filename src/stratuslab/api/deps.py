"""What routes depend on: the server's services and who is making the request.

Routes say who is calling (a :class:`~stratuslab.principal.Principal`, made by the accounts'
authentication from the request's credentials); the services decide what that caller may see
and do.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.concurrency import run_in_threadpool

from stratuslab.accounts import COOKIE
from stratuslab.accounts.authn import Presented
from stratuslab.api import tls
from stratuslab.errors import Unauthorized
from stratuslab.principal import Principal
from stratuslab.services import Services as Services  # routes name it from here

COOKIE_TOKEN = "token="  # noqa: S105 - not a secret: the prefix of SlipStream's cookie value


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def session_cookie(request: Request) -> str:
    """The session token a request's SlipStream cookie carries. SlipStream's server set the
    cookie's value as ``token=<token>`` and its clients send it back as they got it; a bare
    token is taken too."""
    return request.cookies.get(COOKIE, "")[:512].removeprefix(COOKIE_TOKEN)


def presented(
    request: Request,
    authorization: Annotated[str, Header(max_length=4096)] = "",
    x_stratus_user: Annotated[str, Header()] = "",
) -> Presented:
    return Presented(
        authorization=authorization,
        cookie=session_cookie(request),
        act_as=x_stratus_user,
        peer_certificate=tls.peer_certificate(request.scope),
    )


def presented_by(request: Request) -> Presented:
    """:func:`presented`, read by hand (for the routes nodes call all the time)."""
    headers = request.headers
    return Presented(
        authorization=headers.get("authorization", "")[:4096],
        cookie=session_cookie(request),
        act_as=headers.get("x-stratus-user", ""),
        peer_certificate=tls.peer_certificate(request.scope),
    )


PresentedDep = Annotated[Presented, Depends(presented)]


def bearer(authorization: str) -> str:
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def current_user(services: ServicesDep, credentials: PresentedDep) -> Principal:
    """The user a request acts for; 401 without credentials a user has."""
    found = await run_in_threadpool(services.authn.user, credentials)
    if found is None:
        raise _login_first(services)
    return found


UserDep = Annotated[Principal, Depends(current_user)]


async def run_caller(run_id: str, services: ServicesDep, credentials: PresentedDep) -> Principal:
    """Who calls a run's endpoints: one of the run's node instances (its token), or a user."""
    token = bearer(credentials.authorization)
    if token and not credentials.act_as and (site := services.authn.site_admin(token)):
        return site
    if token and not credentials.act_as and services.authn.may_be_node_token(token):
        # Thousands of node instances call at once: their token is one indexed read, made
        # here rather than after a hop to a worker thread.
        node = services.tokens.principal(run_id, token)
        if node is not None:
            return node
        raise Unauthorized(f"this token is not valid for run {run_id[:40]}")
    found = await run_in_threadpool(services.authn.user, credentials)
    if found is None:
        raise _login_first(services)
    return found


CallerDep = Annotated[Principal, Depends(run_caller)]


def _login_first(services: Services) -> Unauthorized:
    return Unauthorized(
        "log in first: no credentials, or none this server knows",
        hint="`stratus login`, an API key (Authorization: Bearer), or on the server's host "
        f"the site token in {services.settings.token_file}",
    )


async def resolved_run(run_id: str, services: ServicesDep, user: UserDep) -> str:
    """A run id from the path, which users may shorten to a unique prefix of their own runs."""
    return await run_in_threadpool(lambda: services.runs.resolve(run_id, caller=user))


RunId = Annotated[str, Depends(resolved_run)]
