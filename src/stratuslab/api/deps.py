"""What routes depend on: the server's services and who is making the request."""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from sqlalchemy.engine import Engine

from stratuslab.cloud.clouds import ConnectorPool
from stratuslab.cloud.instances import InstanceService
from stratuslab.config import Settings
from stratuslab.deploy.control import RunControl
from stratuslab.deploy.modules import ModuleStore
from stratuslab.deploy.orchestrator import Orchestrator, OrchestratorConfig
from stratuslab.deploy.params import ParameterStore
from stratuslab.deploy.runs import RunService
from stratuslab.deploy.scaling import Scaling
from stratuslab.errors import Unauthorized
from stratuslab.hub import Hub


@dataclass
class Services:
    """Everything the server holds for its lifetime."""

    settings: Settings
    engine: Engine
    token: str
    connectors: ConnectorPool
    hub: Hub = field(default_factory=Hub)
    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=64, thread_name_prefix="work")
    )
    _active: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.modules = ModuleStore(self.engine)
        self.control = RunControl(self.engine, self.hub, report_grace=self.settings.report_grace_s)
        self.params = ParameterStore(self.engine, self.hub, self.control)
        self.runs = RunService(
            self.engine, self.hub, modules=self.modules, reports=self.settings.reports_dir
        )
        self.orchestrator = Orchestrator(
            self.engine,
            runs=self.runs,
            control=self.control,
            instances_for=self.instances,
            submit=self.submit,
            config=OrchestratorConfig(
                agent_url=self.settings.agent_url, name_prefix=self.settings.instance_prefix
            ),
        )
        self.control.schedule = self.orchestrator.schedule
        self.scaling = Scaling(self.control)
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None

    def instances(self, owner: str) -> InstanceService:
        return InstanceService(
            self.engine,
            owner=owner,
            connectors=self.connectors,
            name_prefix=self.settings.instance_prefix,
        )

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Background work; the server does not exit for idleness while some is left."""
        with self._lock:
            self._active += 1
        future = self.executor.submit(fn, *args)
        future.add_done_callback(self._finished)
        return future

    def busy(self) -> bool:
        """Background work left (the orchestrator's jobs among it), or runs that need us."""
        with self._lock:
            if self._active > 0:
                return True
        return self.runs.working()

    def start(self, *, supervise_every: float = 1.0) -> None:
        """Start watching over runs (timeouts, dead nodes, work left by a previous server)."""

        def loop() -> None:
            while not self._stop.wait(supervise_every):
                try:
                    self.orchestrator.supervise()
                except Exception:  # the supervisor must outlive any one bad round
                    import logging

                    logging.getLogger(__name__).exception("supervision round failed")

        self.orchestrator.supervise()
        self._supervisor = threading.Thread(target=loop, name="supervisor", daemon=True)
        self._supervisor.start()

    def close(self) -> None:
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.connectors.close()

    def _finished(self, _future: Future[Any]) -> None:
        with self._lock:
            self._active -= 1


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def is_site_token(services: Services, authorization: str) -> bool:
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        token.encode(), services.token.encode()
    )


def bearer(authorization: str) -> str:
    scheme, _, token = authorization.partition(" ")
    return token if scheme.lower() == "bearer" else ""


def current_user(
    services: ServicesDep,
    authorization: Annotated[str, Header()] = "",
    x_stratus_user: Annotated[str, Header()] = "",
) -> str:
    """The user a request acts for. The site token proves the caller may speak for a user."""
    if not is_site_token(services, authorization):
        raise Unauthorized(
            "missing or wrong API token",
            hint=f"the local token is in {services.settings.token_file}; "
            "remote clients set STRATUS_TOKEN",
        )
    return x_stratus_user or services.settings.user


UserDep = Annotated[str, Depends(current_user)]


@dataclass(frozen=True)
class Caller:
    """Who calls a run's endpoints: a user (site token) or one of its node instances."""

    user: str | None = None
    node_instance: str | None = None


def run_caller(
    run_id: str,
    services: ServicesDep,
    authorization: Annotated[str, Header()] = "",
    x_stratus_user: Annotated[str, Header()] = "",
) -> Caller:
    if is_site_token(services, authorization):
        return Caller(user=x_stratus_user or services.settings.user)
    node = services.runs.node_for_token(run_id, bearer(authorization))
    if node is None:
        raise Unauthorized(f"this token is not valid for run {run_id}")
    return Caller(node_instance=node)


CallerDep = Annotated[Caller, Depends(run_caller)]


def resolved_run(run_id: str, services: ServicesDep) -> str:
    """A run id from the path, which users may shorten to a unique prefix."""
    return services.runs.resolve(run_id)


RunId = Annotated[str, Depends(resolved_run)]
