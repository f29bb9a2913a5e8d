"""The FastAPI application: services made at start-up, one handler for the project's errors."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from stratuslab import __version__
from stratuslab import services as composition
from stratuslab.api.limits import MAX_BODY, RequestLimits
from stratuslab.api.routes import (
    agent,
    apikeys,
    bakes,
    certificates,
    clouds,
    entry_point,
    event,
    groups,
    health,
    hooks,
    image_ops,
    images,
    instances,
    marketplace,
    modules,
    quotas,
    runs,
    session,
    slipstream,
    usage,
    users,
    volumes,
    watches,
    whoami,
)
from stratuslab.config import Settings
from stratuslab.errors import StratusError
from stratuslab.services import Services


def create_app(settings: Settings, *, services: Services | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        made = services or make_services(settings)
        app.state.services = made
        made.start()
        try:
            yield
        finally:
            made.close()

    app = FastAPI(title="StratusLab", version=__version__, lifespan=lifespan)
    # The routes nodes call most come first: a request is matched route by route.
    app.include_router(slipstream.router)
    app.include_router(runs.router)
    app.include_router(health.router)
    app.include_router(instances.router)
    app.include_router(images.router)
    app.include_router(image_ops.router)
    app.include_router(clouds.router)
    app.include_router(bakes.router)
    app.include_router(modules.router)
    app.include_router(agent.router)
    app.include_router(session.router)
    app.include_router(users.router)
    app.include_router(groups.router)
    app.include_router(apikeys.router)
    app.include_router(whoami.router)
    app.include_router(certificates.router)
    app.include_router(entry_point.router)
    app.include_router(event.router)
    app.include_router(quotas.router)
    app.include_router(usage.router)
    app.include_router(watches.router)
    app.include_router(hooks.router)
    app.include_router(marketplace.router)
    app.include_router(volumes.router)
    app.add_exception_handler(StratusError, _stratus_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_middleware(
        RequestLimits, max_body=MAX_BODY, streams=runs.streams_its_body, answer=error_response
    )
    return app


def make_services(settings: Settings) -> Services:
    return composition.build(settings, token=load_token(settings))


def load_token(settings: Settings) -> str:
    """The site token: from the settings, else the token file (made on first start, mode 0600)."""
    if settings.token:
        return settings.token
    path = settings.token_file
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


def error_body(exc: StratusError) -> dict[str, object]:
    return {"error": {"type": type(exc).__name__, "message": exc.message, "hint": exc.hint}}


def error_response(exc: StratusError) -> JSONResponse:
    return JSONResponse(error_body(exc), status_code=exc.http_status)


async def _stratus_error(_request: Request, exc: StratusError) -> JSONResponse:
    return error_response(exc)


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    body = {"error": {"type": "Invalid", "message": f"{where}: {first.get('msg')}", "hint": None}}
    return JSONResponse(body, status_code=422)
