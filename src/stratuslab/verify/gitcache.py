"""The clone cache: the repositories watches name, fetched into bare mirrors under one
directory and brought up to date incrementally.

A repository URL comes from a user, so it is checked (:func:`check_url`) before git sees it,
and git fetches it with only the transports the URL needs, no configuration but ours, no
prompt, a bound on time and size, and ``--`` before the URL. One fetch at a time per mirror,
across threads and processes (``fcntl.flock``). The queries on a mirror are in ``git.py``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from stratuslab.errors import BackendError, Invalid
from stratuslab.verify.git import Git, Mirror, said

MAX_URL = 2048
MAX_KEY = 16 * 1024
_MIB = 1024 * 1024
_NETWORK = {"git", "http", "https", "ssh"}
_HINT = "git://, http(s)://, ssh:// or user@host:path"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TRANSPORT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*::")  # ext::, fd::, a remote helper
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_HOST = re.compile(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_](?:[A-Za-z0-9._-]*)")
# git's own rule: a colon with no slash before it, and no "://", is ssh's scp-like form.
_SCP = re.compile(r"(?:(?P<user>[^@/:]+)@)?(?P<host>\[[^\]/]*\]|[^/:\[\]@]+):(?P<path>.*)")
_REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")  # forced pushes too
# Objects are checked as they arrive (paths with '..' or '.git', bad trees), except for
# blemishes old git versions wrote that harm nobody.
_FSCK = (
    *("-c", "fetch.fsckObjects=true", "-c", "fetch.fsck.zeroPaddedFilemode=ignore"),
    *("-c", "fetch.fsck.badTimezone=ignore", "-c", "fetch.fsck.missingSpaceBeforeDate=ignore"),
)
_LOCK_POLL_S = 0.05


def check_url(url: str, *, local_allowed: bool) -> str:
    """``url`` stripped, if git may fetch it for a watch: ``git://``, ``http(s)://``,
    ``ssh://`` or ``[user@]host:path``, and only when ``local_allowed`` (a site
    administrator's watch) an absolute local path or ``file://``. Invalid otherwise: another
    transport (``ext::``, ``fd::``), a URL starting with '-', a control character, a host or
    user starting with '-', over 2,048 characters."""
    url = url.strip()
    if not url:
        raise Invalid("the repository URL is empty", hint=_HINT)
    if len(url) > MAX_URL:
        raise Invalid(f"the repository URL is over {MAX_URL} characters", hint=_HINT)
    if _CONTROL.search(url):
        raise Invalid(
            "the repository URL holds a control character", hint="the URL alone, on one line"
        )
    if url.startswith("-"):
        raise Invalid("a repository URL cannot start with '-'", hint=_HINT)
    if _TRANSPORT.match(url):
        raise Invalid(
            f"{url.split('::')[0]}:: is a transport watches may not use", hint=f"use {_HINT}"
        )
    if scheme := _SCHEME.match(url):
        return _check_scheme(url, scheme.group(1).lower(), local_allowed)
    if scp := _SCP.fullmatch(url):
        user, host, path = scp.group("user") or "", scp.group("host"), scp.group("path")
        if user.startswith("-") or not _HOST.fullmatch(host) or not path or path.startswith("-"):
            raise Invalid(f"{_shown(url)} is not a valid user@host:path", hint=_HINT)
        return url
    if not local_allowed:
        raise Invalid(
            f"{_shown(url)} is a local path: only a site administrator may watch one",
            hint=f"use {_HINT}",
        )
    if not url.startswith("/"):
        raise Invalid(f"{_shown(url)} is not an absolute path", hint="start it with '/'")
    return url


def is_local(url: str) -> bool:
    """Whether git reads ``url`` (a checked one) from this machine's file system."""
    return url.lower().startswith("file://") or url.startswith("/")


def shown(url: str) -> str:
    """``url`` as messages show it: without a password."""
    return _shown(url)


