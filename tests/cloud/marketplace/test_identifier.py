from __future__ import annotations

import hashlib
import io
import os

import pytest

from stratuslab.cloud.marketplace.identifier import Checksums, checksums, identifier, sha1_of
from stratuslab.errors import Invalid


def test_identifier_is_stratuslabs_for_their_own_sample_entry() -> None:
    # StratusLab/marketplace metadata/src/test/python/valid-full.xml pairs this SHA-1 and id.
    assert identifier("c319bbd5afc0a22ba3eaed0507c39383ec28eeff") == "MMZu9WvwKIro-rtBQfDk4PsKO7_"


def test_identifier_is_the_number_in_27_digits_not_base64_of_bytes() -> None:
    assert identifier("0" * 40) == "A" * 27
    assert identifier("f" * 40) == "P" + "_" * 26
    assert identifier("0" * 39 + "1") == "A" * 26 + "B"
    assert identifier("C319BBD5AFC0A22BA3EAED0507C39383EC28EEFF") == "MMZu9WvwKIro-rtBQfDk4PsKO7_"


def test_identifier_turns_back_into_its_sha1() -> None:
    for _ in range(50):
        sha1 = os.urandom(20).hex()
        ident = identifier(sha1)
        assert len(ident) == 27
        assert sha1_of(ident) == sha1


@pytest.mark.parametrize("bad", ["", "c319", "g" * 40, "0" * 41, " " + "0" * 39])
def test_identifier_refuses_what_is_not_a_sha1(bad: str) -> None:
    with pytest.raises(Invalid, match="sha1 must be 40 hexadecimal digits"):
        identifier(bad)


@pytest.mark.parametrize("bad", ["A", "A" * 28, "AAAAAAAAAAAAAAAAAA:AAAAAAAA", "Q" + "A" * 26])
def test_sha1_of_refuses_what_is_not_an_identifier(bad: str) -> None:
    # The first three are StratusLab's own invalid identifiers (MetadataUtilsTest); the last
    # would need 161 bits.
    with pytest.raises(Invalid, match="not a Marketplace identifier"):
        sha1_of(bad)


def test_checksums_reads_once_and_agrees_with_hashlib() -> None:
    data = os.urandom(3 * (1 << 20) + 17)
    got = checksums(io.BytesIO(data), chunk=1 << 16)
    assert got == Checksums(
        size=len(data),
        md5=hashlib.md5(data).hexdigest(),
        sha1=hashlib.sha1(data).hexdigest(),
        sha256=hashlib.sha256(data).hexdigest(),
        sha512=hashlib.sha512(data).hexdigest(),
    )
    assert got.identifier == identifier(hashlib.sha1(data).hexdigest())


def test_checksums_of_nothing_and_bad_chunks() -> None:
    empty = checksums(io.BytesIO(b""))
    assert empty.size == 0
    assert empty.sha1 == hashlib.sha1(b"").hexdigest()
    with pytest.raises(Invalid, match="chunk must be positive"):
        checksums(io.BytesIO(b"x"), chunk=0)


def test_checksums_refuses_bad_values() -> None:
    good = checksums(io.BytesIO(b"x"))
    with pytest.raises(Invalid, match="md5 must be 32"):
        Checksums(size=1, md5="00", sha1=good.sha1, sha256=good.sha256, sha512=good.sha512)
    with pytest.raises(Invalid, match="bytes must be a whole number"):
        Checksums(size=-1, md5=good.md5, sha1=good.sha1, sha256=good.sha256, sha512=good.sha512)


def test_mismatches_name_each_difference_of_one_changed_byte_and_nothing_for_the_same_bytes() -> (
    None
):
    data = os.urandom(4096)
    stated = checksums(io.BytesIO(data))
    assert stated.mismatches(checksums(io.BytesIO(data))) == []
    tampered = bytearray(data)
    tampered[100] ^= 1
    found = stated.mismatches(checksums(io.BytesIO(bytes(tampered))))
    assert [m.split(" is ")[0] for m in found] == [
        "the MD5",
        "the SHA-1",
        "the SHA-256",
        "the SHA-512",
    ]
    assert stated.mismatches(checksums(io.BytesIO(data[:-1])))[0] == (
        "the size is 4095 bytes, the entry says 4096"
    )
