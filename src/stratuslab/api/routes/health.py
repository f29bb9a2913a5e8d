"""/health: is the server up, and which one is it."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter

from stratuslab import __version__

router = APIRouter(tags=["health"])


@router.get("/health")
def health() -> dict[str, Any]:
    return {"status": "ok", "version": __version__, "pid": os.getpid()}
