"""How instances on EC2 are reached: the key pair an instance is launched with and the
security group it is in, each made once and then found again (a mixin of the Libcloud
connector, which gives it its driver, its error translation and its options)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from libcloud.compute.drivers.ec2 import NAMESPACE

from stratuslab.cloud.connectors.libcloud_launch import key_pair_name
from stratuslab.errors import Conflict


class Ec2Access:
    key_pair: str | None
    security_group: str
    _group_ready: bool
    _lock: threading.Lock

    if TYPE_CHECKING:  # the connector's: its driver, its error translation, a raw EC2 call

        def _driver(self) -> Any: ...

        def _calling(self, what: str) -> Any: ...

        def _ec2(self, action: str, params: Mapping[str, str]) -> Any: ...

    def _keys(self, keys: tuple[str, ...]) -> tuple[str | None, tuple[str, ...]]:
        """The key pair to launch with, and the keys left for the user-data."""
        if self.key_pair or not keys:
            return self.key_pair, keys
        first = keys[0]
        name = key_pair_name(first)
        with self._calling(f"looking up key pair {name}"):
            # A filter, not Libcloud's get_key_pair: it sends KeyName, which EC2 reads as KeyName.1
            # and other servers ignore (answering every key pair).
            found = self._ec2(
                "DescribeKeyPairs", {"Filter.1.Name": "key-name", "Filter.1.Value.1": name}
            )
        if found.find(f"{{{NAMESPACE}}}keySet/{{{NAMESPACE}}}item") is None:
            try:
                with self._calling(f"importing key pair {name}"):
                    self._driver().import_key_pair_from_string(name, first)
            except Conflict:
                pass  # imported meanwhile by another process: the same key, by its name
        return name, keys[1:]

    def _ensure_security_group(self) -> str:
        with self._lock:
            if self._group_ready:
                return self.security_group
            group = self.security_group
            driver = self._driver()
            with self._calling(f"looking up security group {group}"):
                found = driver.ex_get_security_groups(filters={"group-name": group})
            if not found:
                try:
                    with self._calling(f"making security group {group}"):
                        made = driver.ex_create_security_group(
                            group, "StratusLab instances: ssh in, anything out"
                        )
                        driver.ex_authorize_security_group_ingress(
                            made["group_id"], 22, 22, cidr_ips=["0.0.0.0/0"]
                        )
                except Conflict:
                    pass  # made meanwhile by another process
            self._group_ready = True
            return group
