"""What the cloud layer's tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from stratuslab.cloud.clouds import ConnectorPool
from stratuslab.cloud.connectors.fake import FakeConnector


@pytest.fixture
def pool(engine: Engine, fake: FakeConnector) -> Iterator[ConnectorPool]:
    """The connectors of the store's clouds (the fake one recorded), closed after the test."""
    made = ConnectorPool(engine)
    yield made
    made.close()
