"""A world for the tests of watches: the application on one store, alice, bob and ada (an
administrator) with API keys, the site token's "operator", and an empty repository on the real
git server of ``tests/verify/gitserver.py``.

The server's verifier runs as in production unless ``verifier=False``: it then stops at once,
so that what a route records (a hook's wake, a branch's verdict set by the test) stays as the
route or the test left it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from stratuslab import config
from stratuslab.api.app import create_app
from stratuslab.db.session import session_scope
from stratuslab.db.verify_models import WatchBranchRecord, WatchRecord
from stratuslab.services import Services
from tests.api.owners import accounts, client
from tests.api.stores import database
from tests.deploy.support import wait_until
from tests.support import environment
from tests.verify.gitserver import GitServer, Repo

MIN_EVERY_S = 30  # the site's shortest polling interval, in these worlds


@dataclass
class World:
    services: Services
    site: TestClient  # the site token: the host-local administrator ("operator")
    alice: TestClient
    bob: TestClient
    ada: TestClient  # an administrator's account
    anybody: TestClient  # no credentials at all: what a forge or a feed reader has
    repo: Repo  # an empty repository on the git server

    @property
    def links_url(self) -> str:
        return self.services.settings.links_url


@contextmanager
def world_on(
    kind: str, root: Path, git_server: GitServer, *, verifier: bool = True
) -> Iterator[World]:
    with database(kind, root) as url:
        settings = config.load(
            environment(root, STRATUS_DATABASE_URL=url, STRATUS_USER="operator")
        ).with_overrides(token="test-token", watch_min_every_s=MIN_EVERY_S)
        app = create_app(settings)
        with client(app, "test-token") as site:
            services: Services = app.state.services
            if not verifier:
                services.verifier.stop()
            keys = accounts(services)
            yield World(
                services=services,
                site=site,
                alice=client(app, keys["alice"]["token"]),
                bob=client(app, keys["bob"]["token"]),
                ada=client(app, keys["ada"]["token"]),
                anybody=TestClient(app),
                repo=git_server.create(),
            )


def add(world: World, http: TestClient, name: str, **extra: Any) -> dict[str, Any]:
    """A watch of the world's repository, polled hourly, by whoever ``http`` is."""
    body = {"repository": world.repo.git_url, "module": "apps/demo", "every_s": 3600}
    answer = http.post("/api/watches", json=body | {"name": name} | extra)
    assert answer.status_code == 201, answer.text
    found: dict[str, Any] = answer.json()
    return found


def record(world: World, watch_id: str) -> WatchRecord | None:
    """The watch as the store holds it (detached)."""
    with session_scope(world.services.engine) as session:
        row = session.get(WatchRecord, watch_id)
        if row is not None:
            session.expunge(row)
        return row


def polled(world: World, watch_id: str) -> WatchRecord:
    """The watch's record once the verifier's poll has ended (it polls a new watch at once;
    later, after ``every_s`` or a wake): fetched, each branch's head taken, or failed."""

    def done() -> WatchRecord | None:
        with session_scope(world.services.engine) as session:
            row = session.get(WatchRecord, watch_id)
            if row is None or row.polled_at is None or row.wake:
                return None
            seen = session.scalars(
                select(WatchBranchRecord.branch).where(WatchBranchRecord.watch_id == watch_id)
            ).all()
            if row.poll_error is None and len(seen) < len(row.branches):
                return None  # fetching still: the branches are taken once it is done
            session.expunge(row)
            return row

    found: WatchRecord = wait_until(done, what="the verifier's poll of a watch")
    return found


def error(answer: Any) -> str:
    """The message of an error answer."""
    message: str = answer.json()["error"]["message"]
    return message
