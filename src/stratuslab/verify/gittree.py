"""Writing a commit's tree to disk safely: sized before a byte is written, extracted from
``git archive``'s tar member by member, with nothing but plain files, directories and
symbolic links, nothing outside the destination, and nothing written through a link."""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
from pathlib import Path

from stratuslab.errors import Invalid, TooLarge

_MIB = 1024 * 1024
_CHUNK = 64 * 1024


def measure_tree(listing: str, *, max_bytes: int, max_files: int, what: str) -> None:
    """Refuse a tree over the bounds, from ``git ls-tree -r -l -z``'s listing of it."""
    total = count = 0
    for entry in listing.split("\0"):
        meta, tab, _ = entry.partition("\t")
        if not tab:
            continue
        count += 1
        fields = meta.split()
        if len(fields) == 4 and fields[1] == "blob":
            total += int(fields[3])
    if count > max_files:
        raise TooLarge(f"the tree at {what} holds {count} files, over the bound of {max_files}")
    if total > max_bytes:
        raise TooLarge(
            f"the tree at {what} holds {total / _MIB:.1f} MiB, "
            f"over the bound of {max_bytes // _MIB} MiB"
        )


def extract_tar(archive: Path, dest: Path, *, max_bytes: int, max_files: int) -> None:
    """Extract ``archive`` into the empty directory ``dest``; on any failure, ``dest`` is
    emptied again. Refused (Invalid): an absolute name, a '..', a member under a link or a
    file, anything but a file, a directory or a symbolic link. Over the bounds: TooLarge."""
    try:
        with tarfile.open(archive, mode="r:") as tar:
            written = 0
            for count, member in enumerate(tar, start=1):
                if count > max_files:
                    raise TooLarge(f"the tree holds over {max_files} files")
                target = _place(dest, member.name, is_dir=member.isdir())
                if member.isdir():
                    if not _is_real_dir(target):  # made already, as a parent
                        target.mkdir(mode=0o755)
                elif member.issym():
                    target.symlink_to(member.linkname)
                elif member.isreg():
                    written = _write(tar, member, target, written, max_bytes)
                else:
                    raise Invalid(f"{member.name!r} is neither a file, a directory nor a link")
    except BaseException:
        _empty(dest)
        raise


def _place(dest: Path, name: str, *, is_dir: bool) -> Path:
    """Where member ``name`` goes under ``dest``, its parent directories made (real ones)."""
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if name.startswith("/") or ".." in parts or not parts:
        raise Invalid(f"{name!r} would be written outside the tree")
    where = dest
    for part in parts[:-1]:
        where = where / part
        if _is_real_dir(where):
            continue
        if not os.path.lexists(where):
            where.mkdir(mode=0o755)
            continue
        raise Invalid(f"{name!r} lies under {part!r}, which is not a directory")  # a link
    target = where / parts[-1]
    if os.path.lexists(target) and not (is_dir and _is_real_dir(target)):
        raise Invalid(f"{name!r} appears twice in the tree")
    return target


def _is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _write(
    tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path, written: int, limit: int
) -> int:
    source = tar.extractfile(member)
    assert source is not None  # a regular file has content
    mode = 0o755 if member.mode & 0o111 else 0o644
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with source, os.fdopen(fd, "wb") as out:
        while chunk := source.read(_CHUNK):
            written += len(chunk)
            if written > limit:
                raise TooLarge(f"the tree holds over {limit // _MIB} MiB")
            out.write(chunk)
    return written


def _empty(dest: Path) -> None:
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
