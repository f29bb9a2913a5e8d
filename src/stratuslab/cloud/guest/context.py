#!/usr/bin/python3
"""stratus-context: contextualization for StratusLab base images that carry no cloud-init.

The image builder (``cloud/images.py``) installs this file as ``/usr/local/sbin/stratus-context``
and two systemd units that run it once per instance:

- ``stratus-context init`` runs early at first boot (before ssh): it reads the instance's
  vendor-data and user-data from LXD's ``/dev/lxd/sock``, keeps them in the state directory,
  installs the ssh keys and writes the files of a cloud-config document;
- ``stratus-context final`` runs once the network is up: it installs the packages, runs the
  ``runcmd`` entries and the user-data scripts (the first failure ends it), logs to
  ``/var/log/stratus-context.log`` and records the outcome in
  ``/var/lib/stratus-context/final.status`` (JSON ``{"exit_code", "seconds"}``).

Each stage leaves ``<stage>.done`` behind, which the units' ``ConditionPathExists`` reads. The
documents are what ``cloud/context.py`` checked on the user's side: a script (``#!``) or
``#cloud-config`` followed by JSON (the server rewrites YAML as JSON, so that no YAML parser is
needed here) with ``ssh_authorized_keys``, ``write_files``, ``packages``, ``package_update``
and ``runcmd``.

Standard library only, and no other module of the project: this file runs inside the image.
Its processes do not go through ``stratuslab.proc`` for the same reason. Every location is a
field of :class:`Locations`, so that tests run it in a temporary directory.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEYS = ("user.vendor-data", "user.user-data")  # in the order they are applied
USAGE = 64  # EX_USAGE


@dataclass(frozen=True)
class Locations:
    """Where the service reads and writes, in the image and in tests."""

    state_dir: Path = Path("/var/lib/stratus-context")  # the documents, *.done, final.status
    log_file: Path = Path("/var/log/stratus-context.log")
    devlxd: Path = Path("/dev/lxd/sock")  # LXD's API for the instance itself
    root: Path = Path("/")  # what write_files paths are relative to
    home: Path = Path("/root")  # root's home: .ssh/authorized_keys; where commands run


@dataclass(frozen=True)
class Document:
    """A vendor-data or user-data document this service understands."""

    kind: str  # "config" or "script"
    config: Mapping[str, Any]  # the cloud-config ({} for a script)
    script: str  # the script ('' for a cloud-config)


def parse(text: str | None) -> Document | None:
    """The document in ``text``; None for nothing, or for what this service does not run."""
    if not text:
        return None
    first, _, rest = text.partition("\n")
    if first.strip() == "#cloud-config":
        config = json.loads(rest or "{}")
        if not isinstance(config, dict):
            raise ValueError("a cloud-config document must be a JSON object")
        return Document("config", config, "")
    if first.startswith("#!"):
        return Document("script", {}, text)
    return None


class _DevLxd(http.client.HTTPConnection):
    """HTTP to LXD's per-instance API, over its unix socket."""

    def __init__(self, path: Path) -> None:
        super().__init__("lxd", timeout=10)
        self._path = path

    def connect(self) -> None:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.settimeout(10)
        connection.connect(str(self._path))
        self.sock = connection


def devlxd_fetch(devlxd: Path, key: str) -> str | None:
    """The value of one ``user.*`` key of this instance, or None (no such key, or no LXD)."""
    if not devlxd.exists():
        return None
    connection = _DevLxd(devlxd)
    try:
        connection.request("GET", "/1.0/config/" + key)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    return body.decode("utf-8") if response.status == 200 and body else None


