"""LXD (and Incus) system containers, over the REST API.

Tags live in the instance's ``user.stratus.*`` configuration keys. Contextualization travels as
``user.vendor-data`` (the ssh keys, as a ``#cloud-config``) and ``user.user-data`` (the user's
script or cloud-config): the keys cloud-init reads on LXD, and the keys the base image's
``stratus-context`` service reads from ``/dev/lxd/sock`` where there is no cloud-init.
Every bridged NIC an instance gets from its profile is given again as a device of its own,
with LXD's spoofing filters on (``lxd_nics.py``). Volumes are custom storage volumes on the
profile's pool, attached as disk devices (``lxd_volumes.py``).
"""

from __future__ import annotations

import contextlib
import json
import re
import ssl
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from stratuslab.cloud.base import (
    Capacity,
    Connector,
    ExecResult,
    Instance,
    InstanceSpec,
)
from stratuslab.cloud.connectors.lxd_api import OPERATION_TIMEOUT, LxdApi, answered
from stratuslab.cloud.connectors.lxd_images import FINGERPRINT, LxdImages, lxd_time
from stratuslab.cloud.connectors.lxd_nics import filtered_nics
from stratuslab.cloud.connectors.lxd_remote import https_endpoint, pinned_context
from stratuslab.cloud.connectors.lxd_volumes import TAG_PREFIX, LxdVolumes
from stratuslab.cloud.types import Capability, InstanceState
from stratuslab.errors import BackendError, Conflict, Invalid, NotFound

STATE_MAP: dict[str, InstanceState] = {
    "Running": InstanceState.RUNNING,
    "Stopped": InstanceState.STOPPED,
    "Starting": InstanceState.PENDING,
    "Stopping": InstanceState.RUNNING,
    "Freezing": InstanceState.RUNNING,
    "Frozen": InstanceState.STOPPED,
    "Thawed": InstanceState.RUNNING,
    "Error": InstanceState.ERROR,
}

EXEC_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}
_POLL = 0.02  # DHCP answers within ~0.3 s of start; a finer poll only costs LXD a cheap GET
_RETRIES = 5  # for an error LXD answered while a container starts or stops: see _get
# GET /1.0/resources walks the host's hardware; it once took over 60 s right after five
# containers were deleted. Capacity is read before provisioning, which must not hang on it.
CAPACITY_TIMEOUT = 10.0
# A command run with no timeout of its own: as long as LXD's operations were allowed before
# there were bounds, so that `stratus instance exec` of a long job is not cut short.
EXEC_TIMEOUT = 600.0
_STATE_WORKERS = 8  # states asked at once after a filtered listing; LXD serves them in parallel
# Tag values sent to LXD's filter as they are. LXD compares with a case-insensitive regular
# expression over whitespace-separated words: these characters match themselves or, for '.',
# more than themselves, so what LXD returns is a superset that list_instances then narrows.
# A value with any other character (space, quote, '+', '*', ...) is compared here only.
_PLAIN_VALUE = re.compile(r"^[A-Za-z0-9_.:@/,=~%-]+$")


