"""What SlipStream's CIMI resources under /api share: their route class, errors and collections.

SlipStream's clients (``slipstream-api``'s ``Api``, which ``slipstream-client`` builds on) read
an error's ``status`` and ``message`` at the top of its JSON body, and list a collection with a
``PUT`` whose form body carries the CIMI query (``$first``, ``$filter``). :class:`CimiRoute`
gives every route of those resources what they expect: a body bounded far below the server's
16 MiB before a byte is parsed, and any error of the project (or of validation) in CIMI's
shape, keeping the project's own ``error`` object beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from stratuslab.api.limits import read_body
from stratuslab.errors import Invalid, StratusError

SLIPSTREAM_SCHEMA = "http://sixsq.com/slipstream/1/"
CIMI_SCHEMA = "http://schemas.dmtf.org/cimi/2/"
MAX_CIMI_BODY = 64 * 1024  # bytes: a login or a query is a few hundred
ADMIN_ONLY = {"owner": {"principal": "ADMIN", "type": "ROLE"}, "rules": []}


class CimiRoute(APIRoute):
    """A route of a CIMI resource: its body bounded, its errors in CIMI's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def cimi(request: Request) -> Response:
            try:
                await _read_bounded(request)
                return await handler(request)
            except StratusError as exc:
                return cimi_error(exc)
            except RequestValidationError as exc:
                return cimi_error(Invalid(_first_problem(exc)))
            except HTTPException as exc:  # FastAPI's own, for a body it could not decode
                if exc.status_code != 400:
                    raise
                return cimi_error(Invalid("the body is not JSON text in UTF-8"))

        return cimi


def cimi_error(exc: StratusError) -> JSONResponse:
    """The error as SlipStream's server answered it (``status``, ``message``), with the
    project's ``error`` object (type, message, hint) beside it."""
    body = {
        "status": exc.http_status,
        "message": exc.message if not exc.hint else f"{exc.message} ({exc.hint})",
        "error": {"type": type(exc).__name__, "message": exc.message, "hint": exc.hint},
    }
    return JSONResponse(body, status_code=exc.http_status)


def collection(
    *,
    id: str,
    name: str,
    key: str,
    members: Sequence[Mapping[str, Any]],
    operations: Sequence[Mapping[str, str]] = (),
    acl: Mapping[str, Any] = ADMIN_ONLY,
) -> dict[str, Any]:
    """A CIMI collection: ``count`` and the members under ``key`` (``sessions``), which is the
    name the cloud entry point gives the collection and the one the clients read back."""
    body: dict[str, Any] = {
        "id": id,
        "resourceURI": f"{SLIPSTREAM_SCHEMA}{name}Collection",
        "acl": dict(acl),
        "count": len(members),
        key: list(members),
    }
    if operations:
        body["operations"] = [dict(op) for op in operations]
    return body


def query_of(request: Request) -> dict[str, str]:
    """The CIMI query of a collection request: the query string, and for a ``PUT`` the form
    body that the clients send it in (``$first=1&$last=10``)."""
    query = dict(request.query_params)
    body: bytes = getattr(request, "_body", b"")
    if body:
        try:
            fields = parse_qs(body.decode("utf-8"), errors="strict", max_num_fields=50)
        except (UnicodeDecodeError, ValueError) as exc:
            raise Invalid(f"the query body cannot be read as a form: {exc}") from None
        query.update({name: values[-1] for name, values in fields.items()})
    return query


def base_uri(request: Request) -> str:
    """The API's own address, as SlipStream's ``baseURI`` gives it: ``http://host/api/``."""
    return f"{str(request.base_url).rstrip('/')}/api/"


async def _read_bounded(request: Request) -> None:
    """Read the body (once, kept where Starlette keeps it for the handler) and refuse it past
    :data:`MAX_CIMI_BODY` bytes without reading the rest."""
    request._body = await read_body(request, MAX_CIMI_BODY)  # what Request.body() returns


def _first_problem(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "invalid request"
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    return f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
