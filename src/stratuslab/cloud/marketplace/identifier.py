"""An image's Marketplace identifier and the checksums its entry carries.

StratusLab named an image by its SHA-1: the 160-bit digest read as one unsigned number and
written in base 64, most significant digit first, over the URL-safe alphabet
``A-Z a-z 0-9 - _``, always 27 digits (the first holds the top 4 bits, so it is ``A``-``P``).
It is not RFC 4648 base64url of the digest's bytes (that groups bits from the left): the number
is converted, so a digest with leading zero bits starts with ``A``. The scheme is the one of
StratusLab's ``MetadataUtils.sha1ToIdentifier`` (Java) and ``ManifestIdentifier`` (Python client);
their sample entry ``valid-full.xml`` pairs SHA-1 ``c319bbd5...ec28eeff`` with
``MMZu9WvwKIro-rtBQfDk4PsKO7_``, which the tests check.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import BinaryIO

from stratuslab.errors import Invalid

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
ID_CHARS = 27
_DECODE = {c: i for i, c in enumerate(ALPHABET)}
_HEX = {"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128}
IDENTIFIER_RE = re.compile(r"[A-Za-z0-9_-]{27}")
_HEX_DIGITS = re.compile(r"[0-9a-fA-F]*")


def _hex(name: str, value: str) -> str:
    want = _HEX[name]
    if len(value) != want or not _HEX_DIGITS.fullmatch(value):
        raise Invalid(f"{name} must be {want} hexadecimal digits, not {value[:140]!r}")
    return value.lower()


def identifier(sha1_hex: str) -> str:
    """The 27-character Marketplace identifier of an image whose SHA-1 is ``sha1_hex``."""
    number = int(_hex("sha1", sha1_hex), 16)
    digits = []
    for _ in range(ID_CHARS):
        number, digit = divmod(number, 64)
        digits.append(ALPHABET[digit])
    return "".join(reversed(digits))


def sha1_of(ident: str) -> str:
    """The SHA-1 (40 lowercase hex digits) an identifier was made from; Invalid if it is none."""
    if not IDENTIFIER_RE.fullmatch(ident) or _DECODE[ident[0]] > 15:
        raise Invalid(f"not a Marketplace identifier (27 of A-Z a-z 0-9 - _): {ident[:140]!r}")
    number = 0
    for c in ident:
        number = number << 6 | _DECODE[c]
    return f"{number:040x}"


@dataclass(frozen=True)
class Checksums:
    """An image's size (``slreq:bytes``) and digests, lowercase hex."""

    size: int
    md5: str
    sha1: str
    sha256: str
    sha512: str

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise Invalid(f"bytes must be a whole number of bytes, not {self.size!r}")
        for name in _HEX:
            object.__setattr__(self, name, _hex(name, getattr(self, name)))

    @property
    def identifier(self) -> str:
        return identifier(self.sha1)

    def by_algorithm(self) -> dict[str, str]:
        """The digests under StratusLab's algorithm names (``slreq:algorithm``)."""
        return {"MD5": self.md5, "SHA-1": self.sha1, "SHA-256": self.sha256, "SHA-512": self.sha512}

    def mismatches(self, actual: Checksums) -> list[str]:
        """What of ``actual`` (the bytes at hand) differs from these (what an entry states), in
        words: empty when the bytes are the ones described."""
        found = []
        if actual.size != self.size:
            found.append(f"the size is {actual.size} bytes, the entry says {self.size}")
        for name, stated in self.by_algorithm().items():
            real = actual.by_algorithm()[name]
            if real != stated:
                found.append(f"the {name} is {real[:16]}..., the entry says {stated[:16]}...")
        return found


def checksums(stream: BinaryIO, *, chunk: int = 1 << 20) -> Checksums:
    """Read ``stream`` to its end once and return its size and its four digests."""
    if chunk <= 0:
        raise Invalid(f"chunk must be positive, not {chunk}")
    digests = [hashlib.md5(usedforsecurity=False), hashlib.sha1(usedforsecurity=False)]
    strong = [hashlib.sha256(), hashlib.sha512()]
    size = 0
    while block := stream.read(chunk):
        size += len(block)
        for h in (*digests, *strong):
            h.update(block)
    return Checksums(
        size=size,
        md5=digests[0].hexdigest(),
        sha1=digests[1].hexdigest(),
        sha256=strong[0].hexdigest(),
        sha512=strong[1].hexdigest(),
    )
