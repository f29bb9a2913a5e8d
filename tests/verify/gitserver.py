"""A real git server on loopback, for tests: git's own ``git daemon`` (git://) and ``git
http-backend`` (smart HTTP, behind a small CGI server in a thread), serving bare repositories
made with real commits.

::

    with GitServer(tmp_path) as server:
        repo = server.create("app")               # bare app.git, and a work clone
        first = repo.commit("one", {"a.txt": "1"}, author="Alice")
        repo.push()
        repo.git_url, repo.http_url                # what the code under test fetches

A test that uses it starts processes: mark it ``@pytest.mark.spawns``. Nothing here talks to
anything but 127.0.0.1; ``stop`` kills the daemon's process group by its id.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

NEEDED = "git daemon and git http-backend are part of Debian's git: apt-get install -y git"
EPOCH = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)
_TIMEOUT = 30.0


def free_port() -> int:
    """A loopback TCP port nothing listens on (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GitServer:
    """``git daemon`` and smart HTTP over ``root/repos``, each on a free loopback port."""

    def __init__(self, root: Path, *, http: bool = True) -> None:
        self.root = root
        self.repos = root / "repos"
        self.work = root / "work"
        self.home = root / "home"
        for path in (self.repos, self.work, self.home):
            path.mkdir(parents=True, exist_ok=True)
        self.port = 0
        self.http_port = 0
        self._http = http
        self._daemon: subprocess.Popen[bytes] | None = None
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._names = itertools.count(1)
        self._clock = itertools.count(0)

    def __enter__(self) -> GitServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> GitServer:
        if not os.path.exists(self._git_core("git-daemon")):
            raise RuntimeError(f"no git daemon here: {NEEDED}")
        self._start_daemon()
        if self._http:
            if not os.path.exists(self._git_core("git-http-backend")):
                raise RuntimeError(f"no git http-backend here: {NEEDED}")
            self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
            self._httpd.daemon_threads = True
            self.http_port = int(self._httpd.server_address[1])
            self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._daemon is not None:
            _kill_group(self._daemon)
            self._daemon = None
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            if self._thread is not None:
                self._thread.join(_TIMEOUT)
            self._httpd = None

    def git_url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}.git"

    def http_url(self, name: str) -> str:
        assert self._http, "this server has no HTTP"
        return f"http://127.0.0.1:{self.http_port}/{name}.git"

    def create(self, name: str | None = None, *, branch: str = "main") -> Repo:
        """A new bare repository ``name``.git (a unique name when None) and a work clone of
        it, on ``branch``, with no commit yet."""
        name = name or f"repo{next(self._names)}"
        bare = self.repos / f"{name}.git"
        self.git("init", "--quiet", "--bare", f"--initial-branch={branch}", str(bare))
        work = self.work / name
        self.git("init", "--quiet", f"--initial-branch={branch}", str(work))
        self.git("-C", str(work), "remote", "add", "origin", str(bare))
        return Repo(self, name, bare, work)

    def git(
        self, *args: str, env: Mapping[str, str] | None = None, input: str | None = None
    ) -> str:
        """Run git as the repositories' owner (no user configuration), ``input`` on its
        stdin; its stdout."""
        full = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "LC_ALL": "C",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            **(env or {}),
        }
        done = subprocess.run(
            ["git", *args], env=full, input=input, capture_output=True, text=True,
            timeout=_TIMEOUT, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def tick(self) -> datetime:
        """The next commit's date: a minute after the one before."""
        return EPOCH + timedelta(minutes=next(self._clock))

    def _git_core(self, program: str) -> str:
        exec_path = subprocess.run(
            ["git", "--exec-path"], capture_output=True, text=True, check=True, timeout=_TIMEOUT
        ).stdout.strip()
        return os.path.join(exec_path, program)

    def _start_daemon(self) -> None:
        for _ in range(5):  # another process may take the port between the probe and the bind
            self.port = free_port()
            daemon = subprocess.Popen(
                ["git", "daemon", "--reuseaddr", "--export-all", "--informative-errors",
                 "--listen=127.0.0.1", f"--port={self.port}", f"--base-path={self.repos}",
                 str(self.repos)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home),
                     "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null"},
                process_group=0,
            )  # fmt: skip
            deadline = time.monotonic() + 10
            while daemon.poll() is None and time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                except OSError:
                    time.sleep(0.02)
                    continue
                self._daemon = daemon
                return
            _kill_group(daemon)
        raise RuntimeError("git daemon did not start listening on 127.0.0.1")


