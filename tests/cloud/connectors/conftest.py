"""The ``connector`` fixture of the connector suites: one per test, of every kind (the fake and
localproc always, LXD where the ``lxd`` marker runs), whose instances are destroyed when the
test ends, even when it failed. A fixture of a wider scope makes its own with
``support.open_connector`` and ``support.destroying`` (test_contract_volumes.py shares its
containers within the module).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stratuslab.cloud.base import Connector
from tests.cloud.connectors.support import destroying, open_connector


@pytest.fixture(
    params=[
        "fake",
        "fake-shared",
        pytest.param("localproc", marks=pytest.mark.spawns),
        pytest.param("lxd", marks=pytest.mark.lxd),
    ]
)
def connector(
    request: pytest.FixtureRequest, fake_namespace: str, tmp_path: Path
) -> Iterator[Connector]:
    made = open_connector(request.param, namespace=fake_namespace, root=tmp_path / "instances")
    with destroying(made) as tracked:
        yield tracked
