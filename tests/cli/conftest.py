"""Fixtures of the CLI's tests beyond the shared ones."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from stratuslab.config import Settings
from stratuslab.principal import SERVER
from tests.support import CliResult, cli_on
from tests.verify.conftest import git_server  # noqa: F401  (a real git server, for watches)


@pytest.fixture
def bob(
    api: TestClient, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> Callable[..., CliResult]:
    """`stratus` as bob, a user who is no administrator (the site token acting as him)."""
    api.app.state.services.accounts.add_user("bob", caller=SERVER)  # type: ignore[attr-defined]
    return cli_on(api, settings, capsys, user="bob")