class LxdConnector(LxdImages, LxdVolumes, Connector):
    """System containers on one LXD server, created with one profile."""

    kind = "lxd"
    capabilities = frozenset(
        {
            Capability.EXEC,
            Capability.IMPORT_IMAGE,
            Capability.EXPORT_IMAGE,
            Capability.PUBLISH_IMAGE,
            Capability.SNAPSHOT,
            Capability.VOLUMES,
        }
    )

    def __init__(
        self,
        *,
        endpoint: str,
        profile: str = "default",
        cert: tuple[str, str] | None = None,
        verify: str | bool | ssl.SSLContext = True,
        client_cert_pem: str | None = None,
        client_key_pem: str | None = None,
        server_cert_pem: str | None = None,
        api: LxdApi | None = None,
    ) -> None:
        """``endpoint`` is the local socket (unix://...) or a remote host (https://...). A
        remote enrolled by ``lxd_remote.enroll`` is reached with its options: the client's
        certificate and key, and the server certificate pinned at enrolment, the only one
        accepted (``lxd_remote.pinned_context``). ``cert``/``verify`` are httpx's, as before."""
        self.profile = profile
        if api is None and (client_cert_pem or client_key_pem or server_cert_pem):
            if not (client_cert_pem and client_key_pem and server_cert_pem):
                raise Invalid(
                    "a remote LXD needs client_cert_pem, client_key_pem and server_cert_pem",
                    hint="enrol the host to get all three (`stratus cloud add NAME --lxd URL`)",
                )
            url = https_endpoint(endpoint)
            verify = pinned_context(server_cert_pem, client_cert_pem, client_key_pem, url=url)
            endpoint, cert = url, None
        self.api = api or LxdApi(endpoint, cert=cert, verify=verify)
        self._filtering: bool | None = None  # whether LXD filters listings: asked once
        self._nics: dict[str, dict[str, str]] | None = None  # the profile's NICs, filtered
        self._pool: str | None = None  # the profile's root disk pool, where volumes live

    # -- the contract ---------------------------------------------------------------------

    def create(self, spec: InstanceSpec) -> Instance:
        # A caller that has looked the image up already passes its fingerprint: it is used as
        # it is, and looked up only if LXD refuses it (to say NotFound when it is unknown).
        known = bool(FINGERPRINT.match(spec.image))
        fingerprint = spec.image if known else self.get_image(spec.image).fingerprint
        config: dict[str, str] = {TAG_PREFIX + k: v for k, v in spec.tags.items()}
        if spec.cpu:
            config["limits.cpu"] = str(spec.cpu)
        if spec.ram_mb:
            config["limits.memory"] = f"{spec.ram_mb}MiB"
        if spec.ssh_keys:
            vendor = {"ssh_authorized_keys": list(spec.ssh_keys)}
            config["user.vendor-data"] = "#cloud-config\n" + json.dumps(vendor)
        if spec.user_data:
            config["user.user-data"] = spec.user_data
        body = {
            "name": spec.name,
            "type": "container",
            "source": {"type": "image", "fingerprint": fingerprint},
            "profiles": [self.profile],
            "config": config,
            # Volumes as devices of the instance from the start: mounted before it first boots.
            "devices": {**self.ex_filtered_nics(), **self.ex_volume_devices(spec.volumes)},
        }
        try:
            self.api.post("/1.0/instances", body)
        except (Conflict, BackendError) as exc:
            if isinstance(exc, Conflict) or "already exists" in exc.message:
                raise Conflict(f"an instance called {spec.name!r} already exists on LXD") from exc
            if known:
                self.get_image(spec.image)  # NotFound when LXD has no such image
            raise
        try:
            self._change_state(spec.name, "start")
            return self.get(spec.name)
        except BaseException:
            self.destroy(spec.name)
            raise

    def wait_for_address(self, name: str, timeout: float) -> Instance:
        deadline = time.monotonic() + timeout
        path = LxdApi.path("instances", name)
        while True:
            state = self._get(path + "/state")
            if _addresses(state):
                return self._to_instance({**self._get(path), "state": state})
            if state.get("status") not in ("Running", "Starting"):
                raise BackendError(
                    f"instance {name} is {state.get('status')}, it will get no address"
                )
            if time.monotonic() > deadline:
                raise BackendError(f"instance {name} got no IPv4 address within {timeout:.0f} s")
            time.sleep(_POLL)

    def start(self, name: str) -> Instance:
        if self.get(name).state != InstanceState.RUNNING:
            self._change_state(name, "start")
        return self.get(name)

    def stop(self, name: str, *, timeout: float = 30.0) -> Instance:
        if self.get(name).state != InstanceState.STOPPED:
            # Not stopped in time (systemd ignores the request while it boots): forced below.
            with contextlib.suppress(BackendError):
                self._change_state(name, "stop", timeout=int(timeout), force=False)
            if self.get(name).state != InstanceState.STOPPED:
                self._change_state(name, "stop", force=True)
        return self.get(name)

    def destroy(self, name: str) -> None:
        try:
            self._change_state(name, "stop", force=True)
        except NotFound:
            return
        except (Invalid, BackendError):
            pass  # already stopped: LXD refuses to stop what is not running
        try:
            self.api.delete(LxdApi.path("instances", name))
        except NotFound:
            return

    def get(self, name: str) -> Instance:
        try:  # recursion=1: the instance with its state, in one request
            return self._to_instance(self._get(LxdApi.path("instances", name), recursion=1))
        except NotFound as exc:
            raise NotFound(f"LXD has no instance called {name!r}") from exc

    def list_instances(
        self,
        *,
        tags: Mapping[str, str] | None = None,
        has_tag: str | None = None,
        addresses: bool = True,
    ) -> list[Instance]:
        # LXD computes the state of every instance it lists at recursion=2 (about 3.5 ms each
        # here), before it applies a filter; at recursion=1 it lists configuration and status
        # only (8 ms for 20 instances). So a filtered listing asks at recursion=1 and then the
        # state of each instance found, and only an unfiltered listing with addresses (a
        # reconciliation) uses recursion=2.
        wanted = dict(tags or {})
        query = self._filter(wanted, has_tag)
        whole = addresses and query is None
        found = []
        for raw in self.api.get("/1.0/instances", recursion=2 if whole else 1, filter=query):
            if raw.get("status") == "Error" and not raw.get("config"):
                # LXD failed to read this one's state (see _get) and sent only its name and
                # status: without its tags, its record would be taken for one that is gone.
                try:
                    instance = self.get(raw["name"])
                except NotFound:
                    continue  # deleted since the listing
            else:
                instance = self._to_instance(raw)
            if instance.carries(wanted, has_tag):
                found.append(instance)
        if addresses and not whole:
            return self._with_state(found)
        return found

    def capacity(self) -> Capacity:
        resources = self.api.get("/1.0/resources", timeout=CAPACITY_TIMEOUT)
        memory = resources.get("memory") or {}
        total_mb = int(memory.get("total", 0)) // 2**20
        used_mb = int(memory.get("used", 0)) // 2**20
        disk_total = disk_free = None
        pool = self._profile_pool()
        if pool:
            space = (
                self.api.get(
                    LxdApi.path("storage-pools", pool, "resources"), timeout=CAPACITY_TIMEOUT
                )
                or {}
            ).get("space", {})
            disk_total = int(space.get("total", 0)) // 2**20
            disk_free = disk_total - int(space.get("used", 0)) // 2**20
        return Capacity(
            cpus=int((resources.get("cpu") or {}).get("total", 0)) or None,
            memory_total_mb=total_mb or None,
            memory_free_mb=(total_mb - used_mb) if total_mb else None,
            disk_total_mb=disk_total,
            disk_free_mb=disk_free,
        )

    def exec(
        self,
        name: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        body = {
            "command": list(command),
            "environment": {**EXEC_ENV, **(env or {})},
            "wait-for-websocket": False,
            "interactive": False,
            "record-output": True,
        }
        try:
            meta = self.api.request(
                "POST",
                LxdApi.path("instances", name, "exec"),
                json=body,
                timeout=timeout if timeout is not None else EXEC_TIMEOUT,
            )
        except NotFound as exc:
            raise NotFound(f"LXD has no instance called {name!r}") from exc
        except BackendError as exc:
            if "Command not found" in exc.message:
                return ExecResult(
                    exit_code=127, stdout="", stderr=f"{command[0]}: command not found\n"
                )
            raise
        output = meta.get("output") or {}
        stdout, stderr = (self._take_log(output.get(fd)) for fd in ("1", "2"))
        return ExecResult(exit_code=int(meta.get("return", -1)), stdout=stdout, stderr=stderr)

    def close(self) -> None:
        self.api.close()

    # -- extensions -----------------------------------------------------------------------

    def ex_filtered_nics(self) -> dict[str, dict[str, str]]:
        """The profile's NICs every instance gets as its own, spoofing filtered (read once)."""
        if self._nics is None:
            self._nics = filtered_nics(self.api, self.profile)
        return self._nics or {}

    # -- helpers --------------------------------------------------------------------------

    def _change_state(
        self, name: str, action: str, *, timeout: int = 30, force: bool = False
    ) -> None:
        # A clean stop may take LXD its whole ``timeout``; anything else is quick.
        clean_stop = action == "stop" and not force
        self.api.put(
            LxdApi.path("instances", name, "state"),
            {"action": action, "timeout": timeout, "force": force},
            timeout=OPERATION_TIMEOUT + (timeout if clean_stop else 0),
        )

    def _get(self, path: str, **params: Any) -> Any:
        """GET an instance or its state. LXD sometimes fails to read a container's network
        while it starts or stops ("Failed to retrieve network information"): asked again, it
        answers. Only errors LXD answered with are asked again; an LXD that is down or does not
        answer in time fails at once."""
        for attempt in range(_RETRIES + 1):
            try:
                return self.api.get(path, **params)
            except BackendError as exc:
                if attempt == _RETRIES or not answered(exc):
                    raise
                time.sleep(0.05 * 2**attempt)  # 1.55 s in all
        raise AssertionError("unreachable")

    def _filter(self, wanted: Mapping[str, str], has_tag: str | None) -> str | None:
        """LXD's filter for what can be asked of it safely (see _PLAIN_VALUE); None when
        nothing can, or this LXD cannot filter (no ``api_filtering``: LXD before 4.0)."""
        clauses = [
            f"config.{TAG_PREFIX}{key} eq {value}"
            for key, value in wanted.items()
            if _PLAIN_VALUE.match(value)
        ]
        if has_tag is not None:
            # A missing key reads as the empty string, and LXD keeps no empty keys.
            clauses.append(f"not config.{TAG_PREFIX}{has_tag} eq ^$")
        if not clauses or not self._can_filter():
            return None
        # An instance LXD failed to render comes as {name, status: Error} without its tags:
        # asked for too, it is read alone below rather than taken for gone. LXD reads the
        # clauses left to right, so this 'or' applies to all of them.
        return " and ".join(clauses) + " or status eq Error"

    def _can_filter(self) -> bool:
        if self._filtering is None:
            extensions = (self.api.get("/1.0") or {}).get("api_extensions") or []
            self._filtering = "api_filtering" in extensions
        return self._filtering

    def _with_state(self, instances: list[Instance]) -> list[Instance]:
        """The instances with their state and addresses; those deleted meanwhile left out."""

        def fetch(instance: Instance) -> Instance | None:
            try:
                state = self._get(LxdApi.path("instances", instance.name, "state"))
            except NotFound:
                return None
            return replace(
                instance,
                state=STATE_MAP.get(state.get("status", ""), InstanceState.UNKNOWN),
                addresses=tuple(_addresses(state)),
                extra={**instance.extra, "status": state.get("status"), "pid": state.get("pid")},
            )

        if len(instances) <= 1:
            fetched = [fetch(i) for i in instances]
        else:
            with ThreadPoolExecutor(max_workers=min(len(instances), _STATE_WORKERS)) as pool:
                fetched = list(pool.map(fetch, instances))
        return [i for i in fetched if i is not None]

    def _take_log(self, log_path: str | None) -> str:
        if not log_path:
            return ""
        data = self.api.raw(log_path).decode(errors="replace")
        with contextlib.suppress(BackendError):  # a leftover log is harmless; LXD removes it later
            self.api.delete(log_path)
        return data

    def _profile_pool(self) -> str | None:
        try:
            profile = self.api.get(LxdApi.path("profiles", self.profile))
        except NotFound:
            return None
        root = (profile.get("devices") or {}).get("root") or {}
        pool = root.get("pool")
        return str(pool) if pool else None

    # -- converters -----------------------------------------------------------------------

    @staticmethod
    def _to_instance(raw: Mapping[str, Any]) -> Instance:
        config: Mapping[str, str] = raw.get("config") or {}
        state = raw.get("state") or {}
        memory = config.get("limits.memory", "")
        return Instance(
            name=raw["name"],
            state=STATE_MAP.get(raw.get("status", ""), InstanceState.UNKNOWN),
            image=config.get(TAG_PREFIX + "image") or config.get("volatile.base_image", "")[:12],
            addresses=tuple(_addresses(state)),
            cpu=int(config["limits.cpu"]) if config.get("limits.cpu", "").isdigit() else None,
            ram_mb=int(memory.removesuffix("MiB")) if memory.endswith("MiB") else None,
            tags={
                k.removeprefix(TAG_PREFIX): v for k, v in config.items() if k.startswith(TAG_PREFIX)
            },
            created_at=lxd_time(raw.get("created_at")),
            extra={"status": raw.get("status"), "pid": state.get("pid")},
        )


def _addresses(state: Mapping[str, Any]) -> list[str]:
    found = []
    for device, net in (state.get("network") or {}).items():
        if device == "lo":
            continue
        for address in net.get("addresses") or []:
            if address.get("family") == "inet" and address.get("scope") == "global":
                found.append(address["address"])
    return found
