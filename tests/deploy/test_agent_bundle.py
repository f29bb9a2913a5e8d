"""The agent zipapp: what it holds, that it is the same bytes every time, and that a node's
Python uses its bytecode (or, being another Python, the sources) whatever the file times say."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from stratuslab.deploy import agent_bundle
from stratuslab.deploy.agent_bundle import PACKAGE, build, bundle


def test_it_holds_every_module_of_the_agent_as_source_and_bytecode() -> None:
    modules = sorted(agent_bundle.agent_sources())
    assert "__main__.py" in modules and "tools.py" in modules and "protocol.py" in modules
    with zipfile.ZipFile(io.BytesIO(bundle().data)) as archive:
        names = archive.namelist()
        expected = ["__main__.py", *(f"{PACKAGE}/{name}" for name in modules)]
        assert names == [name + suffix for name in sorted(expected) for suffix in ("", "c")]
        for info in archive.infolist():
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert info.compress_type == zipfile.ZIP_STORED  # a tool imports no zlib
        source = archive.read(f"{PACKAGE}/tools.py")
        assert source == (Path(agent_bundle.__file__).parent / "agent" / "tools.py").read_bytes()
        pyc = archive.read(f"{PACKAGE}/tools.pyc")
    assert pyc[:4] == importlib.util.MAGIC_NUMBER
    assert int.from_bytes(pyc[4:8], "little") == 0b01  # hash-based, unchecked (PEP 552)
    assert pyc[8:16] == importlib.util.source_hash(source)
    assert bundle().data.startswith(b"#!/usr/bin/env python3\n")


def test_the_same_sources_make_the_same_bytes() -> None:
    sources = agent_bundle.agent_sources()
    first, second = build(sources), build(dict(reversed(sources.items())))
    assert first.data == second.data == bundle().data
    assert first.sha256 == hashlib.sha256(first.data).hexdigest() == agent_bundle.sha256()
    changed = build({**sources, "tools.py": sources["tools.py"] + b"\n# changed\n"})
    assert changed.sha256 != first.sha256


def test_the_bytecode_does_not_depend_on_what_else_the_process_holds() -> None:
    """marshal marks an object shared when anything else refers to it, and writes a string
    shared by the whole process (one character) as interned when anything interned it: neither
    holding on to the constants of a code object nor interning one may change its bytecode."""
    code = compile('mark = "\\x1f"\n' + 'print("a long constant", mark)\n', "m.py", "exec")
    before = agent_bundle.marshalled(code)
    held = [*code.co_consts, *code.co_consts]
    sys.intern("\x1f")
    assert agent_bundle.marshalled(code) == before
    del held


@pytest.mark.spawns
def test_another_server_process_builds_the_same_bytes() -> None:
    """A server restarted (or another one on the same store) must serve what the user-data of
    nodes started earlier expects."""
    program = "from stratuslab.deploy import agent_bundle; print(agent_bundle.sha256())"
    for extra in ("", "import fastapi, sqlalchemy; "):
        done = subprocess.run(
            [sys.executable, "-c", extra + program],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert done.stdout.strip() == agent_bundle.sha256()


def _rebuilt(path: Path, change: Callable[[str, bytes], bytes]) -> Path:
    """The bundle written to ``path`` with every entry passed through ``change``."""
    with zipfile.ZipFile(io.BytesIO(bundle().data)) as archive:
        entries = {name: change(name, archive.read(name)) for name in archive.namelist()}
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(2001, 2, 3, 4, 5, 6)), data)
    return path


def _loaded_from(zipapp: Path, *options: str) -> dict[str, str]:
    """Run ``ss-random`` from ``zipapp`` (Python started with ``options``), then import the
    agent's modules from it as a launcher does: module -> the entry its code came from."""
    done = subprocess.run(
        [sys.executable, *options, str(zipapp), "ss-random", "-s", "6"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and len(done.stdout.strip()) == 6, done.stderr[-2000:]
    modules = [f"{PACKAGE}.{name}" for name in ("tools", "client", "wire", "__main__")]
    program = (
        f"import importlib, sys; sys.path.insert(0, {str(zipapp)!r})\n"
        f"for name in {modules!r}: print(name, importlib.import_module(name).__file__)"
    )
    done = subprocess.run(
        [sys.executable, *options, "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    prefix = f"{zipapp}/{PACKAGE}/"
    files = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert all(file.startswith(prefix) for file in files.values()), files
    return {name: file[len(prefix) :] for name, file in files.items()}


@pytest.mark.spawns
def test_the_bytecode_is_used_whatever_the_sources_and_their_times_say(tmp_path: Path) -> None:
    """Sources that do not even run, with other file times: the bytecode alone is imported."""

    def broken_sources(name: str, data: bytes) -> bytes:
        return b"raise SystemExit(99)\n" if name.endswith(".py") else data

    loaded = _loaded_from(_rebuilt(tmp_path / "agent.pyz", broken_sources))
    assert set(loaded.values()) == {"tools.pyc", "client.pyc", "wire.pyc", "__main__.pyc"}


@pytest.mark.spawns
def test_a_node_with_another_python_runs_the_sources(tmp_path: Path) -> None:
    def other_magic(name: str, data: bytes) -> bytes:
        return b"\x00\x00\r\n" + data[4:] if name.endswith(".pyc") else data

    loaded = _loaded_from(_rebuilt(tmp_path / "agent.pyz", other_magic))
    assert set(loaded.values()) == {"tools.py", "client.py", "wire.py", "__main__.py"}


@pytest.mark.spawns
def test_the_bytecode_passes_a_python_that_checks_every_hash(tmp_path: Path) -> None:
    zipapp = tmp_path / agent_bundle.NAME
    zipapp.write_bytes(bundle().data)
    loaded = _loaded_from(zipapp, "--check-hash-based-pycs", "always")
    assert set(loaded.values()) == {"tools.pyc", "client.pyc", "wire.pyc", "__main__.pyc"}
