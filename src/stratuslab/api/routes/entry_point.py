"""/api/cloud-entry-point and /api/session-template: where SlipStream's clients start.

``Api`` (slipstream-api) reads the cloud entry point before any collection: each collection is
a key of the entry point whose value is ``{"href": <collection's path under /api/>}``, and the
key is the collection's name in its own listings (``sessions``). Only collections this server
serves are listed, so that a client looking up another gets SlipStream's own ``KeyError``
rather than a 404 later. The session templates are the two ways to log in
(``ssclj/resources/session_template_internal.clj`` and ``session_template_api_key.clj``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from stratuslab import __version__
from stratuslab.api.routes.cimi import (
    CIMI_SCHEMA,
    SLIPSTREAM_SCHEMA,
    CimiRoute,
    base_uri,
    collection,
)
from stratuslab.errors import NotFound

router = APIRouter(prefix="/api", tags=["session"], route_class=CimiRoute)
# Who may read: anybody, logged in or not (a client reads these before it logs in).
ANYBODY = {
    "owner": {"principal": "ADMIN", "type": "ROLE"},
    "rules": [{"principal": "ANON", "type": "ROLE", "right": "VIEW"}],
}
COLLECTIONS = {  # name in the entry point and in the listing -> path under /api/
    "sessions": "session",
    "sessionTemplates": "session-template",
    "events": "event",
}
TEMPLATES: dict[str, dict[str, Any]] = {
    "internal": {
        "name": "Internal",
        "description": "Internal Authentication via Username/Password",
        "group": "Login with Username/Password",
        "username": "username",
        "password": "password",
    },
    "api-key": {
        "name": "API Key",
        "description": "Authentication with API Key and Secret",
        "group": "Login with API Key and Secret",
        "key": "key",
        "secret": "secret",
    },
}


@router.get("/cloud-entry-point")
def cloud_entry_point(request: Request) -> dict[str, Any]:
    return {
        "id": "cloud-entry-point",
        "resourceURI": f"{CIMI_SCHEMA}CloudEntryPoint",
        "baseURI": base_uri(request),
        "acl": ANYBODY,
        "version": __version__,
        **{name: {"href": href} for name, href in COLLECTIONS.items()},
    }


@router.get("/session-template")
def session_templates() -> dict[str, Any]:
    return collection(
        id="session-template",
        name="SessionTemplate",
        key="sessionTemplates",
        members=[_template(method) for method in TEMPLATES],
        acl=ANYBODY,
    )


@router.put("/session-template")
def query_session_templates() -> dict[str, Any]:
    """CIMI's query of the collection (``Api.cimi_search``): every template."""
    return session_templates()


@router.get("/session-template/{method}")
def session_template(method: str) -> dict[str, Any]:
    if method not in TEMPLATES:
        raise NotFound(
            f"no session template {method[:64]!r}", hint=f"there are: {', '.join(TEMPLATES)}"
        )
    return _template(method)


def _template(method: str) -> dict[str, Any]:
    template_id = f"session-template/{method}"
    return {
        "id": template_id,
        "resourceURI": f"{SLIPSTREAM_SCHEMA}SessionTemplate",
        "method": method,
        "instance": method,
        **TEMPLATES[method],
        "acl": ANYBODY,
        "operations": [],
    }
