"""The safe extraction of a commit's tree, on tar archives made to attack it (git archive
never writes these; a crafted repository or a bug might)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from stratuslab.errors import Invalid, TooLarge
from stratuslab.verify.gittree import extract_tar, measure_tree

_MIB = 1024 * 1024


def archive(tmp_path: Path, *members: tuple[tarfile.TarInfo, bytes]) -> Path:
    path = tmp_path / "tree.tar"
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def entry(
    name: str, kind: bytes = tarfile.REGTYPE, *, link: str = "", mode: int = 0o644
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, mode
    return info


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    path = tmp_path / "dest"
    path.mkdir()
    return path


def test_files_directories_and_links_are_written(tmp_path: Path, dest: Path) -> None:
    tar = archive(
        tmp_path,
        (entry("sub/deep/a.txt"), b"a"),  # before its directories' entries: made as parents
        (entry("sub/", tarfile.DIRTYPE, mode=0o775), b""),
        (entry("run.sh", mode=0o775), b"#!/bin/sh\n"),
        (entry("link", tarfile.SYMTYPE, link="sub/deep/a.txt"), b""),
    )
    extract_tar(tar, dest, max_bytes=_MIB, max_files=10)
    assert (dest / "sub" / "deep" / "a.txt").read_text() == "a"
    assert (dest / "run.sh").stat().st_mode & 0o777 == 0o755
    assert (dest / "link").readlink() == Path("sub/deep/a.txt")


@pytest.mark.parametrize(
    ("members", "words"),
    [
        ([(entry("/etc/cron.d/x"), b"x")], "outside the tree"),
        ([(entry("a/../../x"), b"x")], "outside the tree"),
        ([(entry(".."), b"x")], "outside the tree"),
        ([(entry("dev", tarfile.CHRTYPE), b"")], "neither a file"),
        ([(entry("fifo", tarfile.FIFOTYPE), b"")], "neither a file"),
        ([(entry("a"), b"x"), (entry("hard", tarfile.LNKTYPE, link="a"), b"")], "neither a file"),
        ([(entry("a"), b"x"), (entry("a"), b"y")], "appears twice"),
        ([(entry("a"), b"x"), (entry("a/b"), b"y")], "not a directory"),
    ],
)
def test_what_a_tree_cannot_hold_is_refused_and_nothing_is_left(
    tmp_path: Path, dest: Path, members: list[tuple[tarfile.TarInfo, bytes]], words: str
) -> None:
    with pytest.raises(Invalid, match=words):
        extract_tar(archive(tmp_path, *members), dest, max_bytes=_MIB, max_files=10)
    assert list(dest.iterdir()) == []


def test_nothing_is_ever_written_through_a_link(tmp_path: Path, dest: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    tar = archive(
        tmp_path,
        (entry("escape", tarfile.SYMTYPE, link=str(outside)), b""),
        (entry("escape/planted"), b"owned"),
    )
    with pytest.raises(Invalid, match="not a directory"):
        extract_tar(tar, dest, max_bytes=_MIB, max_files=10)
    assert list(outside.iterdir()) == [] and list(dest.iterdir()) == []
    # A link to an existing file, then the same name as a file: not written through either.
    victim = tmp_path / "victim"
    victim.write_text("intact")
    tar = archive(
        tmp_path,
        (entry("f", tarfile.SYMTYPE, link=str(victim)), b""),
        (entry("f"), b"owned"),
    )
    with pytest.raises(Invalid, match="appears twice"):
        extract_tar(tar, dest, max_bytes=_MIB, max_files=10)
    assert victim.read_text() == "intact"


def test_the_bounds_hold_while_extracting(tmp_path: Path, dest: Path) -> None:
    tar = archive(tmp_path, (entry("a"), b"x" * 600_000), (entry("b"), b"y" * 600_000))
    with pytest.raises(TooLarge, match="over 1 MiB"):
        extract_tar(tar, dest, max_bytes=_MIB, max_files=10)
    assert list(dest.iterdir()) == []
    tar = archive(tmp_path, *[(entry(f"f{i}"), b"") for i in range(5)])
    with pytest.raises(TooLarge, match="over 4 files"):
        extract_tar(tar, dest, max_bytes=_MIB, max_files=4)
    assert list(dest.iterdir()) == []


def test_a_tree_is_measured_from_its_listing() -> None:
    listing = (
        "100644 blob 1111111111111111111111111111111111111111  700000\ta.bin\0"
        "100755 blob 2222222222222222222222222222222222222222  700000\tsub/b with\ttab\0"
        "120000 blob 3333333333333333333333333333333333333333      11\tlink\0"
        "160000 commit 4444444444444444444444444444444444444444       -\tvendor/lib\0"
    )
    measure_tree(listing, max_bytes=2 * _MIB, max_files=4, what="abc1234")
    with pytest.raises(TooLarge, match=r"abc1234 holds 1\.3 MiB, over the bound of 1 MiB"):
        measure_tree(listing, max_bytes=_MIB, max_files=4, what="abc1234")
    with pytest.raises(TooLarge, match="4 files, over the bound of 3"):
        measure_tree(listing, max_bytes=2 * _MIB, max_files=3, what="abc1234")
