"""The CLI in-process with the credentials it chooses for itself (unlike the ``stratus`` fixture,
whose client always carries the site token): each server URL is served by the in-process
application through a transport that carries nothing but what the client put in the request
(no default headers, no cookie jar), and records what was sent."""

from __future__ import annotations

import io
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from stratuslab.api.client import Response
from stratuslab.cli.main import main
from stratuslab.cli.runtime import Runtime
from stratuslab.config import Settings
from tests.support import CliResult

REMOTE = "http://testserver"
PASSWORD = "correct horse"


@dataclass(frozen=True)
class Sent:
    method: str
    target: str
    headers: dict[str, str]

    def header(self, name: str) -> str | None:
        return {k.lower(): v for k, v in self.headers.items()}.get(name.lower())


@dataclass
class Server:
    """One server URL, answered by the application in-process."""

    app: FastAPI
    url: str
    sent: list[Sent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.client = TestClient(self.app, base_url=self.url)

    def __call__(
        self,
        method: str,
        target: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float,
    ) -> Response:
        self.sent.append(Sent(method, target, dict(headers)))
        answer = self.client.request(method, target, headers=dict(headers), content=body)
        self.client.cookies.clear()  # a cookie goes only if the CLI sends it
        lines = iter(answer.content.splitlines(keepends=True))
        return Response(
            answer.status_code, {k.lower(): v for k, v in answer.headers.items()}, lines
        )


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Cli:
    """`stratus ARGS...` as a user runs it, with ``settings`` (which tests change at will)."""

    def __init__(
        self,
        app: FastAPI,
        settings: Settings,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        self.app = app
        self.settings = settings
        self.capsys = capsys
        self.monkeypatch = monkeypatch
        self.servers: dict[str, Server] = {}

    def server(self, url: str) -> Server:
        return self.servers.setdefault(url, Server(self.app, url))

    def __call__(
        self, *args: str, stdin: str | None = None, tty: bool = False, **overrides: Any
    ) -> CliResult:
        """With ``tty``, stdin is a terminal (tests answer ``getpass`` themselves)."""
        runtime = Runtime(transports=self.server)
        runtime.__dict__["settings"] = (
            self.settings.with_overrides(**overrides) if overrides else self.settings
        )
        self.monkeypatch.setattr(sys, "stdin", _Terminal() if tty else io.StringIO(stdin or ""))
        code = main(list(args), runtime=runtime)
        captured = self.capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    def sent(self, url: str = REMOTE) -> list[Sent]:
        return self.server(url).sent
