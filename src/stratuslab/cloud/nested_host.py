"""A second LXD host on this machine, for the tests and the demo of several hosts.

It is an LXD daemon inside a system container of this host's LXD (``security.nesting``), with
its own storage pool (btrfs, in the container's file system) and its own bridge (its own
subnet, NAT on, no IPv6), listening on HTTPS at the container's address. StratusLab reaches it
as it reaches any other LXD host: over HTTPS, with a client certificate enrolled with its trust
password (``connectors/lxd_remote.py``). Its containers reach the server on this host's bridge
gateway through the inner bridge's NAT; a route on this host to the inner subnet, via the
container's fixed address, lets instances on either side reach each other by address.

Making it takes minutes (LXD is installed from the Debian mirror, the base image copied in), so
the prepared container is published as an image of this host's LXD, keyed by a digest of
everything the recipe does (as ``images.py`` keys base images): the next ``ensure`` starts a
container from it in seconds. What must differ between hosts made from it is made at each start:
the server's certificate (removed before publishing, so LXD makes a new one), the trust password
(random, returned), the storage pool (a btrfs subvolume cannot travel in an image).

This module drives the local LXD over its unix socket, and the inner LXD over *its* unix socket,
which this host sees in the container's root file system (LXD trusts whoever may open it: here,
root of this host).
"""

from __future__ import annotations

import dataclasses
import fcntl
import ipaddress
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stratuslab import config, proc
from stratuslab.cloud import nested_host_recipe as recipe
from stratuslab.cloud import site
from stratuslab.cloud.connectors.lxd import LxdConnector
from stratuslab.cloud.connectors.lxd_api import LxdApi
from stratuslab.cloud.nested_host_recipe import BASE_IMAGE, IMAGE_ALIAS, IMAGE_KEY, Progress
from stratuslab.config import Settings
from stratuslab.errors import BackendError, BackendUnavailable, Invalid, NotFound

DEFAULT_NAME = "stratus-host2"
DEFAULT_SUBNET = "10.211.0.1/24"
HTTPS_PORT = 8443
# Where the keys of the container's own configuration live: outside user.stratus.*, which are
# an instance's tags (this container is the site's, not a user's instance).
_KEY = "user.nested-host."
_INNER_SOCKET = "var/lib/lxd/unix.socket"
_INNER_POOL_SOURCE = "/var/lib/lxd/storage-pools/stratus"
_READY_TIMEOUT = 120.0


@dataclass(frozen=True)
class NestedHost:
    """A nested LXD host, as ``ensure`` left it."""

    name: str
    endpoint: str  # https://ADDRESS:8443
    trust_password: str  # random at every ensure; enrol with it (lxd_remote.enroll)
    address: str  # the container's, on this host's bridge (fixed: the route goes via it)
    subnet: str  # the inner bridge's, GATEWAY/PREFIX
    profile: str  # the inner LXD's profile for instances
    cached: bool  # whether the prepared host came from the cached image
    seconds: float

    @property
    def network(self) -> str:
        return str(ipaddress.ip_interface(self.subnet).network)


def ensure(
    name: str = DEFAULT_NAME,
    *,
    settings: Settings | None = None,
    subnet: str = DEFAULT_SUBNET,
    address: str | None = None,
    progress: Progress | None = None,
) -> NestedHost:
    """Make the nested host ``name`` (or take it as it is), listening on HTTPS, with a fresh
    trust password, and the route to its subnet on this host. Idempotent; the second time on
    this machine takes seconds (the prepared host is cached as the image ``IMAGE_ALIAS``).
    On failure a container this call made is deleted."""
    started = time.monotonic()
    say = progress or (lambda _what: None)
    settings = settings or config.load()
    inner = _inner_settings(settings, subnet)
    address = address or _default_address(settings)
    _check_address(settings, address, inner)
    host = _host_api(settings)
    connector = LxdConnector(endpoint=settings.lxd_endpoint, profile=settings.lxd_profile, api=host)
    try:
        with _locked(settings.cache_dir / f"nested-host-{name}.lock"):
            key = recipe.recipe_key(_base_fingerprint(host), inner)
            cached, made = _make(connector, settings, inner, name, key, address, say)
            try:
                say("starting the inner LXD")
                connector.start(name)
                api = _inner_api(settings, name)
                try:
                    password = _configure(api, inner)
                finally:
                    api.close()
                _route(inner, address)
            except BaseException:
                if made:
                    connector.destroy(name)
                raise
    finally:
        connector.close()
    return NestedHost(
        name=name,
        endpoint=f"https://{address}:{HTTPS_PORT}",
        trust_password=password,
        address=address,
        subnet=subnet,
        profile=inner.lxd_profile,
        cached=cached,
        seconds=time.monotonic() - started,
    )


