"""Connector registry: a name to ``"module:Class"``, imported only when used, so that an
optional dependency (Libcloud, libvirt) is loaded only by the site that needs it."""

from __future__ import annotations

import importlib
from typing import Any

from stratuslab.cloud.base import Connector
from stratuslab.errors import Invalid

REGISTRY: dict[str, str] = {
    "lxd": "stratuslab.cloud.connectors.lxd:LxdConnector",
    "fake": "stratuslab.cloud.connectors.fake:FakeConnector",
    "fake-shared": "stratuslab.cloud.connectors.fake_shared:SharedFakeConnector",
    "localproc": "stratuslab.cloud.connectors.localproc:LocalProcConnector",
    "libcloud": "stratuslab.cloud.connectors.libcloud_compute:LibcloudConnector",
}


def connector_class(kind: str) -> type[Connector]:
    try:
        target = REGISTRY[kind]
    except KeyError:
        raise Invalid(
            f"unknown connector {kind!r}", hint=f"known connectors: {', '.join(sorted(REGISTRY))}"
        ) from None
    module, _, name = target.partition(":")
    cls: type[Connector] = getattr(importlib.import_module(module), name)
    return cls


def make_connector(kind: str, options: dict[str, Any]) -> Connector:
    """A connector of ``kind`` built from a cloud's recorded options."""
    cls = connector_class(kind)
    try:
        return cls(**options)
    except TypeError as exc:
        raise Invalid(f"connector {kind!r}: bad options {sorted(options)}: {exc}") from exc
