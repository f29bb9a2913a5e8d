"""What reaches a watch from outside: forges' push hooks, its badges and its feeds.

These are addressed by the watch's id, 128 random bits that its owner gives out (to the forge,
in a README's badge, to a feed reader), and they carry no user credentials: a hook proves itself
by the watch's secret (``verify/hooks.py``), and a badge or a feed shows only the verdicts.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response, status
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from stratuslab.api.deps import ServicesDep
from stratuslab.api.limits import read_body
from stratuslab.errors import NotFound
from stratuslab.services import Services
from stratuslab.verify import badge, feed, hooks

router = APIRouter(tags=["watches"])

WatchId = Annotated[str, Path(min_length=32, max_length=32, pattern="^[0-9a-f]{32}$")]


@router.post("/api/hooks/{watch_id}", status_code=status.HTTP_202_ACCEPTED)
async def push_hook(watch_id: WatchId, request: Request, services: ServicesDep) -> dict[str, Any]:
    """A forge's push event (GitHub, GitLab, Gitea, Forgejo), signed with the watch's secret:
    the watch polls at once. Other events (a ping), pushes to other branches and pushes to a
    paused watch are accepted and change nothing."""
    body = await read_body(request, hooks.MAX_BODY)
    watch = await run_in_threadpool(services.watches.wake_by_id, watch_id)
    if watch is None:
        raise NotFound("no such watch")
    push = hooks.parse(request.headers, body, watch.secret)
    if push is None:
        return {"accepted": False, "why": "not a push event"}
    if watch.paused:  # resuming polls at once: what was pushed meanwhile is not lost
        return {"accepted": False, "why": "the watch is paused"}
    if push.branch is None or push.branch not in watch.branches:
        return {"accepted": False, "why": "not a watched branch"}
    await run_in_threadpool(services.watches.mark_woken, watch_id)
    return {"accepted": True, "forge": push.forge, "branch": push.branch, "after": push.after}


def _as(media_type: str, what: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI description of an answer that is not JSON."""
    return {200: {"description": what, "content": {media_type: {}}}}


@router.get(
    "/api/badges/{watch_id}/{branch:path}.svg",
    response_class=Response,
    responses=_as("image/svg+xml", "an SVG badge"),
)
def branch_badge(watch_id: WatchId, branch: str, services: ServicesDep) -> Response:
    """The branch's verdict as a badge, for a README."""
    label, verdict, running = services.watch_views.badge(watch_id, branch)
    svg = badge.svg(label, badge.status_of(verdict, running))
    return Response(
        svg, media_type="image/svg+xml", headers={"Cache-Control": "no-cache, max-age=0"}
    )


@router.get(
    "/api/feeds/{watch_id}.atom",
    response_class=Response,
    responses=_as("application/atom+xml", "an Atom 1.0 feed"),
)
def atom_feed(watch_id: WatchId, services: ServicesDep) -> Response:
    """The watch's verdicts, newest first, as an Atom feed."""
    title, entries, at = _feed(watch_id, services)
    feed_id = feed.tag_uri(services.settings.links_url, f"watch/{watch_id}")
    data = feed.atom(title=title, feed_id=feed_id, self_link=f"{at}.atom", entries=entries)
    return Response(data, media_type="application/atom+xml")


@router.get(
    "/api/feeds/{watch_id}.json",
    response_class=Response,
    responses=_as("application/feed+json", "a JSON Feed 1.1"),
)
def json_feed(watch_id: WatchId, services: ServicesDep) -> Response:
    """The same, as a JSON Feed (``application/feed+json``, as jsonfeed.org registers it)."""
    title, entries, at = _feed(watch_id, services)
    document = feed.json_feed(
        title=title, home=f"{at}.atom", feed_url=f"{at}.json", entries=entries
    )
    return JSONResponse(document, media_type="application/feed+json")


def _feed(watch_id: str, services: Services) -> tuple[str, list[feed.Entry], str]:
    """The feed's title and entries, and where its two forms are (without the extension)."""
    title, entries = services.watch_views.feed(watch_id, services.settings.links_url)
    return title, entries, f"{services.settings.links_url}/api/feeds/{watch_id}"
