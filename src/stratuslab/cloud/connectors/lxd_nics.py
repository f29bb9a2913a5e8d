"""What an LXD instance's network devices are: its profile's, with spoofing filtered.

Instances of different users share a bridge, and nodes call the server at the bridge's
gateway. So every bridged NIC an instance gets from its profile is given again as a device of
the instance itself, with LXD's filters on (``NIC_FILTERING``): frames only from the NIC's own
MAC address; IPv4 and ARP only from the address LXD's DHCP hands it (LXD 5.0 reserves one per
filtered NIC from the bridge's range when the instance starts, so no static address is
needed); IPv6 only from its own, which on a bridge without IPv6 means none. Whatever profile
the connector is given, no instance can pose as a neighbour, nor as the gateway.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from stratuslab.cloud.connectors.lxd_api import LxdApi
from stratuslab.errors import NotFound

log = logging.getLogger(__name__)

NIC_FILTERING = {
    "security.mac_filtering": "true",
    "security.ipv4_filtering": "true",
    "security.ipv6_filtering": "true",
}


def filtered_nics(api: LxdApi, profile: str) -> dict[str, dict[str, str]] | None:
    """The NICs of ``profile`` on a bridge LXD manages, each with ``NIC_FILTERING``. A NIC
    elsewhere (a macvlan, a bridge LXD does not run DHCP on, which would need a static address
    on every NIC) is left as the profile has it, with a warning. None when there is no such
    profile (LXD then refuses the instance, naming it)."""
    try:
        devices = api.get(LxdApi.path("profiles", profile)).get("devices") or {}
    except NotFound:
        return None
    nics: dict[str, dict[str, str]] = {}
    for name, device in devices.items():
        if device.get("type") != "nic":
            continue
        if _bridged(api, device):
            nics[name] = {**device, **NIC_FILTERING}
        else:
            log.warning(
                "NIC %s of profile %s is not on a bridge LXD manages: spoofing is not filtered",
                name,
                profile,
            )
    return nics


def _bridged(api: LxdApi, device: Mapping[str, str]) -> bool:
    """Whether ``device`` is on a bridge LXD manages (named as ``network``, or as the
    ``parent`` of a ``bridged`` NIC)."""
    if device.get("nictype"):
        network = device.get("parent") if device["nictype"] == "bridged" else None
    else:
        network = device.get("network")
    if not network:
        return False
    try:
        found = api.get(LxdApi.path("networks", network))
    except NotFound:
        return False
    return bool(found.get("type") == "bridge" and found.get("managed"))
