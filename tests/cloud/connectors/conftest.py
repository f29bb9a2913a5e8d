"""The ``connector`` fixture of the connector suites: one per test, of every kind (the fake,
localproc and Libcloud on a loopback EC2 (moto) always, LXD where the ``lxd`` marker runs: the
local one, and the nested host over HTTPS as a remote LXD, ``lxd-remote``), whose instances
are destroyed when the test ends, even when it failed. A fixture of a wider scope makes its
own with ``support.open_connector`` and ``support.destroying`` (test_contract_volumes.py
shares its containers within the module).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stratuslab.cloud.base import Connector
from tests.cloud.connectors.moto_ec2 import MotoEc2, moto_ec2
from tests.cloud.connectors.support import destroying, open_connector


@pytest.fixture(scope="session")
def ec2() -> Iterator[MotoEc2]:
    """moto's EC2 server on a free loopback port, for the whole session (see moto_ec2.py)."""
    with moto_ec2() as server:
        yield server


@pytest.fixture(
    params=[
        "fake",
        "fake-shared",
        pytest.param("localproc", marks=pytest.mark.spawns),
        "libcloud-ec2",
        pytest.param("lxd", marks=pytest.mark.lxd),
        pytest.param("lxd-remote", marks=pytest.mark.lxd),
    ]
)
def connector(
    request: pytest.FixtureRequest, fake_namespace: str, tmp_path: Path
) -> Iterator[Connector]:
    made: Connector
    if request.param == "libcloud-ec2":
        made = request.getfixturevalue("ec2").connector()
    else:
        # The nested host is made only when a test asks for it (once per session).
        remote = request.getfixturevalue("remote_lxd") if request.param == "lxd-remote" else None
        made = open_connector(
            request.param, namespace=fake_namespace, root=tmp_path / "instances", remote=remote
        )
    with destroying(made) as tracked:
        yield tracked
