"""Helpers for tests (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from stratuslab.api.client import ApiClient, Response
from stratuslab.cli.main import main
from stratuslab.cli.runtime import Runtime
from stratuslab.config import Settings


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str


def environment(root: Path, **extra: str) -> dict[str, str]:
    """The STRATUS_* environment of an isolated installation under ``root``."""
    return {
        "HOME": str(root),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "STRATUS_CONFIG": str(root / "config.toml"),
        "STRATUS_DATA_DIR": str(root / "data"),
        "STRATUS_CACHE_DIR": str(root / "cache"),
        "STRATUS_USER": "alice",
        # Tests' git servers and receivers are on loopback: users may name them here.
        "STRATUS_WATCH_PRIVATE_ADDRESSES": "true",
        **extra,
    }


class InProcessTransport:
    """Hands the API client's requests to the application in-process (through Starlette's
    test client), so CLI tests exercise the real routes without a socket."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def __call__(
        self,
        method: str,
        target: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float,
    ) -> Response:
        answer = self.client.request(method, target, headers=dict(headers), content=body)
        lines = answer.content.splitlines(keepends=True)
        return Response(
            answer.status_code, {k.lower(): v for k, v in answer.headers.items()}, iter(lines)
        )


def cli_on(
    api: TestClient,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    *,
    user: str = "alice",
) -> Callable[..., CliResult]:
    """`stratus ARGS...` in-process, talking to ``api`` in-process, as ``user`` (the site
    token acting as them)."""

    def run(*args: str) -> CliResult:
        runtime = Runtime()
        runtime.__dict__["settings"] = settings
        client = ApiClient(
            "http://testserver", token="test-token", user=user, transport=InProcessTransport(api)
        )
        runtime.__dict__["client"] = client
        code = main(list(args), runtime=runtime)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def set_cloud(engine: Engine, name: str, **values: object) -> None:
    """Change a recorded cloud's row (priority, enabled, max_instances, note) as an
    administrator's `stratus cloud set` would."""
    from stratuslab.db.models import CloudRecord
    from stratuslab.db.session import session_scope

    with session_scope(engine) as session:
        row = session.get(CloudRecord, name)
        assert row is not None, name
        for key, value in values.items():
            setattr(row, key, value)


def as_json(cli: Callable[..., CliResult], *args: str) -> Any:
    """What ``cli ARGS... -o json`` prints, once it succeeded."""
    result = cli(*args, "-o", "json")
    assert result.code == 0, result.err
    return json.loads(result.out)


def wait_until(
    condition: Callable[[], Any],
    timeout: float = 15.0,
    what: str = "condition",
    interval: float = 0.05,
) -> Any:
    """The first truthy value ``condition()`` returns, asking every ``interval`` seconds;
    fails the test naming ``what`` once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
