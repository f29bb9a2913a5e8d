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
any process, sees and drives the same instances. CPU and memory sizes are recorded, not
enforced. ``exec`` enters the instance's namespaces with ``nsenter``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stratuslab import proc
from stratuslab.cloud.base import Capacity, Connector, ExecResult, Image, Instance, InstanceSpec
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
OVERLAID = ("/etc",)  # the host's files seen through, writes kept in the instance
# Empty at first, as on a pristine image. Private directories: not the host's temporary files.
PRIVATE = ("/opt", "/root", "/usr/local/bin", "/var/lib", "/var/log", "/var/tmp")  # noqa: S108
LAUNCHER = Path(__file__).with_name("localproc_init.py")
LAUNCH_TIMEOUT = 10.0  # seconds for PID 1 to say it is ready (it takes some 50 ms)
KILL_WAIT = 5.0  # seconds for a killed PID 1 to be gone
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")  # a host name, and a folder name
STATE_MAP = {
    "starting": InstanceState.PENDING,  # created here, PID 1 not ready yet
    "running": InstanceState.RUNNING,
    "stopped": InstanceState.STOPPED,  # no PID 1: stopped, or never started
}

# unshare processes this process started, by folder: they are reaped here (whoever destroys
# the instance), so that none is left a zombie, and none warns of being left running.
_CHILDREN: dict[Path, subprocess.Popen[bytes]] = {}
_STARTING: set[Path] = set()
_LOCK = threading.Lock()
_FINGERPRINTS: dict[str, str] = {}


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
            self._launch(folder)
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
        if _init(folder) is None:
            self._launch(folder)
        return self.get(name)

    def stop(self, name: str, *, timeout: float = 30.0) -> Instance:
        folder = self._existing(name)
        init = _init(folder)
        if init is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(init, signal.SIGTERM)  # PID 1 passes it to every process it holds
            if not _gone(init, timeout):
                _kill(init)
        (folder / "init.json").unlink(missing_ok=True)
        _reap(folder)
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
        wanted = dict(tags or {})
        found = []
        for folder in sorted(self.root.iterdir()):
            if folder.name.startswith(".") or not (folder / "instance.json").exists():
                continue  # being removed, or being made
            try:
                instance = self._to_instance(folder, addresses=addresses)
            except NotFound:
                continue  # destroyed as we looked
            if all(instance.tags.get(k) == v for k, v in wanted.items()) and (
                has_tag is None or has_tag in instance.tags
            ):
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
        init = _init(self._existing(name))
        if init is None:
            raise BackendError(f"instance {name} is not running")
        environment = [f"{k}={v}" for k, v in {**self._environment(), **(env or {})}.items()]
        argv = [
            *("nsenter", f"--target={init}", "--mount", "--uts", "--pid", "--wd=/root"),
            # A clean environment, and the shell's own "not found" (127) for a missing command.
            *("--", "env", "-i", *environment, "/bin/sh", "-c", 'exec "$@"', "sh", *command),
        ]
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

    def _mounts(self, folder: Path) -> list[list[str]]:
        fs, work = folder / "fs", folder / "work"
        plan = [
            ["overlay", location, str(fs / location[1:]), str(work / location[1:])]
            for location in OVERLAID
        ]
        # Each source is found when it is mounted: a location that holds the folder itself
        # (a root under /var/lib, say) is mounted last, once nothing more is needed from it.
        holds_folder = [folder.is_relative_to(location) for location in PRIVATE]
        plan += [
            ["bind", str(fs / location[1:]), location]
            for _, location in sorted(zip(holds_folder, PRIVATE, strict=True))
        ]
        return plan

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

    def _launch(self, folder: Path) -> None:
        """Start the instance's PID 1 and wait until it has mounted everything."""
        unshare = proc.which("unshare")
        if unshare is None:
            raise BackendUnavailable(
                "`unshare` is not installed", hint="apt-get install util-linux"
            )
        (folder / "init.json").unlink(missing_ok=True)
        mounts = json.dumps(self._mounts(folder))
        read_end, write_end = os.pipe()
        command = [
            *(unshare, "--mount", "--pid", "--uts", "--fork", "--kill-child"),
            *("--propagation", "private", "--"),
            *(sys.executable, "-I", "-S", str(LAUNCHER), str(folder), folder.name),
            *(str(write_end), mounts),
        ]
        with _LOCK:
            _STARTING.add(folder)
        try:
            with (folder / "console.log").open("ab") as console:
                # Not proc.run: this process outlives the call, and tells it is ready on a pipe.
                child = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=console,
                    stderr=subprocess.STDOUT,
                    env=self._environment(),
                    pass_fds=(write_end,),
                    start_new_session=True,  # nothing sent to the server's group reaches it
                )
            os.close(write_end)
            write_end = -1
            with _LOCK:
                _CHILDREN[folder] = child
            answer = _read_line(read_end, LAUNCH_TIMEOUT)
        finally:
            os.close(read_end)
            if write_end >= 0:
                os.close(write_end)
            with _LOCK:
                _STARTING.discard(folder)
        if answer != "ok":
            output = (folder / "console.log").read_text(errors="replace").strip()
            why = answer or (output.splitlines()[-1] if output else "it exited")
            raise BackendError(f"instance {folder.name} did not start: {why}")

    def _remove(self, folder: Path) -> None:
        """Kill the instance's PID 1 (and so its namespace) and remove its folder; whatever is
        already gone is fine."""
        if not folder.exists():
            return
        init = _init(folder)
        if init is not None:
            _kill(init)
        _reap(folder)
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
        init = _init(folder)
        with _LOCK:
            starting = folder in _STARTING
        native = "running" if init is not None else "starting" if starting else "stopped"
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
            extra={"folder": str(folder), "console": str(folder / "console.log"), "pid": init},
        )


def _init(folder: Path) -> int | None:
    """The host pid of the instance's PID 1, if it runs (the start time tells it from a later
    process given the same pid)."""
    try:
        recorded = json.loads((folder / "init.json").read_text())
    except (OSError, ValueError):
        return None
    pid, start = int(recorded["pid"]), int(recorded["start"])
    return pid if _started_at(pid) == start else None


def _started_at(pid: int) -> int | None:
    """The start time of a live (not zombie) process ``pid``, from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    start = _started_at(pid)
    while _started_at(pid) == start and start is not None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)  # forced into a PID 1 from outside its namespace
    if not _gone(pid, KILL_WAIT):
        raise BackendError(f"process {pid} survived SIGKILL for {KILL_WAIT:g} s")


def _reap(folder: Path) -> None:
    """Collect the exit of the ``unshare`` that ran the instance, if this process started it."""
    with _LOCK:
        child = _CHILDREN.pop(folder, None)
    if child is not None:
        try:
            child.wait(KILL_WAIT)  # PID 1 is gone: unshare follows at once
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _read_line(fd: int, timeout: float) -> str:
    """The first line written on ``fd`` (stripped), '' at end of file or after ``timeout``."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").partition("\n")[0].strip()


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