class Repo:
    """A bare repository the server serves, and the work clone its commits are made in."""

    def __init__(self, server: GitServer, name: str, bare: Path, work: Path) -> None:
        self.server = server
        self.name = name
        self.bare = bare
        self.work = work

    @property
    def git_url(self) -> str:
        return self.server.git_url(self.name)

    @property
    def http_url(self) -> str:
        return self.server.http_url(self.name)

    def git(self, *args: str, env: Mapping[str, str] | None = None) -> str:
        return self.server.git("-C", str(self.work), *args, env=env)

    def commit(
        self,
        subject: str,
        files: Mapping[str, str | bytes | None] | None = None,
        *,
        author: str = "Alice",
        email: str | None = None,
        when: datetime | None = None,
        links: Mapping[str, str] | None = None,
        executable: Sequence[str] = (),
    ) -> str:
        """Commit on the current branch: ``files`` written (None: removed), ``links`` made
        symbolic links (name -> target), by ``author`` at ``when`` (the next tick when
        None); its sha. Not pushed."""
        for name, content in (files or {}).items():
            path = self.work / name
            if content is None:
                self.git("rm", "--quiet", "--", name)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
            path.chmod(0o755 if name in executable else 0o644)
        for name, target in (links or {}).items():
            path = self.work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)
            path.symlink_to(target)
        self.git("add", "--all")
        when = when or self.server.tick()
        email = email or f"{author.split()[0].lower()}@example.org"
        stamp = f"{int(when.timestamp())} +0000"
        env = {
            "GIT_AUTHOR_NAME": author,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_AUTHOR_DATE": stamp,
            "GIT_COMMITTER_NAME": author,
            "GIT_COMMITTER_EMAIL": email,
            "GIT_COMMITTER_DATE": stamp,
        }
        self.git("commit", "--quiet", "--allow-empty", "-m", subject, env=env)
        return self.rev()

    def rev(self, rev: str = "HEAD") -> str:
        return self.git("rev-parse", "--verify", f"{rev}^{{commit}}").strip()

    def checkout(self, branch: str, *, new: bool = False, start: str | None = None) -> None:
        if new:
            self.git("checkout", "--quiet", "-b", branch, *([start] if start else []))
        else:
            self.git("checkout", "--quiet", branch)

    def merge(self, branch: str, subject: str, *, author: str = "Alice") -> str:
        """Merge ``branch`` into the current one with a merge commit; its sha."""
        stamp = f"{int(self.server.tick().timestamp())} +0000"
        email = f"{author.split()[0].lower()}@example.org"
        env = {"GIT_AUTHOR_NAME": author, "GIT_AUTHOR_EMAIL": email, "GIT_AUTHOR_DATE": stamp}
        env |= {"GIT_COMMITTER_NAME": author, "GIT_COMMITTER_EMAIL": email}
        env |= {"GIT_COMMITTER_DATE": stamp}
        self.git("merge", "--quiet", "--no-ff", "-m", subject, branch, env=env)
        return self.rev()

    def reset(self, rev: str) -> None:
        """Move the current branch to ``rev`` (then ``push(force=True)`` rewrites history)."""
        self.git("reset", "--quiet", "--hard", rev)

    def push(self, *branches: str, force: bool = False) -> None:
        """Push ``branches`` (the current one when none) to the bare repository."""
        names = list(branches) or [self.git("rev-parse", "--abbrev-ref", "HEAD").strip()]
        self.git("push", "--quiet", *(["--force"] if force else []), "origin", *names)

    def delete(self, branch: str) -> None:
        """Delete ``branch`` from the bare repository."""
        self.git("push", "--quiet", "origin", "--delete", branch)


def _handler(server: GitServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        """Each request handed to ``git http-backend`` as CGI (RFC 3875) would."""

        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:
            self._backend()

        def do_POST(self) -> None:
            self._backend()

        def log_message(self, format: str, *args: object) -> None:
            return  # quiet

        def _backend(self) -> None:
            path, _q, query = self.path.partition("?")
            body = self._body()
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(server.home),
                "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_CONFIG_GLOBAL": "/dev/null",
                "GIT_PROJECT_ROOT": str(server.repos),
                "GIT_HTTP_EXPORT_ALL": "1",
                "GATEWAY_INTERFACE": "CGI/1.1",
                "SERVER_PROTOCOL": "HTTP/1.0",
                "REQUEST_METHOD": self.command,
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "REMOTE_ADDR": self.client_address[0],
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
            }
            for header in ("Content-Encoding", "Git-Protocol"):
                if value := self.headers.get(header):
                    env["HTTP_" + header.upper().replace("-", "_")] = value
            done = subprocess.run(
                ["git", "http-backend"], input=body, env=env, capture_output=True,
                timeout=_TIMEOUT, check=False,
            )  # fmt: skip
            head, sep, content = done.stdout.partition(b"\r\n\r\n")
            if not sep:
                head, sep, content = done.stdout.partition(b"\n\n")
            headers = [line.split(b":", 1) for line in head.splitlines() if b":" in line]
            status = next((v.strip() for k, v in headers if k.lower() == b"status"), b"200 OK")
            code, _sp, reason = status.decode().partition(" ")
            self.send_response(int(code), reason)
            for key, raw in headers:
                if key.lower() != b"status":
                    self.send_header(key.decode(), raw.strip().decode())
            self.end_headers()
            self.wfile.write(content)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline().strip():  # trailers
                    pass
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    return Handler


def _kill_group(child: subprocess.Popen[bytes]) -> None:
    """End the daemon and the children serving connections, by the group's id."""
    try:
        os.killpg(child.pid, signal.SIGTERM)
        child.wait(5)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(5)