class Context:
    """The two stages, over ``locations``; ``fetch(key)`` reads a document (LXD's by default)
    and ``apt`` is the apt-get program."""

    def __init__(
        self,
        locations: Locations | None = None,
        *,
        fetch: Callable[[str], str | None] | None = None,
        apt: str = "apt-get",
    ) -> None:
        self.locations = locations or Locations()
        self._fetch = fetch or (lambda key: devlxd_fetch(self.locations.devlxd, key))
        self.apt = apt

    def init(self) -> int:
        """Keep the documents, install the ssh keys, write the files."""
        state = self.locations.state_dir
        state.mkdir(parents=True, exist_ok=True)
        for key in KEYS:
            text = self._fetch(key)
            if text is None:
                continue
            (state / key).write_text(text)
            document = parse(text)
            if document is not None and document.kind == "config":
                keys = document.config.get("ssh_authorized_keys") or []
                if keys:
                    self.install_keys(keys)
                self.write_files(document.config.get("write_files") or [])
        (state / "init.done").touch()
        return 0

    def final(self) -> int:
        """Install packages, run commands and scripts (stopping at the first failure); record
        the outcome. Returns the exit code of what failed, else 0."""
        started = time.time()
        state = self.locations.state_dir
        code = 0
        for key in KEYS:
            path = state / key
            document = parse(path.read_text() if path.exists() else None)
            if document is None:
                continue
            if document.kind == "config":
                code = code or self._configure(document.config)
            elif code == 0:
                script = state / f"{key}.script"
                script.write_text(document.script)
                script.chmod(0o700)
                code = self.run_logged([str(script)])
        status = {"exit_code": code, "seconds": round(time.time() - started, 3)}
        (state / "final.status").write_text(json.dumps(status) + "\n")
        (state / "final.done").touch()
        return code

    def install_keys(self, keys: Sequence[str]) -> None:
        """Add ``keys`` to root's authorized_keys (each once, those already there kept)."""
        ssh = self.locations.home / ".ssh"
        ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
        authorized = ssh / "authorized_keys"
        present = authorized.read_text().splitlines() if authorized.exists() else []
        lines = present + [key for key in dict.fromkeys(keys) if key not in present]
        authorized.write_text("".join(line + "\n" for line in lines))
        authorized.chmod(0o600)
        self.log(f"installed {len(keys)} ssh key(s) for root")

    def write_files(self, entries: Sequence[Mapping[str, Any]]) -> None:
        for entry in entries:
            path = self.locations.root / str(entry["path"]).lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(str(entry.get("content", "")))
            path.chmod(int(str(entry.get("permissions", "0644")), 8))
            self.log(f"wrote {path}")

    def run_logged(self, command: str | Sequence[str]) -> int:
        """Run ``command`` (a string through the shell, as cloud-init's runcmd does) from root's
        home, its output appended to the log; its exit code."""
        shown = command if isinstance(command, str) else " ".join(command)
        self.log(f"running {shown}")
        env = dict(os.environ, HOME=str(self.locations.home), DEBIAN_FRONTEND="noninteractive")
        with self.locations.log_file.open("a") as handle:
            done = subprocess.run(
                command,
                shell=isinstance(command, str),  # a runcmd string is a shell command, by design
                stdout=handle,
                stderr=subprocess.STDOUT,
                cwd=self.locations.home,
                env=env,
                check=False,
            )
        self.log(f"exit code {done.returncode}")
        return done.returncode

    def log(self, message: str) -> None:
        line = time.strftime("%Y-%m-%dT%H:%M:%S ") + message
        print(line, flush=True)
        with self.locations.log_file.open("a") as handle:
            handle.write(line + "\n")

    def _configure(self, config: Mapping[str, Any]) -> int:
        packages = [str(package) for package in config.get("packages") or []]
        code = 0
        if config.get("package_update") or packages:
            code = self.run_logged([self.apt, "update", "-q"])
        if packages:
            code = code or self.run_logged([self.apt, "install", "-y", "-q", *packages])
        for command in config.get("runcmd") or []:
            runnable = command if isinstance(command, str) else [str(part) for part in command]
            code = code or self.run_logged(runnable)
        return code


def main(argv: Sequence[str], context: Context | None = None) -> int:
    stages: dict[str, Callable[[Context], int]] = {"init": Context.init, "final": Context.final}
    if len(argv) != 2 or argv[1] not in stages:
        print("usage: stratus-context init|final", file=sys.stderr)
        return USAGE
    return stages[argv[1]](context or Context())


if __name__ == "__main__":
    sys.exit(main(sys.argv))
