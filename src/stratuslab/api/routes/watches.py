"""/api/watches: repositories the server verifies, commit by commit, for their owners."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, status
from starlette.concurrency import run_in_threadpool

from stratuslab.api.deps import Services, ServicesDep, UserDep
from stratuslab.api.schemas.watches import WatchCreate, WatchRun

router = APIRouter(prefix="/api/watches", tags=["watches"])

Name = Annotated[str, Path(max_length=64, description="the watch's name")]
Owner = Annotated[
    str | None, Query(max_length=64, description="whose watch (administrators name another's)")
]


def _ref(name: str, owner: str | None) -> str:
    return f"{owner}/{name}" if owner else name


def _linked(services: Services, watch: dict[str, Any]) -> dict[str, Any]:
    """``watch`` with the URL its forge's push hook is given, as people reach the server."""
    return watch | {"hook_url": f"{services.settings.links_url}/api/hooks/{watch['id']}"}


@router.post("", status_code=status.HTTP_201_CREATED)
def add(body: WatchCreate, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    """Watch a repository; the answer holds the secret the forge's push hook is set up with
    (``POST <hook_url>``), shown this once."""
    return _linked(services, services.watches.add(body.spec(), caller=user))


@router.get("")
def list_watches(services: ServicesDep, user: UserDep, owner: Owner = None) -> list[dict[str, Any]]:
    """The caller's watches (every user's, for an administrator, or ``owner``'s), each
    branch's state."""
    return services.watches.list_watches(caller=user, owner=owner)


@router.get("/{name}")
def show(name: Name, services: ServicesDep, user: UserDep, owner: Owner = None) -> dict[str, Any]:
    return _linked(services, services.watches.show(_ref(name, owner), caller=user))


@router.get("/{name}/history")
def history(
    name: Name,
    services: ServicesDep,
    user: UserDep,
    owner: Owner = None,
    branch: Annotated[str | None, Query(max_length=255)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """Every verified (or queued, held, skipped) commit, newest first."""
    return services.watches.history(_ref(name, owner), caller=user, branch=branch, limit=limit)


@router.post("/{name}/pause")
def pause(name: Name, services: ServicesDep, user: UserDep, owner: Owner = None) -> dict[str, Any]:
    return services.watches.set_paused(_ref(name, owner), True, caller=user)


@router.post("/{name}/resume")
def resume(name: Name, services: ServicesDep, user: UserDep, owner: Owner = None) -> dict[str, Any]:
    return services.watches.set_paused(_ref(name, owner), False, caller=user)


@router.post("/{name}/notify", status_code=status.HTTP_202_ACCEPTED)
def notify(name: Name, services: ServicesDep, user: UserDep, owner: Owner = None) -> dict[str, Any]:
    """Poll the repository at once (what a post-receive hook calls)."""
    return services.watches.wake(_ref(name, owner), caller=user)


@router.post("/{name}/run", status_code=status.HTTP_202_ACCEPTED)
async def run(
    name: Name, body: WatchRun, services: ServicesDep, user: UserDep, owner: Owner = None
) -> dict[str, Any]:
    """Verify one commit now (a branch's head by default); it is queued first."""
    watch = await run_in_threadpool(services.watches.record, _ref(name, owner), caller=user)
    return await run_in_threadpool(services.verifier.ask, watch, body.commit, body.branch)


@router.delete("/{name}")
def remove(name: Name, services: ServicesDep, user: UserDep, owner: Owner = None) -> dict[str, Any]:
    """Remove the watch and its history; a run under way is cancelled first."""
    return services.watches.remove(_ref(name, owner), caller=user)
