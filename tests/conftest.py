"""Fixtures shared by every test.

Unit tests run against the fake connector and a SQLite store in a temporary directory. Tests
that need the real cloud are marked ``lxd`` and use the LXD daemon, bridge, pool, profile and
debian-12 image that ``make setup`` prepares. A test that spawns a process must say so with
``@pytest.mark.spawns`` (or ``lxd``); otherwise it fails.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from stratuslab import config
from stratuslab.api.app import create_app
from stratuslab.cloud import clouds, nested_host
from stratuslab.cloud.clouds import ConnectorPool
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.cloud.connectors.lxd_remote import enroll
from stratuslab.cloud.instances import InstanceService
from stratuslab.cloud.nested_host import NestedHost
from stratuslab.config import Settings
from stratuslab.db.session import dispose, engine_for
from tests.support import CliResult, cli_on, environment


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "spawns: the test starts a subprocess on purpose")
    config.addinivalue_line(
        "markers", "postgres: needs the PostgreSQL named by STRATUS_TEST_POSTGRES_URL (CI has it)"
    )


@pytest.fixture(autouse=True)
def _no_unannounced_processes(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    if request.node.get_closest_marker("spawns") or request.node.get_closest_marker("lxd"):
        return

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(
            f"this test started a process ({args[:1]}): mark it @pytest.mark.spawns"
        )

    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(os, "execv", refuse)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[str]:
    """The store's URL: a SQLite file here; tests/api runs on PostgreSQL as well. Its engine's
    pooled connections are closed after the test (three descriptors each, test after test)."""
    url = f"sqlite:///{tmp_path / 'data' / 'stratus.db'}"
    yield url
    dispose(url)


@pytest.fixture
def settings(tmp_path: Path, store: str) -> Settings:
    return config.load(environment(tmp_path, STRATUS_DATABASE_URL=store))


@pytest.fixture
def engine(settings: Settings) -> Engine:
    return engine_for(settings.database_url)


@pytest.fixture
def fake_namespace() -> Iterator[str]:
    namespace = f"test-{secrets.token_hex(4)}"
    yield namespace
    FakeConnector.ex_reset(namespace)


@pytest.fixture
def fake(engine: Engine, fake_namespace: str) -> FakeConnector:
    """The fake backend, recorded in the store as the cloud 'local'."""
    clouds.record(engine, name="local", connector="fake", options={"namespace": fake_namespace})
    return FakeConnector(namespace=fake_namespace)


@pytest.fixture
def instances(engine: Engine, fake: FakeConnector) -> Iterator[InstanceService]:
    pool = ConnectorPool(engine)
    yield InstanceService(engine, owner="alice", connectors=pool, name_prefix="test")
    pool.close()


@pytest.fixture
def api(settings: Settings, fake: FakeConnector) -> Iterator[TestClient]:
    """The API application in-process, on the fake cloud, with the site token set."""
    app = create_app(settings.with_overrides(token="test-token"))
    with TestClient(app, headers={"Authorization": "Bearer test-token"}) as client:
        yield client


@pytest.fixture
def stratus(
    api: TestClient, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> Callable[..., CliResult]:
    """Run the `stratus` CLI in-process against the in-process API."""
    return cli_on(api, settings, capsys)


@pytest.fixture
def deploy_api(settings: Settings, fake: FakeConnector) -> Iterator[TestClient]:
    """The API with the deployment engine on the fake cloud; aborted runs wait 1 s for reports."""
    app = create_app(settings.with_overrides(token="test-token", report_grace_s=1))
    with TestClient(app, headers={"Authorization": "Bearer test-token"}) as client:
        yield client


@pytest.fixture(scope="session")
def nested_lxd() -> Iterator[NestedHost]:
    """The second LXD host on this machine (``cloud/nested_host.py``), for ``lxd`` tests: made
    once per session (seconds, once its prepared image is cached) and removed at the end."""
    host = nested_host.ensure()
    yield host
    nested_host.remove(host.name)


@pytest.fixture(scope="session")
def remote_lxd(nested_lxd: NestedHost) -> dict[str, Any]:
    """The options of connector "lxd" for the nested host, enrolled once with its trust
    password (as ``stratus cloud add NAME --lxd URL --trust-password-stdin`` records them)."""
    return enroll(
        nested_lxd.endpoint, password=nested_lxd.trust_password, profile=nested_lxd.profile
    )
