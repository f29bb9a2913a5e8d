"""What the nested host is made of (``nested_host.py``): the packages and files that go into
its container, the digest its cached image is keyed by, and the steps run inside it to
install LXD and, once the inner LXD is set up, to seal the container into that image."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from stratuslab.cloud.connectors.lxd import LxdConnector
from stratuslab.cloud.connectors.lxd_api import LxdApi
from stratuslab.config import Settings
from stratuslab.errors import BackendError

RECIPE_VERSION = "1"
BASE_IMAGE = "debian-12"
IMAGE_ALIAS = "stratus-nested-host"

# Debian's LXD; dnsmasq and nftables for its bridge, btrfs-progs for its pool, zstd for the
# images it publishes (Recommends and Suggests are not installed, so they are named).
PACKAGES = ("lxd", "lxd-client", "dnsmasq-base", "nftables", "btrfs-progs", "zstd")

# The ids the inner LXD maps its containers to: within the 10 million this host's LXD gives the
# container (its default), and past the container's own first 65536.
SUBUID = "root:1000000:1000000\n"

# This host mounts the cgroup v1 controllers cpu and cpuacct apart; liblxc then leaves them out
# of the container (it makes 'cpu,cpuacct' and links to it, empty), and the inner liblxc fails
# on them ("Failed to open .../cpuacct"). Mounted here at boot, before the inner LXD starts.
CGROUP_SCRIPT = """#!/bin/sh
# Mount the cgroup v1 controllers liblxc left out of this container (stratus nested host).
set -e
remounted=
for controller in $(sed -n 's/^[0-9]*:\\([^:=]*\\):.*/\\1/p' /proc/self/cgroup | tr ',' ' '); do
  [ -n "$controller" ] || continue
  target=/sys/fs/cgroup/$controller
  mountpoint -q "$target" 2>/dev/null && continue
  [ -n "$remounted" ] || { mount -o remount,rw /sys/fs/cgroup; remounted=1; }
  rm -f "$target"
  mkdir -p "$target"
  mount -t cgroup -o "$controller" cgroup "$target"
done
[ -z "$remounted" ] || mount -o remount,ro /sys/fs/cgroup
"""
CGROUP_UNIT = """[Unit]
Description=Mount the cgroup controllers the nested LXD needs
DefaultDependencies=no
Before=lxd.socket lxd.service
After=local-fs.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/stratus-cgroups

[Install]
WantedBy=sysinit.target
"""
# The cached image's recipe key: not ``stratus.recipe``, which marks the site's base images (the
# trust policy counts those as endorsed, cloud/marketplace/policy.py); this one is not for users.
IMAGE_KEY = "stratus.nested-host"
_APT_TIMEOUT = 900.0

Progress = Callable[[str], None]


def recipe_key(base_fingerprint: str, inner: Settings) -> str:
    """A digest of everything the prepared host is made of: the base image, this module (the
    packages, the files added and the steps that run inside: any change makes the host again),
    and the inner bridge, pool and profile."""
    recipe = [
        RECIPE_VERSION,
        base_fingerprint,
        hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        [inner.lxd_bridge, inner.lxd_subnet, inner.lxd_pool, inner.lxd_profile],
    ]
    return hashlib.sha256(json.dumps(recipe).encode()).hexdigest()


def install(connector: LxdConnector, name: str, say: Progress) -> None:
    """In the new, running container ``name``: the files the inner LXD needs, then LXD."""
    host = connector.api
    _push(host, name, "/usr/local/sbin/stratus-cgroups", CGROUP_SCRIPT, mode="0755")
    _push(host, name, "/etc/systemd/system/stratus-cgroups.service", CGROUP_UNIT)
    for path in ("/etc/subuid", "/etc/subgid"):
        _push(host, name, path, SUBUID)
    _run(connector, name, ["systemctl", "enable", "--now", "stratus-cgroups.service"])
    say(f"installing {', '.join(PACKAGES)} from the Debian mirror")
    _run(connector, name, ["apt-get", "update", "-q"])
    _run(
        connector,
        name,
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES],
    )


def seal(connector: LxdConnector, name: str, key: str, say: Progress) -> None:
    """Stop the container ``name`` and publish it as ``IMAGE_ALIAS`` keyed by ``key`` (the
    image with that alias before is deleted). Its LXD's server certificate is removed first:
    each host made from the image makes its own when its LXD starts."""
    _run(connector, name, ["systemctl", "stop", "lxd.service", "lxd.socket"])
    _run(connector, name, ["rm", "-f", "/var/lib/lxd/server.crt", "/var/lib/lxd/server.key"])
    say(f"caching the prepared host as the image {IMAGE_ALIAS}")
    connector.stop(name, timeout=30)
    connector.delete_image(IMAGE_ALIAS)
    connector.publish_image(
        name,
        alias=IMAGE_ALIAS,
        properties={IMAGE_KEY: key},
        description="StratusLab nested LXD host (tests and demo)",
    )


def _push(host: LxdApi, name: str, path: str, text: str, *, mode: str = "0644") -> None:
    host.request(
        "POST",
        LxdApi.path("instances", name, "files"),
        params={"path": path},
        content=text.encode(),
        headers={
            "Content-Type": "application/octet-stream",
            "X-LXD-uid": "0",
            "X-LXD-gid": "0",
            "X-LXD-mode": mode,
            "X-LXD-type": "file",
            "X-LXD-write": "overwrite",
        },
    )


def _run(connector: LxdConnector, name: str, command: list[str]) -> None:
    done = connector.exec(
        name, command, env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=_APT_TIMEOUT
    )
    if done.exit_code != 0:
        raise BackendError(
            f"in the nested host {name}, {' '.join(command)} exited {done.exit_code}: "
            f"{(done.stderr or done.stdout).strip()[-500:]}"
        )
