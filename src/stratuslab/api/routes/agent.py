"""/agent: the node agent itself, fetched by the bootstrap of every node instance."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

router = APIRouter(prefix="/agent", tags=["agent"])
AGENT = Path(str(resources.files("stratuslab.deploy.agent") / "stratus_agent.py"))


@router.get("/stratus_agent.py")
def agent() -> FileResponse:
    return FileResponse(AGENT, media_type="text/x-python")