class Repositories:
    """Bare mirrors under ``cache_dir``, one per URL (named by the URL's sha256), fetched
    with a timeout of ``timeout_s`` per git command, and none over ``max_mib`` MiB."""

    def __init__(self, cache_dir: Path, *, timeout_s: float = 300.0, max_mib: int = 2048) -> None:
        self.cache_dir = cache_dir
        self.timeout_s = timeout_s
        self.max_mib = max_mib
        self._keys = cache_dir / ".keys"
        home = cache_dir / ".home"
        for private in (cache_dir, home, self._keys):
            private.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.git = Git(home, known_hosts=cache_dir / "known_hosts", timeout_s=timeout_s)

    def path_for(self, url: str) -> Path:
        return self.cache_dir / hashlib.sha256(url.strip().encode()).hexdigest()

    def mirror(self, url: str) -> Mirror | None:
        """The mirror of ``url`` as last fetched, without fetching; None if never fetched."""
        path = self.path_for(url)
        return Mirror(path, self.git, shown(url.strip())) if path.is_dir() else None

    def fetch(self, url: str, *, deploy_key: str | None = None) -> Mirror:
        """Bring the mirror of ``url`` up to date (the first time, clone it) and return it.

        Every branch and tag as the remote has them now: forced updates taken, deleted
        branches removed; the mirror changes all at once or not at all (``--atomic``). A
        first fetch that fails leaves nothing behind; a later one leaves the mirror as it
        was. ``deploy_key``, an ssh private key, is used for this fetch only. BackendError,
        with git's words and the URL, when the repository cannot be fetched, the fetch
        times out, or the mirror is over ``max_mib`` (it is then removed)."""
        url = check_url(url, local_allowed=True)
        path = self.path_for(url)
        with self._locked(path, url), self._key_file(deploy_key) as key:
            if path.is_dir() and not (path / "HEAD").is_file():  # a clone cut short: anew
                shutil.rmtree(path)
            if path.is_dir():
                self._fetch_into(path, url, key)
            else:
                self._clone(path, url, key)
            size = _size(path)
            if size > self.max_mib * _MIB:
                shutil.rmtree(path, ignore_errors=True)
                raise BackendError(
                    f"{shown(url)} is {size / _MIB:.0f} MiB, over the bound of {self.max_mib} "
                    "MiB: its clone is removed",
                    hint="the site's bound on a watched repository",
                )
            (path / "stratus-url").write_text(shown(url) + "\n")  # for whoever reads the cache
        return Mirror(path, self.git, shown(url))

    def forget(self, url: str) -> None:
        """Remove the mirror of ``url`` (its watch is gone); nothing if there is none."""
        path = self.path_for(url)
        with self._locked(path, url):
            shutil.rmtree(path, ignore_errors=True)

    # Helpers.

    def _clone(self, path: Path, url: str, key: Path | None) -> None:
        fresh = Path(tempfile.mkdtemp(dir=self.cache_dir, prefix=f".new-{path.name[:12]}-"))
        try:
            done = self.git.run(
                ["init", "--quiet", "--bare", "--initial-branch=main", "--", str(fresh)]
            )
            if done.returncode != 0:
                raise BackendError(f"cannot make a mirror of {shown(url)}: {said(done)}")
            self._fetch_into(fresh, url, key)
            fresh.replace(path)
        except BaseException:
            shutil.rmtree(fresh, ignore_errors=True)
            raise

    def _fetch_into(self, path: Path, url: str, key: Path | None) -> None:
        protocols = ":".join(sorted(_NETWORK | ({"file"} if is_local(url) else set())))
        args = [*_FSCK, "fetch", "--quiet", "--prune", "--atomic", "--no-write-fetch-head"]
        try:
            done = self.git.run(
                [*args, "--", url, *_REFSPECS],
                git_dir=path,
                protocols=protocols,
                ssh_key=key,
                file_limit=self.max_mib * _MIB,
            )
        except BackendError as exc:  # timed out
            _clean_packs(path)
            raise BackendError(f"cannot fetch {shown(url)}: {exc.message}", hint=exc.hint) from exc
        if done.returncode == 0:
            return
        _clean_packs(path)
        words = _redacted(said(done), url)
        if "signal 25" in words or "File size limit" in words:  # prlimit's bound on a file
            words = f"over the bound of {self.max_mib} MiB ({words})"
        raise BackendError(f"cannot fetch {shown(url)}: {words}")

    @contextlib.contextmanager
    def _locked(self, path: Path, url: str) -> Iterator[None]:
        """Hold the mirror's lock (a file beside it, so that removing the mirror keeps it),
        waiting at most ``timeout_s`` for another fetch to end."""
        deadline = time.monotonic() + self.timeout_s
        fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise BackendError(
                            f"another fetch of {shown(url)} has held it for "
                            f"over {self.timeout_s:g} s"
                        ) from None
                    time.sleep(_LOCK_POLL_S)
            yield
        finally:
            os.close(fd)  # releases the lock

    @contextlib.contextmanager
    def _key_file(self, deploy_key: str | None) -> Iterator[Path | None]:
        """The deploy key in a file only we can read, for as long as the fetch lasts."""
        if deploy_key is None:
            yield None
            return
        text = deploy_key.strip().replace("\r\n", "\n") + "\n"
        if len(text) > MAX_KEY or "PRIVATE KEY-----" not in text:
            raise Invalid("the deploy key is not an ssh private key", hint="the whole PEM text")
        fd, name = tempfile.mkstemp(dir=self._keys, prefix="key-")  # 0600
        try:
            with os.fdopen(fd, "w") as out:
                out.write(text)
            yield Path(name)
        finally:
            Path(name).unlink(missing_ok=True)


def _check_scheme(url: str, scheme: str, local_allowed: bool) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
        host, user, _ = parts.hostname, parts.username, parts.port
    except ValueError as exc:  # a port that is not a number, a bracket left open
        raise Invalid(f"{_shown(url)} is not a valid URL: {exc}", hint=_HINT) from None
    if scheme == "file":
        if not local_allowed:
            raise Invalid(
                f"{_shown(url)} is on this machine: only a site administrator may watch one",
                hint=f"use {_HINT}",
            )
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise Invalid(f"{_shown(url)} is not a local file URL", hint="file:///absolute/path")
        return url
    if scheme not in _NETWORK:
        raise Invalid(f"{scheme}:// is not a transport watches may use", hint=f"use {_HINT}")
    if not host or host.startswith("-") or (user or "").startswith("-"):
        raise Invalid(f"{_shown(url)} has no valid host", hint=_HINT)
    return url


def _shown(url: str) -> str:
    """``url`` with its password, if it carries one, replaced by ***."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, path = rest.partition("/")
    if "@" not in netloc or ":" not in netloc.rpartition("@")[0]:
        return url
    userinfo, _, host = netloc.rpartition("@")
    return f"{scheme}://{userinfo.partition(':')[0]}:***@{host}{slash}{path}"


def _clean_packs(path: Path) -> None:
    for leftover in (path / "objects" / "pack").glob("tmp_*"):  # a pack cut short
        leftover.unlink(missing_ok=True)


def _redacted(words: str, url: str) -> str:
    """``words`` without the password ``url`` carries, wherever git quoted it."""
    with contextlib.suppress(ValueError):
        if password := urllib.parse.urlsplit(url).password:
            words = words.replace(url, shown(url)).replace(password, "***")
    return words


def _size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += (Path(root) / name).lstat().st_size
    return total
