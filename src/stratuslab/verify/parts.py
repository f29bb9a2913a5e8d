"""What the verifier is made of: the clone cache, the engine's services it drives, the outbox
it hands notifications to, each as the verifier needs it (``verify/verifier.py``)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.engine import Engine

from stratuslab.db.verify_models import WatchRecord
from stratuslab.deploy.control import RunControl
from stratuslab.deploy.modules import ModuleStore
from stratuslab.deploy.runs import RunService
from stratuslab.principal import Principal
from stratuslab.verify import runner, schedule
from stratuslab.verify.values import Outcome


class Mirror(schedule.History, runner.Tree, Protocol):
    def heads(self, branches: list[str]) -> dict[str, str | None]: ...

    def resolve(self, rev: str) -> str: ...


class Repositories(Protocol):
    def fetch(self, url: str, *, deploy_key: str | None = None) -> Mirror: ...

    def mirror(self, url: str) -> Mirror | None: ...


class Notices(Protocol):
    """The outbox (``verify/notify/outbox.py``)."""

    def queue_outcome(
        self, session: Any, watch: WatchRecord, outcome: Outcome, verification_id: int
    ) -> int: ...

    def queue_status(
        self,
        session: Any,
        watch: WatchRecord,
        sha: str,
        state: str,
        *,
        target_url: str,
        description: str,
    ) -> None: ...

    def deliver_due(self, limit: int = 50) -> int: ...


@dataclass
class Parts:
    engine: Engine
    repositories: Repositories
    modules: ModuleStore
    runs: RunService
    control: RunControl
    principal_of: Callable[[str], Principal | None]
    submit: Callable[..., Future[Any]]
    links_url: str
    outbox: Notices | None = None
