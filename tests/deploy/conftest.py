"""Fixtures for the deployment engine's end-to-end tests: the real server on the localproc
cloud (tests/deploy/realserver.py), one per test module, so that its start is paid once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.deploy.realserver import Api, RealServer


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    server = RealServer(tmp_path_factory.mktemp("real")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def real_api(real_server: RealServer) -> Iterator[Api]:
    """The real server's JSON API, with the site token."""
    api = real_server.api()
    try:
        yield api
    finally:
        api.close()
