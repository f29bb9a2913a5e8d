"""The build id: the same code gives the same id wherever it is, other code another one."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from stratuslab import build


def _package(root: Path) -> Path:
    package = root / "stratuslab"
    (package / "api").mkdir(parents=True)
    (package / "__init__.py").write_text('__version__ = "0.1.0"\n')
    (package / "api" / "client.py").write_text("def request() -> None: ...\n")
    (package / "imagefiles").mkdir()
    (package / "imagefiles" / "hosts.tpl").write_text("127.0.0.1 localhost\n")
    return package


def test_a_copy_of_the_same_code_has_the_same_id(tmp_path: Path) -> None:
    package = _package(tmp_path / "a")
    copy = tmp_path / "b" / "stratuslab"
    shutil.copytree(package, copy)
    assert build.build_id(root=package) == build.build_id(root=copy)
    assert len(build.build_id(root=package)) == build.LENGTH


def test_changing_adding_or_renaming_a_file_changes_the_id(tmp_path: Path) -> None:
    package = _package(tmp_path)
    before = build.build_id(root=package)
    (package / "api" / "client.py").write_text("def request() -> int: ...\n")
    changed = build.build_id(root=package)
    (package / "imagefiles" / "extra").write_text("x")
    added = build.build_id(root=package)
    (package / "imagefiles" / "extra").rename(package / "imagefiles" / "other")
    renamed = build.build_id(root=package)
    assert len({before, changed, added, renamed}) == 4


def test_bytecode_caches_and_hidden_files_do_not_count(tmp_path: Path) -> None:
    package = _package(tmp_path)
    before = build.build_id(root=package)
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "client.cpython-311.pyc").write_bytes(b"\0\1")
    (package / "api" / "stale.pyc").write_bytes(b"\0\2")
    (package / "api" / ".client.py.swp").write_bytes(b"editor")
    assert build.build_id(root=package) == before


def test_the_cache_answers_while_no_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = _package(tmp_path / "src")
    cache = tmp_path / "cache" / "build-id"
    monkeypatch.setattr(build, "_now_ns", lambda: time.time_ns() + 3600 * 10**9)  # all settled
    real = build.build_id(cache=cache, root=package)
    assert real == build.build_id(root=package)
    # What the cache holds is what it answers, as long as the files' stats are the same ...
    key = cache.read_text().partition("\n")[2]
    cache.write_text(f"from-the-cache\n{key}")
    assert build.build_id(cache=cache, root=package) == "from-the-cache"
    # ... and a file replaced by another of the same size and mtime (a checkout) is seen.
    client = package / "api" / "client.py"
    stat = client.stat()
    other = client.with_name("client.new")
    other.write_text(client.read_text().replace("None", "Nope"))
    os.utime(other, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    other.replace(client)
    assert build.build_id(cache=cache, root=package) == build.build_id(root=package) != real


def test_files_changed_just_now_are_hashed_not_cached(tmp_path: Path) -> None:
    """A second change within the file system's time tick would keep every stat the same."""
    package = _package(tmp_path / "src")
    cache = tmp_path / "cache" / "build-id"
    assert build.build_id(cache=cache, root=package) == build.build_id(root=package)
    assert not cache.exists()


def test_a_cache_that_cannot_be_written_costs_only_the_hashing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = _package(tmp_path / "src")
    monkeypatch.setattr(build, "_now_ns", lambda: time.time_ns() + 3600 * 10**9)  # all settled
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    cache = blocker / "build-id"
    assert build.build_id(cache=cache, root=package) == build.build_id(root=package)
    assert list(tmp_path.iterdir()) == [tmp_path / "src", blocker]


def test_the_running_build_is_the_installed_package() -> None:
    assert build.running() == build.build_id(root=Path(build.__file__).parent)
