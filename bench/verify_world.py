"""What the continuous-verification benchmarks share: an installation of their own (data
directory, server port, instance prefix) whose server mails a real SMTP server on loopback
(aiosmtpd), a real git daemon serving a bare repository, and a work clone that commits to it.

Everything is under one temporary directory, removed at the end with the server stopped and
every instance with the prefix deleted, even on Ctrl-C (``World`` is a context manager).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

from common import ROOT, BenchError, free_port, guarded, log, publish, run

GIT_DAEMON = "/usr/lib/git-core/git-daemon"


class Mails:
    """An aiosmtpd handler that notes when each message arrived, and its subject and text."""

    def __init__(self) -> None:
        self.arrived: list[tuple[float, str, str]] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(bytes(envelope.content), policy=policy.default)
        body = message.get_body(("plain",))  # type: ignore[attr-defined]
        with self._lock:
            self.arrived.append(
                (time.monotonic(), str(message["Subject"]), str(body.get_content() if body else ""))
            )
        return "250 OK"

    def wait_for(self, needle: str, timeout: float) -> float:
        """When a mail whose subject holds ``needle`` arrived (monotonic clock)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for at, subject, _ in self.arrived:
                    if needle in subject:
                        return at
            time.sleep(0.05)
        raise BenchError(f"no mail about {needle!r} within {timeout:.0f} s")


class World:
    def __init__(self, name: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=ROOT / "bench"))
        self.prefix = f"bench-{secrets.token_hex(3)}"
        self.mails = Mails()
        self._smtp: Any = None
        self._daemon: subprocess.Popen[bytes] | None = None
        self.git_port = free_port()
        self.bare = self.root / "repos" / "app.git"
        self.work = self.root / "work"
        self.url = f"git://127.0.0.1:{self.git_port}/app.git"
        self.env: dict[str, str] = {}
        self._tick = 1_800_000_000

    def __enter__(self) -> World:
        from aiosmtpd.controller import Controller

        self._smtp = Controller(self.mails, hostname="127.0.0.1", port=free_port())
        self._smtp.start()
        home = self.root / "home"
        home.mkdir()
        self.env = {
            **os.environ,
            "HOME": str(home),
            "STRATUS_CONFIG": str(self.root / "config.toml"),
            "STRATUS_DATA_DIR": str(self.root / "data"),
            "STRATUS_CACHE_DIR": str(self.root / "cache"),
            "STRATUS_INSTANCE_PREFIX": self.prefix,
            "STRATUS_SERVER_PORT": str(free_port()),
            "STRATUS_SMTP_HOST": "127.0.0.1",
            "STRATUS_SMTP_PORT": str(self._smtp.port),
            "STRATUS_WATCH_MIN_EVERY_S": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
        }
        self.env.pop("STRATUS_SERVER_URL", None)
        self.bare.parent.mkdir(parents=True)
        self.git("init", "--quiet", "--bare", "-b", "main", str(self.bare), cwd=self.root)
        self.git("clone", "--quiet", str(self.bare), str(self.work), cwd=self.root)
        self.git("checkout", "--quiet", "-b", "main")
        self._daemon = subprocess.Popen(
            [GIT_DAEMON, "--export-all", f"--base-path={self.bare.parent}", "--reuseaddr",
             "--listen=127.0.0.1", f"--port={self.git_port}", str(self.bare.parent)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        self.stratus("cloud", "init", "-o", "json", timeout=600)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stratus("server", "stop", check=False, timeout=120)
        self._delete_instances()
        if self._daemon is not None:
            os.killpg(self._daemon.pid, 15)
            self._daemon.wait(10)
        if self._smtp is not None:
            self._smtp.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- git --------------------------------------------------------------------------------

    def git(self, *args: str, cwd: Path | None = None, author: str = "Alice") -> str:
        self._tick += 60
        stamp = f"{self._tick} +0000"
        env = {**self.env, "GIT_AUTHOR_NAME": author, "GIT_COMMITTER_NAME": author}
        env |= {"GIT_AUTHOR_EMAIL": f"{author.lower()}@example.org", "GIT_AUTHOR_DATE": stamp}
        env |= {"GIT_COMMITTER_EMAIL": f"{author.lower()}@example.org"}
        env |= {"GIT_COMMITTER_DATE": stamp, "HOME": str(self.root)}
        done = subprocess.run(
            ["git", *args], cwd=cwd or self.work, env=env, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise BenchError(f"git {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout.strip()

    def commit(self, subject: str, files: dict[str, str], *, author: str = "Alice") -> str:
        for name, text in files.items():
            path = self.work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        self.git("add", "--all")
        self.git("commit", "--quiet", "--allow-empty", "-m", subject, author=author)
        return self.git("rev-parse", "HEAD")

    def push(self) -> None:
        self.git("push", "--quiet", "origin", "main")

    # -- stratus ----------------------------------------------------------------------------

    def stratus(self, *args: str, check: bool = True, timeout: float = 300) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "stratuslab", *args],
            env=self.env, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise BenchError(f"stratus {' '.join(args)}: {done.stderr.strip()[-500:]}")
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.stratus(*args, "-o", "json"))

    def verdict(self, watch: str, sha: str, timeout: float) -> dict[str, Any]:
        """The verification of ``sha`` once it is done."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for row in self.json("watch", "history", watch, "--limit", "1000"):
                if row["commit"] == sha and row["phase"] == "done":
                    return row  # type: ignore[no-any-return]
            time.sleep(0.5)
        raise BenchError(f"{sha[:7]} was not verified within {timeout:.0f} s")

    def _delete_instances(self) -> None:
        listed = run(["lxc", "list", "--format", "json"], timeout=60, check=False)
        for name in [i["name"] for i in json.loads(listed.stdout or "[]")]:
            if name.startswith(self.prefix):
                log(f"deleting leftover {name}")
                run(["lxc", "delete", "--force", name], timeout=120, check=False)


def measured(
    name: str,
    measure: Callable[[World], dict[str, Any]],
    table: Callable[[dict[str, Any]], str],
    settings: dict[str, Any],
    *,
    json_only: bool,
) -> int:
    """Run ``measure`` in a world of its own (removed whatever happens, Ctrl-C included) and
    publish what it measured as bench/results/NAME-<time>.json; the exit code."""
    from datetime import UTC, datetime

    started = datetime.now(UTC)
    world = World(name.replace("_", "-"))
    entered = False

    def work() -> dict[str, Any]:
        nonlocal entered
        world.__enter__()
        entered = True
        return measure(world)

    def cleanup() -> None:
        if entered:
            world.__exit__(None, None, None)

    code, results = guarded(work, cleanup)
    if code or results is None:
        return code
    return publish(name, started, world.prefix, settings, results, table, json_only=json_only)
