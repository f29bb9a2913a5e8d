"""Fixtures for continuous verification's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.verify.gitserver import GitServer


@pytest.fixture(scope="module")
def git_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitServer]:
    """A real git server on loopback (git daemon and smart HTTP), one per test module: each
    test makes its own repositories (``git_server.create()`` names them uniquely). Tests that
    use it start processes: mark them ``@pytest.mark.spawns``."""
    with GitServer(tmp_path_factory.mktemp("git-server")) as server:
        yield server
