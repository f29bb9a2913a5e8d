"""The local cloud, as a site administrator installs it: an LXD daemon, a bridge with NAT, a
loop-backed btrfs storage pool, a profile that puts instances on both (its NIC filtered against
spoofing, as every instance's is: ``connectors/lxd_nics.py``), and the site certificate nodes
trust the server by (``sitecert.py``).

Everything here is declarative and idempotent: :func:`initialise` compares what LXD has with
what the settings ask for and changes only the difference, so running it twice changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stratuslab import proc
from stratuslab.cloud import sitecert
from stratuslab.cloud.connectors.lxd_api import LxdApi
from stratuslab.cloud.connectors.lxd_nics import NIC_FILTERING
from stratuslab.config import Settings
from stratuslab.errors import BackendUnavailable, Conflict, NotFound

Step = Callable[[str, str], None]  # (what, outcome)


@dataclass
class InitReport:
    """What ``cloud init`` found and did: each item is (what, outcome)."""

    steps: list[tuple[str, str]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(outcome not in ("present", "running") for _, outcome in self.steps)


def connector_options(settings: Settings) -> dict[str, Any]:
    """How the LXD connector of the local cloud is built, as recorded in the store."""
    return {"endpoint": settings.lxd_endpoint, "profile": settings.lxd_profile}


def initialise(settings: Settings, *, on_step: Step | None = None) -> InitReport:
    report = InitReport()

    def step(what: str, outcome: str) -> None:
        report.steps.append((what, outcome))
        if on_step:
            on_step(what, outcome)

    step("daemon", ensure_daemon(settings.lxd_endpoint))
    step("host limits", ensure_host_limits())
    api = LxdApi(settings.lxd_endpoint)
    try:
        step(f"bridge {settings.lxd_bridge}", _ensure_network(api, settings))
        step(f"storage pool {settings.lxd_pool}", _ensure_pool(api, settings))
        step(f"profile {settings.lxd_profile}", _ensure_profile(api, settings))
    finally:
        api.close()
    step("site certificate", sitecert.ensure(settings).outcome)
    return report


# Kernel limits LXD's production set-up raises: each container's systemd takes inotify
# instances, and with Debian's 128 the 18th container or so stops at boot ("Failed to create
# control group inotify object: Too many open files"). Only raised, never lowered.
HOST_LIMITS = {
    "/proc/sys/fs/inotify/max_user_instances": 1024,
    "/proc/sys/fs/inotify/max_user_watches": 524288,
}


def ensure_host_limits(limits: dict[str, int] | None = None) -> str:
    """Raise the kernel limits containers need where they are lower. Returns 'present' or
    'raised'; a limit that cannot be written (no root, a read-only /proc) is left with a
    clear error."""
    raised = False
    for path, wanted in (limits or HOST_LIMITS).items():
        file = Path(path)
        try:
            current = int(file.read_text().split()[0])
            if current < wanted:
                file.write_text(f"{wanted}\n")
                raised = True
        except (OSError, ValueError) as exc:
            raise BackendUnavailable(
                f"cannot raise {path} to {wanted}: {exc}",
                hint="run `stratus cloud init` as root, or raise it with sysctl",
            ) from exc
    return "raised" if raised else "present"


def ensure_daemon(endpoint: str, *, wait: float = 60.0) -> str:
    """Start the local LXD daemon unless it answers already. Returns 'running' or 'started'."""
    api = LxdApi(endpoint, timeout=10)
    try:
        api.get("/1.0")
        return "running"
    except BackendUnavailable:
        if not endpoint.startswith("unix://"):
            raise
    finally:
        api.close()
    if proc.which("lxd") is None:
        raise BackendUnavailable(
            "LXD is not installed", hint="run `make setup` (apt-get install lxd)"
        )
    if Path("/run/systemd/system").exists():
        proc.run(["systemctl", "start", "lxd"])
    else:
        proc.spawn_detached(
            ["lxd", "--group", "root"], log_file=Path("/var/log/lxd/stratus-lxd.log")
        )
    proc.run(
        ["lxd", "waitready", f"--timeout={int(wait)}"], hint="see /var/log/lxd/stratus-lxd.log"
    )
    return "started"


def status(settings: Settings) -> dict[str, Any]:
    """The daemon, bridge, pool, images, instances and free capacity, as plain data."""
    api = LxdApi(settings.lxd_endpoint, timeout=10)
    try:
        server = api.get("/1.0")
        env = server.get("environment") or {}
        report: dict[str, Any] = {
            "daemon": {
                "endpoint": settings.lxd_endpoint,
                "running": True,
                "server": env.get("server_name") or env.get("server"),
                "version": env.get("server_version"),
                "storage": env.get("storage"),
            },
            "bridge": _describe(api, "networks", settings.lxd_bridge, ("ipv4.address", "ipv4.nat")),
            "pool": _describe_pool(api, settings.lxd_pool),
            "profile": {
                "name": settings.lxd_profile,
                "present": _exists(api, "profiles", settings.lxd_profile),
            },
            "site_ca": _describe_ca(settings),
        }
        images = api.get("/1.0/images", recursion=1)
        report["images"] = [
            {
                "aliases": [a["name"] for a in i.get("aliases") or []],
                "fingerprint": i["fingerprint"][:12],
                "size_mb": round(int(i.get("size", 0)) / 2**20),
                "description": (i.get("properties") or {}).get("description", ""),
            }
            for i in images
        ]
        instances = api.get("/1.0/instances", recursion=1)
        by_status: dict[str, int] = {}
        for raw in instances:
            by_status[raw.get("status", "Unknown")] = (
                by_status.get(raw.get("status", "Unknown"), 0) + 1
            )
        report["instances"] = {
            "total": len(instances),
            "by_status": by_status,
            "stratuslab": sum(1 for i in instances if "user.stratus.id" in (i.get("config") or {})),
        }
        resources = api.get("/1.0/resources")
        memory = resources.get("memory") or {}
        report["capacity"] = {
            "cpus": (resources.get("cpu") or {}).get("total"),
            "memory_total_mb": int(memory.get("total", 0)) // 2**20,
            "memory_free_mb": (int(memory.get("total", 0)) - int(memory.get("used", 0))) // 2**20,
            "disk_free_mb": report["pool"].get("free_mb"),
        }
        return report
    finally:
        api.close()


# -- the pieces --------------------------------------------------------------------------


def _ensure_network(api: LxdApi, settings: Settings) -> str:
    wanted = {"ipv4.address": settings.lxd_subnet, "ipv4.nat": "true", "ipv6.address": "none"}
    path = LxdApi.path("networks", settings.lxd_bridge)
    try:
        current = api.get(path)
    except NotFound:
        api.post("/1.0/networks", {"name": settings.lxd_bridge, "type": "bridge", "config": wanted})
        return "created"
    if not current.get("managed"):
        raise Conflict(
            f"network {settings.lxd_bridge} exists but LXD does not manage it",
            hint="choose another name with the setting lxd_bridge",
        )
    config = current.get("config") or {}
    if all(config.get(k) == v for k, v in wanted.items()):
        return "present"
    if config.get("ipv4.address") != settings.lxd_subnet and current.get("used_by"):
        raise Conflict(
            f"bridge {settings.lxd_bridge} has subnet {config.get('ipv4.address')} and is in use",
            hint=f"the setting lxd_subnet asks for {settings.lxd_subnet}; change one of them",
        )
    api.patch(path, {"config": wanted})
    return "updated"


def _ensure_pool(api: LxdApi, settings: Settings) -> str:
    try:
        pool = api.get(LxdApi.path("storage-pools", settings.lxd_pool))
    except NotFound:
        api.post(
            "/1.0/storage-pools",
            {
                "name": settings.lxd_pool,
                "driver": "btrfs",
                "config": {"size": f"{settings.lxd_pool_size_gib}GiB"},
            },
            timeout=120,
        )
        return "created"
    if pool.get("driver") != "btrfs":
        return f"present ({pool.get('driver')}, not btrfs: instances start more slowly)"
    return "present"


def _ensure_profile(api: LxdApi, settings: Settings) -> str:
    devices = {
        "root": {"type": "disk", "path": "/", "pool": settings.lxd_pool},
        "eth0": {
            "type": "nic",
            "name": "eth0",
            "network": settings.lxd_bridge,
            **NIC_FILTERING,
        },
    }
    description = "StratusLab instances: root on the stratus pool, eth0 on the stratus bridge"
    path = LxdApi.path("profiles", settings.lxd_profile)
    try:
        current = api.get(path)
    except NotFound:
        api.post(
            "/1.0/profiles",
            {
                "name": settings.lxd_profile,
                "description": description,
                "config": {},
                "devices": devices,
            },
        )
        return "created"
    if current.get("devices") == devices:
        return "present"
    api.put(
        path,
        {"description": description, "config": current.get("config") or {}, "devices": devices},
    )
    return "updated"


def _describe_ca(settings: Settings) -> dict[str, Any]:
    pem = sitecert.read_ca(settings.tls_dir)
    if pem is None:
        return {"present": False}
    return {"present": True, "sha256": sitecert.fingerprint(pem)}


def _exists(api: LxdApi, collection: str, name: str) -> bool:
    try:
        api.get(LxdApi.path(collection, name))
        return True
    except NotFound:
        return False


def _describe(api: LxdApi, collection: str, name: str, keys: tuple[str, ...]) -> dict[str, Any]:
    try:
        raw = api.get(LxdApi.path(collection, name))
    except NotFound:
        return {"name": name, "present": False}
    config = raw.get("config") or {}
    return {
        "name": name,
        "present": True,
        **{k: config.get(k) for k in keys},
        "status": raw.get("status"),
    }


def _describe_pool(api: LxdApi, name: str) -> dict[str, Any]:
    try:
        raw = api.get(LxdApi.path("storage-pools", name))
        space = (api.get(LxdApi.path("storage-pools", name, "resources")) or {}).get("space", {})
    except NotFound:
        return {"name": name, "present": False}
    total, used = int(space.get("total", 0)), int(space.get("used", 0))
    return {
        "name": name,
        "present": True,
        "driver": raw.get("driver"),
        "source": (raw.get("config") or {}).get("source"),
        "size_mb": total // 2**20,
        "free_mb": (total - used) // 2**20,
    }
