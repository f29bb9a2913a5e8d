from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from stratuslab.cli.deploy import unpack
from stratuslab.errors import Invalid


def archive(*entries: tuple[str, bytes | None, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data, kind in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data or b"")
                tar.addfile(info, io.BytesIO(data or b""))
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            else:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
    return buffer.getvalue()


def test_plain_files_and_folders_are_unpacked(tmp_path: Path) -> None:
    unpack(
        archive(
            ("logs", None, "dir"), ("logs/a.log", b"hello", "file"), ("report.txt", b"PASS", "file")
        ),
        tmp_path,
    )
    assert (tmp_path / "logs/a.log").read_text() == "hello"
    assert (tmp_path / "report.txt").read_text() == "PASS"


def test_entries_escaping_the_folder_are_refused(tmp_path: Path) -> None:
    with pytest.raises(Invalid, match="points outside"):
        unpack(archive(("../../evil", b"x", "file")), tmp_path / "in")
    assert not (tmp_path / "evil").exists()


def test_links_are_skipped(tmp_path: Path) -> None:
    unpack(archive(("passwd", None, "symlink"), ("ok.txt", b"1", "file")), tmp_path)
    assert not (tmp_path / "passwd").exists() and (tmp_path / "ok.txt").exists()
