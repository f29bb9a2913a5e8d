"""What users write about volumes, checked: names, references, sizes and mount paths.

One module for the CLI, the API, the volume service and the module parser (a component's
``volumes:``), so a value is refused with the same words wherever it is given.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from stratuslab.errors import Invalid

GiB = 1 << 30
MIN_SIZE = 16 << 20  # below this a filesystem quota is not worth having
MAX_SIZE = 16 << 40  # a bound on what one request may ask, whatever the quota says
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_OWNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)(B?)\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}
_PATH = re.compile(r"^/[A-Za-z0-9._@+/-]{1,254}$")
# Where a volume would hide what the system needs to boot, or what the kernel provides.
RESERVED_PATHS = (
    *("/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/run"),
    *("/sbin", "/sys", "/usr", "/opt/stratus", "/var/lib/stratus-agent"),
)
DEFAULT_PATH = "/mnt/{name}"


@dataclass(frozen=True)
class VolumeRef:
    """A volume as users name it: ``name`` (their own) or ``owner/name`` (anybody's)."""

    owner: str | None
    name: str

    def __str__(self) -> str:
        return f"{self.owner}/{self.name}" if self.owner else self.name


def check_name(name: str) -> str:
    """``name`` when it is a volume name users may give; ``Invalid`` otherwise."""
    if not _NAME.match(name):
        raise Invalid(
            f"volume name {name[:80]!r}: use up to 63 lowercase letters, digits, '.', '_' and "
            "'-', starting with a letter or digit"
        )
    return name


def parse_ref(text: str) -> VolumeRef:
    """``name`` or ``owner/name``; ``Invalid`` for anything else."""
    owner, slash, name = text.rpartition("/")
    if not slash:
        return VolumeRef(None, check_name(text))
    if not _OWNER.match(owner):
        raise Invalid(f"volume {text[:80]!r}: write NAME or OWNER/NAME")
    return VolumeRef(owner, check_name(name))


def parse_size(value: str | int) -> int:
    """Bytes from ``2GiB``, ``500MiB``, ``10G`` (binary, as ``10GiB``), ``1.5TiB`` or ``8GB``
    (decimal); an int is bytes. ``Invalid`` naming the value when it does not parse or lies
    outside ``MIN_SIZE``..``MAX_SIZE``."""
    if isinstance(value, bool):
        raise Invalid("size: give a number and a unit, such as 2GiB or 500MiB")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(value) if len(value) <= 32 else None
        if match is None or not match.group(2):
            raise Invalid(
                f"size {value[:40]!r}: give a number and a unit, such as 2GiB, 500MiB or 1TiB"
            )
        number, unit, binary, byte = match.groups()
        decimal = bool(byte) and not binary
        size = int(float(number) * (1000 if decimal else 1024) ** _POWERS[unit.lower()])
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise Invalid(
            f"size {format_size(size)}: a volume is from {format_size(MIN_SIZE)} "
            f"to {format_size(MAX_SIZE)}"
        )
    return size


def format_size(size: int) -> str:
    """``2 GiB``, ``512 MiB``, ``1.5 TiB``: the largest binary unit, one decimal at most."""
    for unit, power in (("TiB", 4), ("GiB", 3), ("MiB", 2), ("KiB", 1)):
        if size >= 1024**power:
            amount = size / 1024**power
            return f"{amount:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} B"


def gib_of(size: int) -> int:
    """What a volume of ``size`` bytes counts against a storage quota: whole GiB, rounded up."""
    return -(-size // GiB)


def check_path(path: str) -> str:
    """``path`` when a volume may be mounted there: absolute, normalised, of plain characters,
    not the root nor where the system keeps what it runs on."""
    if not _PATH.match(path) or posixpath.normpath(path) != path or path == "/":
        raise Invalid(
            f"mount path {path[:80]!r}: give an absolute, normalised path below / of letters, "
            "digits and . _ @ + - /"
        )
    for reserved in RESERVED_PATHS:
        if path == reserved or path.startswith(reserved + "/"):
            raise Invalid(
                f"mount path {path!r}: {reserved} is the system's; mount under /mnt or /srv"
            )
    return path
