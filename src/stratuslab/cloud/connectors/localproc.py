"""Instances that are process trees on this host: the deployment engine end to end, without LXD.

An instance is a folder under the connector's ``root`` and, while it runs, a process tree in
PID, mount and UTS namespaces of its own. Its first process (``localproc_init.py``, started by
util-linux's ``unshare``) is PID 1 there: it mounts the instance's private directories over
the host's, runs the user-data once, and reaps whatever the instance starts. So the node
bootstrap runs unchanged (it writes ``/etc/stratus``, ``/opt/stratus``, ``/usr/local/bin``,
``/var/lib/stratus-agent``...) and the host's own files are never touched:

- ``/etc`` is an overlay: the host's ``/etc`` read through it (the dynamic linker's cache,
  ``/etc/alternatives`` and ``passwd`` are what make the host's programs work), every write
  landing in the instance's folder;
- ``/opt``, ``/root``, ``/usr/local/bin``, ``/var/lib``, ``/var/log`` and ``/var/tmp`` are
  empty private directories, as on a pristine image (``/root`` too: recipes run there);
- everything else is the host's, read and written as it is: this is "this host's Python" as
  an image, not a container. ``/tmp`` stays shared, as on any multi-user host.

The image (``debian-12`` by default, so that example modules run) stands for this host and its
Python, which the instance finds as ``python3`` (a link in its ``/usr/local/bin``). Its address
is 127.0.0.1: a server its agent calls must listen on loopback.

States: RUNNING while the namespace's PID 1 lives. ``stop`` ends the process tree (SIGTERM to
every process, SIGKILL after ``timeout``) and keeps the folder, as a stopped machine keeps its
disk; ``start`` starts a new PID 1 over the same folder, which does not run the user-data again.
``destroy`` kills PID 1 (the kernel kills the rest of the namespace with it) and removes the
folder. Tags and the rest of the instance's description are in ``<folder>/instance.json``, and
PID 1's host pid in ``<folder>/init.json``, so that any connector object over the same root, in
any process, sees and drives the same instances (``localproc_ns.py`` handles PID 1 from the
host). CPU and memory sizes are recorded, not enforced. ``exec`` enters the instance's
namespaces with ``nsenter``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stratuslab import proc
from stratuslab.cloud.base import Capacity, Connector, ExecResult, Image, Instance, InstanceSpec
from stratuslab.cloud.connectors import localproc_ns as ns
from stratuslab.cloud.connectors.localproc_ns import OVERLAID, PRIVATE
from stratuslab.cloud.types import Capability, InstanceState
from stratuslab.errors import (
    BackendError,
    BackendUnavailable,
    CommandFailed,
    Conflict,
    Invalid,
    NotFound,
    NotSupported,
)

ADDRESS = "127.0.0.1"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")  # a host name, and a folder name
STATE_MAP = {
    "starting": InstanceState.PENDING,  # created here, PID 1 not ready yet
    "running": InstanceState.RUNNING,
    "stopped": InstanceState.STOPPED,  # no PID 1: stopped, or never started
}
_FINGERPRINTS: dict[str, str] = {}  # the image's, by interpreter: its SHA-256, made once


class LocalProcConnector(Connector):
    """Instances as namespaced process trees on this host, in folders under ``root``."""

    kind = "localproc"
    capabilities = frozenset({Capability.EXEC})

    def __init__(
        self,
        *,
        root: str,
        images: Sequence[str] = ("debian-12",),
        python: str = "/usr/bin/python3",
        env: Mapping[str, str] | None = None,
    ) -> None:
        """``root``: where instances' folders go. ``python``: the interpreter instances run as
        ``python3``. ``env``: added to the environment the user-data starts with (which is
        otherwise clean: PATH, HOME, LANG and STRATUS_AGENT_SYSTEMD=0)."""
        self.root = Path(root)
        self.python = python
        self.image_names = tuple(images)
        self.env = dict(env or {})
        hidden = [p for p in (*OVERLAID, *PRIVATE) if Path(python).is_relative_to(p)]
        if hidden:
            raise Invalid(f"localproc: python {python} is under {hidden[0]}, which instances hide")
        self.root.mkdir(parents=True, exist_ok=True)

    # -- the contract ---------------------------------------------------------------------

    def create(self, spec: InstanceSpec) -> Instance:
        if not NAME.match(spec.name):
            raise Invalid(f"instance name {spec.name!r}: use letters, digits and '-' (a host name)")
        image = self.get_image(spec.image)
        if spec.volumes:
            raise NotSupported("the localproc connector has no volumes")
        if spec.user_data is not None and not spec.user_data.startswith("#!"):
            raise NotSupported("the localproc connector runs user-data that is a #! script only")
        folder = self._folder(spec.name)
        try:
            folder.mkdir()
        except FileExistsError:
            raise Conflict(
                f"an instance called {spec.name!r} already exists in {self.root}"
            ) from None
        try:
            self._prepare(folder, spec, image)
            ns.launch(folder, self._environment())
        except BaseException:
            self._remove(folder)
            raise
        return self.get(spec.name)

    def wait_for_address(self, name: str, timeout: float) -> Instance:
        instance = self.get(name)  # the address is there from the start: nothing to wait for
        if instance.state != InstanceState.RUNNING:
            raise BackendError(f"instance {name} is {instance.state.value}, it will get no address")
        return instance

    def start(self, name: str) -> Instance:
        folder = self._existing(name)
        if ns.pid1(folder) is None:
            ns.launch(folder, self._environment())
        return self.get(name)

    def stop(self, name: str, *, timeout: float = 30.0) -> Instance:
        ns.stop(self._existing(name), timeout)
        return self.get(name)

    def destroy(self, name: str) -> None:
        if not NAME.match(name):
            return  # no folder can have that name
        self._remove(self._folder(name))

    def get(self, name: str) -> Instance:
        return self._to_instance(self._existing(name), addresses=True)

    def list_instances(
        self,
        *,
        tags: Mapping[str, str] | None = None,
        has_tag: str | None = None,
        addresses: bool = True,
    ) -> list[Instance]:
        ns.reap_finished()
        wanted = dict(tags or {})
        found = []
        for folder in sorted(self.root.iterdir()):
            if folder.name.startswith(".") or not (folder / "instance.json").exists():
                continue  # being removed, or being made
            try:
                instance = self._to_instance(folder, addresses=addresses)
            except NotFound:
                continue  # destroyed as we looked
            if instance.carries(wanted, has_tag):
                found.append(instance)
        return found

    def list_images(self) -> list[Image]:
        return [self._image(name) for name in self.image_names]

    def get_image(self, name: str) -> Image:
        for image in self.list_images():
            if name == image.name or (len(name) >= 12 and image.fingerprint.startswith(name)):
                return image
        raise NotFound(
            f"no image called {name!r}",
            hint=f"the localproc connector has {', '.join(self.image_names)}",
        )

    def capacity(self) -> Capacity:
        memory = _meminfo()
        disk = shutil.disk_usage(self.root)
        return Capacity(
            cpus=os.cpu_count(),
            memory_total_mb=memory.get("MemTotal", 0) // 1024 or None,
            memory_free_mb=memory.get("MemAvailable", 0) // 1024 or None,
            disk_total_mb=disk.total // 2**20,
            disk_free_mb=disk.free // 2**20,
        )

    def exec(
        self,
        name: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        pid = ns.pid1(self._existing(name))
        if pid is None:
            raise BackendError(f"instance {name} is not running")
        argv = ns.enter(pid, {**self._environment(), **(env or {})}, list(command))
        try:
            done = proc.run(argv, check=False, timeout=timeout, hint="apt-get install util-linux")
        except CommandFailed as exc:  # timed out
            return ExecResult(exc.returncode, exc.stdout, exc.stderr)
        return ExecResult(done.returncode, done.stdout, done.stderr)

    # -- localproc-only extras ------------------------------------------------------------

    def ex_folder(self, name: str) -> Path:
        """The instance's folder on the host: its private directories are under ``fs/``."""
        return self._existing(name)

    # -- helpers --------------------------------------------------------------------------

    def _folder(self, name: str) -> Path:
        return self.root / name

    def _existing(self, name: str) -> Path:
        folder = self._folder(name)
        if not NAME.match(name) or not (folder / "instance.json").exists():
            raise NotFound(f"the localproc backend has no instance called {name!r}")
        return folder

    def _prepare(self, folder: Path, spec: InstanceSpec, image: Image) -> None:
        """The description (written first: a tagged folder is never lost track of), the
        private directories, the user-data and the keys."""
        description = {
            "name": spec.name,
            "image": image.name,
            "cpu": spec.cpu,
            "ram_mb": spec.ram_mb,
            "tags": {k: v for k, v in spec.tags.items() if v},  # as LXD: no empty keys
            "created_at": datetime.now(UTC).isoformat(),
        }
        _write_atomically(folder / "instance.json", json.dumps(description))
        for location in (*OVERLAID, *PRIVATE):
            (folder / "fs" / location.lstrip("/")).mkdir(parents=True)
        for location in OVERLAID:
            (folder / "work" / location.lstrip("/")).mkdir(parents=True)
        (folder / "fs/root").chmod(0o700)
        (folder / "fs/var/tmp").chmod(0o1777)
        (folder / "fs/usr/local/bin/python3").symlink_to(self.python)
        if spec.user_data is not None:
            (folder / "user-data").write_text(spec.user_data)
        if spec.ssh_keys:
            keys = folder / "fs/root/.ssh/authorized_keys"
            keys.parent.mkdir(mode=0o700)
            keys.write_text("".join(f"{key.strip()}\n" for key in spec.ssh_keys))
            keys.chmod(0o600)

    def _environment(self) -> dict[str, str]:
        return {
            "PATH": PATH,
            "HOME": "/root",
            "USER": "root",
            "LOGNAME": "root",
            "LANG": "C.UTF-8",
            "STRATUS_AGENT_SYSTEMD": "0",  # PID 1 here is no systemd: install starts the agent
            **self.env,
        }

    def _remove(self, folder: Path) -> None:
        """Kill the instance's PID 1 (and so its namespace) and remove its folder; whatever is
        already gone is fine."""
        if not folder.exists():
            return
        ns.kill(folder)
        # Renamed first: the name is free again at once, and no listing sees half a folder.
        doomed = folder.with_name(f".gone-{folder.name}-{os.getpid()}-{threading.get_ident()}")
        try:
            folder.rename(doomed)
        except FileNotFoundError:
            return  # destroyed by someone else meanwhile
        shutil.rmtree(doomed, ignore_errors=True)
        if doomed.exists():
            raise BackendError(f"could not remove {doomed}")

    def _image(self, name: str) -> Image:
        python = Path(self.python).resolve()
        fingerprint = _FINGERPRINTS.get(str(python))
        if fingerprint is None:
            try:
                fingerprint = hashlib.sha256(python.read_bytes()).hexdigest()
            except OSError as exc:
                raise BackendUnavailable(f"localproc: cannot read {python}: {exc}") from exc
            _FINGERPRINTS[str(python)] = fingerprint
        return Image(
            name=name,
            fingerprint=fingerprint,
            size_bytes=python.stat().st_size,
            description=f"this host, with {python} as python3",
            properties={"python": str(python)},
        )

    def _to_instance(self, folder: Path, *, addresses: bool) -> Instance:
        try:
            description: dict[str, Any] = json.loads((folder / "instance.json").read_text())
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(
                f"the localproc backend has no instance called {folder.name!r}"
            ) from None
        pid = ns.pid1(folder)
        native = "running" if pid is not None else "starting" if ns.starting(folder) else "stopped"
        state = STATE_MAP.get(native, InstanceState.UNKNOWN)
        return Instance(
            name=description["name"],
            state=state,
            image=description["image"],
            addresses=(ADDRESS,) if addresses and state == InstanceState.RUNNING else (),
            cpu=description.get("cpu"),
            ram_mb=description.get("ram_mb"),
            tags=dict(description.get("tags") or {}),
            created_at=datetime.fromisoformat(description["created_at"]),
            extra={"folder": str(folder), "console": str(folder / "console.log"), "pid": pid},
        )


def _meminfo() -> dict[str, int]:
    """/proc/meminfo in KiB."""
    values = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        with contextlib.suppress(ValueError, IndexError):
            values[key] = int(rest.split()[0])
    return values


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.part")
    partial.write_text(text)
    partial.replace(path)