def remove(name: str = DEFAULT_NAME, *, settings: Settings | None = None) -> None:
    """Delete the nested host ``name`` and this host's route to its subnet. Idempotent; the
    cached image stays (``forget`` removes it)."""
    settings = settings or config.load()
    host = _host_api(settings)
    try:
        try:
            subnet = (host.get(LxdApi.path("instances", name)).get("config") or {}).get(
                _KEY + "subnet"
            )
        except NotFound:
            return
        if subnet:
            network = str(ipaddress.ip_interface(subnet).network)
            proc.run(["ip", "route", "del", network], check=False)
        LxdConnector(endpoint=settings.lxd_endpoint, api=host).destroy(name)
    finally:
        host.close()


def forget(*, settings: Settings | None = None) -> None:
    """Delete the cached prepared host (the next ``ensure`` makes it from the start)."""
    settings = settings or config.load()
    connector = LxdConnector(endpoint=settings.lxd_endpoint, api=_host_api(settings))
    try:
        connector.delete_image(IMAGE_ALIAS)
    finally:
        connector.close()


# -- making the container ----------------------------------------------------------------


def _make(
    connector: LxdConnector,
    settings: Settings,
    inner: Settings,
    name: str,
    key: str,
    address: str,
    say: Progress,
) -> tuple[bool, bool]:
    """The container ``name`` made with recipe ``key`` at ``address``: kept when it is there
    already, else made from the cached image, else prepared from the base image (and then
    cached). Returns whether it was there or came from the cache, and whether it was made."""
    host = connector.api
    try:
        current = host.get(LxdApi.path("instances", name))
    except NotFound:
        current = None
    if current is not None:
        same_recipe = (current.get("config") or {}).get(_KEY + "recipe") == key
        at = ((current.get("devices") or {}).get("eth0") or {}).get("ipv4.address")
        if same_recipe and at == address:
            return True, False
        say(f"{name} was made by another recipe or at another address: making it again")
        connector.destroy(name)
    image = _cached_image(host, key)
    if image is not None:
        say(f"starting {name} from the cached image {IMAGE_ALIAS}")
        _create(host, settings, name, image, key, address, inner.lxd_subnet)
        return True, True
    _create(host, settings, name, _base_fingerprint(host), key, address, inner.lxd_subnet)
    try:
        _prepare(connector, inner, name, key, say)
    except BaseException:
        connector.destroy(name)
        raise
    return False, True


def _create(
    host: LxdApi,
    settings: Settings,
    name: str,
    fingerprint: str,
    key: str,
    address: str,
    subnet: str,
) -> None:
    profile, nic = _profile_nic(host, settings, name)
    host.post(
        "/1.0/instances",
        {
            "name": name,
            "type": "container",
            "source": {"type": "image", "fingerprint": fingerprint},
            "profiles": [profile],
            "config": {
                "security.nesting": "true",
                _KEY + "recipe": key,
                _KEY + "subnet": subnet,
            },
            # The profile's NIC again, with a fixed address (the route goes via it) and without
            # the spoofing filters every instance's NIC has (lxd_nics.py): this host routes the
            # inner subnet through it, so it sends replies from addresses that are not its own.
            # It is the site's router, not a user's instance.
            "devices": {"eth0": {**nic, "ipv4.address": address}},
        },
    )


def _prepare(connector: LxdConnector, inner: Settings, name: str, key: str, say: Progress) -> None:
    """Install and set up the inner LXD in the new container ``name``, then cache it."""
    connector.start(name)
    connector.wait_for_address(name, timeout=60)  # up, and on the network: apt-get comes next
    recipe.install(connector, name, say)
    api = _inner_api(inner, name)
    try:
        _wait_ready(api)
        say(f"inner bridge {inner.lxd_bridge} on {inner.lxd_subnet}")
        site._ensure_network(api, inner)
        say(f"copying the {BASE_IMAGE} image in")
        _copy_base_image(connector, LxdConnector(endpoint="inner", api=api), inner)
    finally:
        api.close()
    recipe.seal(connector, name, key, say)


def _copy_base_image(host: LxdConnector, inner: LxdConnector, settings: Settings) -> None:
    folder = settings.cache_dir / "nested-host"
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / f"{BASE_IMAGE}.tar"
    try:
        image = host.export_image(BASE_IMAGE, archive)
        inner.import_image(archive, name=BASE_IMAGE, sha256=image.fingerprint)
    finally:
        archive.unlink(missing_ok=True)


# -- at every ensure ---------------------------------------------------------------------


