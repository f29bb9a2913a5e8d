"""/agent: the node agent zipapp, fetched by the bootstrap of every node instance.

Served without a token: it is the same for every node and holds no secret (the node's token
travels in its user-data). Its SHA-256 comes with it (a header, and a file beside it), but a
node does not take the server's word at download time: its bootstrap carries the digest it
must find.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response

from stratuslab.deploy import agent_bundle

router = APIRouter(prefix="/agent", tags=["agent"])
DIGEST_HEADER = "X-Stratus-Agent-SHA256"


@router.get(f"/{agent_bundle.NAME}")
def zipapp() -> Response:
    built = agent_bundle.bundle()
    headers = {DIGEST_HEADER: built.sha256, "ETag": f'"{built.sha256}"'}
    return Response(built.data, media_type="application/zip", headers=headers)


@router.get(f"/{agent_bundle.NAME}.sha256")
def digest() -> PlainTextResponse:
    """``sha256sum``'s line for the zipapp, so that ``sha256sum -c`` can check a copy."""
    return PlainTextResponse(agent_bundle.bundle().sha256_line)
