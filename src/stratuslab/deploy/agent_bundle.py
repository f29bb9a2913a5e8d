"""The node agent as nodes get it: one zipapp, built here, byte for byte the same every time.

``stratus-agent.pyz`` holds the package ``stratuslab.deploy.agent`` as the top-level package
``stratus_agent`` (its modules import one another only relatively, so they work under either
name), and a ``__main__.py`` that hands the command line to ``stratus_agent.__main__.main``::

    #!/usr/bin/env python3          (a zipapp may start with a line of its own)
    __main__.py   __main__.pyc
    stratus_agent/__init__.py   stratus_agent/__init__.pyc   ... every module, both ways

Why bytecode, and why this kind: zipimport never writes bytecode, so without it every tool call
would compile its modules again (~15 ms). zipimport tries ``name.pyc`` before ``name.py`` beside
it; a pyc whose magic number is not the running Python's is skipped for the source, so a node
with another Python still runs the agent, only slower. A timestamp pyc would be checked against
the DOS time of the source entry, read in the node's local time zone; so these are unchecked
hash-based pycs (PEP 552): valid for the Python that made them wherever and whenever they are
read, and made from nothing but the sources.

Deterministic, so that every server process (a restarted one, or another one on the same store)
builds the same bytes and the digest in a node's user-data still holds: entries are stored (not
compressed, which also spares a tool importing zlib) in a fixed order with a fixed time and
mode, and the bytecode is marshalled so that nothing else the process holds shows in it
(:func:`marshalled`). It is built once per process, on first use.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import marshal
import sys
import zipfile
from dataclasses import dataclass
from importlib import resources
from types import CodeType

PACKAGE = "stratus_agent"  # the agent package's name inside the zipapp
NAME = "stratus-agent.pyz"
NODE_PATH = f"/opt/stratus/{NAME}"  # where the bootstrap puts it on a node
SHEBANG = b"#!/usr/bin/env python3\n"
ENTRY = f"""\
# {NAME}: the StratusLab node agent (docs/agent.md). python3 {NAME} COMMAND ..., or a link
# to it named after a tool (ss-get ...): stratus_agent/__main__.py says which commands there are.
import sys

from {PACKAGE}.__main__ import main

sys.exit(main())
""".encode()
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can say
_MODE = 0o100644 << 16  # a regular file, rw-r--r--, in the Unix half of external_attr
_UNCHECKED_HASH_PYC = (0b01).to_bytes(4, "little")  # PEP 552 flags: hash-based, not checked


@dataclass(frozen=True)
class Bundle:
    data: bytes
    sha256: str  # hex digest of data

    @property
    def sha256_line(self) -> str:
        """What ``sha256sum`` prints for the file, as served beside it."""
        return f"{self.sha256}  {NAME}\n"


def agent_sources() -> dict[str, bytes]:
    """The agent package's modules: file name -> source, as installed with this server."""
    package = resources.files("stratuslab.deploy.agent")
    return {
        entry.name: entry.read_bytes()
        for entry in package.iterdir()
        if entry.name.endswith(".py") and entry.is_file()
    }


def build(sources: dict[str, bytes]) -> Bundle:
    """The zipapp of ``sources`` (file name -> source of each module of the package)."""
    entries = {"__main__.py": ENTRY}
    entries.update({f"{PACKAGE}/{name}": source for name, source in sources.items()})
    buffer = io.BytesIO()
    buffer.write(SHEBANG)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name in sorted(entries):
            source = entries[name]
            _add(archive, name, source)
            _add(archive, name + "c", bytecode(source, f"{NODE_PATH}/{name}"))
    data = buffer.getvalue()
    return Bundle(data=data, sha256=hashlib.sha256(data).hexdigest())


@functools.cache
def bundle() -> Bundle:
    """This server's agent zipapp, built on first use."""
    return build(agent_sources())


def sha256() -> str:
    """The hex SHA-256 of :func:`bundle`, which the bootstrap makes nodes check."""
    return bundle().sha256


def bytecode(source: bytes, filename: str) -> bytes:
    """An unchecked hash-based pyc of ``source`` for this Python; ``filename`` is what
    tracebacks name (the module's place inside the zipapp on a node)."""
    code = compile(source, filename, "exec", dont_inherit=True, optimize=0)
    return (
        importlib.util.MAGIC_NUMBER
        + _UNCHECKED_HASH_PYC
        + importlib.util.source_hash(source)
        + marshalled(code)
    )


def marshalled(code: CodeType) -> bytes:
    """``marshal.dumps(code)``, the same whatever else the process holds or has done.

    Two things of the process leak into marshal's output. It flags an object as shared (and
    numbers it) when its reference count is above one, which counts references from outside the
    code object too; what ``marshal.loads`` has just made is referred to only from inside, so
    dumping that gives flags that say only how the code object shares its parts (the data
    loaded is what was dumped a moment before). And it writes a string as interned or not as
    the object is: the empty and one-character strings are objects the whole process shares,
    interned or not by whatever ran before (a ``"["`` differed after the API had served a
    request); interning them all first makes that the same everywhere.
    """
    _intern_shared_strings()
    return marshal.dumps(marshal.loads(marshal.dumps(code)))  # noqa: S302


@functools.cache
def _intern_shared_strings() -> None:
    for text in ("", *map(chr, range(256))):
        sys.intern(text)


def _add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_STORED
    info.create_system = 3  # Unix, so that external_attr means a mode
    info.external_attr = _MODE
    archive.writestr(info, data)
