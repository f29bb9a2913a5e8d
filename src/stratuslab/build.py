"""The build id: a digest of the code a process runs.

A local server left running by an older checkout must not answer a newer CLI, so the server
reports the digest of the ``stratuslab`` package's files in ``/health`` and the CLI compares
it with its own. The digest covers every file under the package (sources and package data,
not bytecode caches or hidden editor files), with their paths relative to the package: a copy
of the same code has the same build id, a checkout of another commit does not.

The server hashes the files once, at start. The CLI pays for every millisecond before its
first request, and hashing the files costs it ~2 ms (more on a busy host, and it grows with
the code), whereas listing and stat'ing them costs ~0.4 ms; so the CLI keeps the digest in a
cache file keyed by every file's path, size, mtime, ctime and inode. Editing, checking out or
copying a file changes its ctime at least (which no tool can set back), so a stale entry is
never used. A file changed within the last seconds is not cached: file times are coarse (a
few ms), and a second change within the same tick would go unseen, as git's "racy clean"
entries would.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import time
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
LENGTH = 16  # hex digits shown and compared: enough to tell builds apart, short to read
SETTLED_NS = 2_000_000_000  # files unchanged for this long are cached (any fs's time tick)
_now_ns = time.time_ns


def build_id(*, cache: Path | None = None, root: Path = PACKAGE) -> str:
    """The build id of the package at ``root``; with ``cache``, remembered there while no file
    under ``root`` changes."""
    files = _files(root)
    if cache is None:
        return _digest(root, files)
    now = _now_ns()
    # os.stat on strings: Path objects cost ten times as much here (2 ms for the package).
    base = str(root)
    stats = [os.stat(f"{base}/{path}") for path in files]  # noqa: PTH116
    key = "\n".join(
        [base]
        + [
            f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}"
            for path, st in zip(files, stats, strict=True)
        ]
    )
    try:
        recorded, _, recorded_key = cache.read_text().partition("\n")
    except (OSError, UnicodeDecodeError):
        recorded, recorded_key = "", ""
    if recorded and recorded_key == key:
        return recorded
    digest = _digest(root, files)
    if all(st.st_ctime_ns < now - SETTLED_NS for st in stats):
        _write(cache, f"{digest}\n{key}")
    return digest


@functools.cache
def running() -> str:
    """The build id of the code this process loaded, computed on first call. The server calls
    it as it starts, so that a checkout changing the files later does not change its answer."""
    return build_id()


def _files(root: Path) -> list[str]:
    """The package's files, as sorted paths relative to ``root``."""
    found: list[str] = []
    pending = [""]
    while pending:
        relative = pending.pop()
        with os.scandir(f"{root}/{relative}") as entries:
            for entry in entries:
                if entry.name.startswith(".") or entry.name == "__pycache__":
                    continue
                path = f"{relative}/{entry.name}" if relative else entry.name
                if entry.is_dir(follow_symlinks=False):
                    pending.append(path)
                elif entry.is_file() and not entry.name.endswith((".pyc", ".pyo")):
                    found.append(path)
    return sorted(found)


def _digest(root: Path, files: list[str]) -> str:
    digest = hashlib.sha256()
    for path in files:
        data = (root / path).read_bytes()
        digest.update(f"{path}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:LENGTH]


def _write(cache: Path, text: str) -> None:
    """Replace the cache file whole, so that a CLI reading it meanwhile never sees half of it;
    a cache that cannot be written only costs the next CLI the hashing."""
    partial = cache.with_name(f".{cache.name}.{os.getpid()}")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(text)
        partial.replace(cache)
    except OSError:
        with contextlib.suppress(OSError):
            partial.unlink()
