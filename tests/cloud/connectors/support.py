"""Connectors for the connector suites: one of a given kind, and one whose instances are
destroyed when it is done with, even when the test failed (see conftest.py's ``connector``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stratuslab import config
from stratuslab.cloud.base import Connector, InstanceSpec
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.cloud.connectors.fake_shared import SharedFakeConnector
from stratuslab.cloud.connectors.localproc import LocalProcConnector
from stratuslab.cloud.connectors.lxd import LxdConnector


def open_connector(
    kind: str, *, namespace: str, root: Path, remote: dict[str, Any] | None = None
) -> Connector:
    """A connector of ``kind``: the fake in ``namespace``, localproc under ``root``, the LXD
    that ``make setup`` prepared, or (``lxd-remote``) the remote LXD whose enrolled options are
    ``remote`` (the ``remote_lxd`` fixture's)."""
    if kind == "fake":
        return FakeConnector(namespace=namespace)
    if kind == "fake-shared":  # the fake whose instances every process over the file sees
        return SharedFakeConnector(path=str(root / "fake.sqlite"))
    if kind == "localproc":
        return LocalProcConnector(root=str(root))
    if kind == "lxd-remote":
        assert remote is not None, "lxd-remote needs the enrolled options"
        return LxdConnector(**remote)
    settings = config.load()
    return LxdConnector(endpoint=settings.lxd_endpoint, profile=settings.lxd_profile)


@contextmanager
def destroying(made: Connector) -> Iterator[Connector]:
    """``made``, remembering every instance it is asked to create; at the end each is
    destroyed and the connector closed."""
    created: list[str] = []
    original = made.create

    def tracked(spec: InstanceSpec) -> object:
        created.append(spec.name)
        return original(spec)

    made.create = tracked  # type: ignore[method-assign]
    try:
        yield made
    finally:
        for name in created:  # clean up even when the test failed
            made.destroy(name)
        made.close()