def _configure(api: LxdApi, inner: Settings) -> str:
    """HTTPS on, a new trust password, the pool, bridge and profile; returns the password."""
    _wait_ready(api)
    password = secrets.token_urlsafe(18)
    api.patch(
        "/1.0",
        {"config": {"core.https_address": f":{HTTPS_PORT}", "core.trust_password": password}},
    )
    try:
        api.get(LxdApi.path("storage-pools", inner.lxd_pool))
    except NotFound:
        # btrfs on the container's own file system (a subvolume of this host's pool): LXD
        # would make a loop file for a pool with a size, and the container has no loop devices.
        api.post(
            "/1.0/storage-pools",
            {
                "name": inner.lxd_pool,
                "driver": "btrfs",
                "config": {"source": _INNER_POOL_SOURCE},
            },
            timeout=120,
        )
    site._ensure_network(api, inner)
    site._ensure_pool(api, inner)
    site._ensure_profile(api, inner)
    return password


def _route(inner: Settings, address: str) -> None:
    network = str(ipaddress.ip_interface(inner.lxd_subnet).network)
    proc.run(
        ["ip", "route", "replace", network, "via", address],
        hint="the route to the nested host's subnet needs root",
    )


# -- helpers -----------------------------------------------------------------------------


def _inner_settings(settings: Settings, subnet: str) -> Settings:
    """The inner LXD is set up as ``cloud init`` sets up a site, on its own subnet."""
    try:
        ipaddress.ip_interface(subnet)
    except ValueError as exc:
        raise Invalid(f"nested host subnet {subnet!r}: {exc}") from exc
    return dataclasses.replace(
        settings,
        lxd_bridge="stratusbr0",
        lxd_subnet=subnet,
        lxd_pool="stratus",
        lxd_profile="stratus",
    )


def _default_address(settings: Settings) -> str:
    """Near the top of this host's bridge's subnet, away from where its DHCP starts."""
    network = ipaddress.ip_interface(settings.lxd_subnet).network
    return str(network.broadcast_address - 5)


def _check_address(settings: Settings, address: str, inner: Settings) -> None:
    outer = ipaddress.ip_interface(settings.lxd_subnet)
    try:
        ip = ipaddress.ip_address(address)
    except ValueError as exc:
        raise Invalid(f"nested host address {address!r}: {exc}") from exc
    if ip not in outer.network or ip == outer.ip:
        raise Invalid(f"nested host address {address} is not a free one of {outer.network}")
    if ipaddress.ip_interface(inner.lxd_subnet).network.overlaps(outer.network):
        raise Invalid(f"nested host subnet {inner.lxd_subnet} overlaps {outer.network}")


def _host_api(settings: Settings) -> LxdApi:
    if not settings.lxd_endpoint.startswith("unix://"):
        raise Invalid("a nested host is made on the local LXD (its unix socket) only")
    return LxdApi(settings.lxd_endpoint)


def _inner_api(settings: Settings, name: str) -> LxdApi:
    lxd_dir = Path(settings.lxd_endpoint.removeprefix("unix://")).parent
    return LxdApi(f"unix://{lxd_dir / 'containers' / name / 'rootfs' / _INNER_SOCKET}")


def _wait_ready(api: LxdApi) -> None:
    """Until the inner LXD answers. Its socket is probed first: httpx leaves a socket open
    behind each failed connection, and systemd only listens a while after the container
    starts (the socket file of the LXD that was published with the image may be there)."""
    deadline = time.monotonic() + _READY_TIMEOUT
    path = api.endpoint.removeprefix("unix://")
    while True:
        try:
            if _accepts(path):
                api.get("/1.0", timeout=10)
                return
        except BackendError:
            pass
        if time.monotonic() > deadline:
            raise BackendUnavailable(
                f"the nested LXD did not answer at {api.endpoint} within {_READY_TIMEOUT:g} s"
            )
        time.sleep(0.5)


def _accepts(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(5)
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


def _base_fingerprint(host: LxdApi) -> str:
    try:
        return str(host.get(LxdApi.path("images", "aliases", BASE_IMAGE))["target"])
    except NotFound:
        raise NotFound(
            f"this host's LXD has no {BASE_IMAGE} image to make the nested host from",
            hint=f"stratus image build {BASE_IMAGE}",
        ) from None


def _cached_image(host: LxdApi, key: str) -> str | None:
    try:
        target = host.get(LxdApi.path("images", "aliases", IMAGE_ALIAS))["target"]
        image = host.get(LxdApi.path("images", target))
    except NotFound:
        return None
    return str(target) if (image.get("properties") or {}).get(IMAGE_KEY) == key else None


def _profile_nic(host: LxdApi, settings: Settings, name: str) -> tuple[str, dict[str, Any]]:
    """The local cloud's profile and its bridged NIC (without the spoofing filters)."""
    devices = host.get(LxdApi.path("profiles", settings.lxd_profile)).get("devices") or {}
    nic = devices.get("eth0") or {}
    if nic.get("type") != "nic" or not nic.get("network"):
        raise Invalid(
            f"profile {settings.lxd_profile} has no eth0 on a managed bridge for {name}",
            hint="run `stratus cloud init`",
        )
    return settings.lxd_profile, {k: v for k, v in nic.items() if not k.startswith("security.")}


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One ``ensure`` of a host at a time on this machine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
