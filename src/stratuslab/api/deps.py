"""What routes depend on: the server's services and the user making the request."""

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
        default_factory=lambda: ThreadPoolExecutor(max_workers=32, thread_name_prefix="work")
    )
    _active: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Background work; the server does not exit for idleness while some is left."""
        with self._lock:
            self._active += 1
        future = self.executor.submit(fn, *args)
        future.add_done_callback(self._finished)
        return future

    def busy(self) -> bool:
        with self._lock:
            return self._active > 0

    def _finished(self, _future: Future[Any]) -> None:
        with self._lock:
            self._active -= 1

    def instances(self, owner: str) -> InstanceService:
        return InstanceService(
            self.engine,
            owner=owner,
            connectors=self.connectors,
            name_prefix=self.settings.instance_prefix,
        )

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.connectors.close()


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def current_user(
    services: ServicesDep,
    authorization: Annotated[str, Header()] = "",
    x_stratus_user: Annotated[str, Header()] = "",
) -> str:
    """The user a request acts for. The site token proves the caller may speak for a user."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.encode(), services.token.encode()
    ):
        raise Unauthorized(
            "missing or wrong API token",
            hint=f"the local token is in {services.settings.token_file}; "
            "remote clients set STRATUS_TOKEN",
        )
    return x_stratus_user or services.settings.user


UserDep = Annotated[str, Depends(current_user)]
