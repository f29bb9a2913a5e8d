from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from stratuslab.cloud.marketplace.trust import TrustStore, load
from stratuslab.errors import Invalid
from tests.cloud.marketplace.support import NOW, Party, der_chain, make_ca, make_crl, make_person

ROOT = make_ca("Site Trust CA")
SUB = make_ca("Site Issuing CA", parent=ROOT)
OTHER = make_ca("Someone Else's CA")
JANE = make_person(ROOT, "Jane Tester", san_email="jane@example.org")
BOB = make_person(SUB, "Bob Builder", san_email="bob@example.org")
EVE = make_person(OTHER, "Eve", san_email="eve@example.net")
LAPSED = make_person(
    ROOT, "Old Timer", san_email="old@example.org", not_after=NOW - dt.timedelta(days=2)
)


def bundle(path: Path, *cas: Party) -> Path:
    path.write_bytes(b"".join(ca.cert_pem for ca in cas))
    return path


def test_a_chain_that_reaches_a_trusted_ca_passes(tmp_path: Path) -> None:
    store = TrustStore(bundle(tmp_path / "cas.pem", ROOT))
    assert store.check(der_chain(JANE), NOW) is None
    # Through the intermediate the signature carries, and through one the store holds.
    assert store.check(der_chain(BOB, SUB), NOW) is None
    assert TrustStore(bundle(tmp_path / "both.pem", ROOT, SUB)).check(der_chain(BOB), NOW) is None


def test_a_chain_to_a_ca_the_site_does_not_hold_is_refused_naming_the_issuer(
    tmp_path: Path,
) -> None:
    store = TrustStore(bundle(tmp_path / "cas.pem", ROOT))
    assert store.check(der_chain(EVE), NOW) == (
        "certificate CN=Eve,O=StratusLab Project,C=EU is issued by"
        " CN=Someone Else's CA,O=StratusLab Project,C=EU, which the site does not trust"
    )
    # Without the intermediate, the chain stops at it.
    assert "is issued by CN=Site Issuing CA" in str(store.check(der_chain(BOB), NOW))
    # A CA named like the trusted one, with another key, is no better.
    impostor = make_person(make_ca("Site Trust CA"), "Jane Tester", san_email="jane@example.org")
    assert "which the site does not trust" in str(store.check(der_chain(impostor), NOW))
    problem = store.current().problem(der_chain(EVE), NOW)
    assert problem is not None and problem.rule == "untrusted"


def test_every_certificate_must_be_valid_at_the_time_asked(tmp_path: Path) -> None:
    store = TrustStore(bundle(tmp_path / "cas.pem", ROOT))
    assert store.check(der_chain(LAPSED), NOW - dt.timedelta(days=10)) is None
    assert str(store.check(der_chain(LAPSED), NOW)).startswith(
        "the endorser's certificate (CN=Old Timer,O=StratusLab Project,C=EU) expired on"
    )
    short = make_ca("Short-lived CA", not_after=NOW - dt.timedelta(days=1))
    sub = make_ca("Short-lived Issuing CA", parent=ROOT, not_after=NOW - dt.timedelta(days=1))
    assert str(
        TrustStore(bundle(tmp_path / "short.pem", short)).check(
            der_chain(make_person(short, "Carol", san_email="carol@example.org")), NOW
        )
    ).startswith("the trusted CA's certificate (CN=Short-lived CA")
    assert str(
        store.check(der_chain(make_person(sub, "Dan", san_email="dan@example.org"), sub), NOW)
    ).startswith("an intermediate CA's certificate (CN=Short-lived Issuing CA")


@pytest.mark.parametrize("der", [False, True], ids=["pem", "der"])
def test_a_revoked_certificate_is_refused_saying_by_whom_and_when(
    tmp_path: Path, der: bool
) -> None:
    crl = tmp_path / ("root.crl" if der else "root.crl.pem")
    crl.write_bytes(make_crl(ROOT, [(JANE, NOW - dt.timedelta(days=5))], der=der))
    store = TrustStore(bundle(tmp_path / "cas.pem", ROOT), [crl])
    assert store.check(der_chain(JANE), NOW) == (
        f"certificate serial {JANE.cert.serial_number} (CN=Jane Tester,O=StratusLab Project,C=EU)"
        " revoked by CN=Site Trust CA,O=StratusLab Project,C=EU on 2026-04-26"
    )
    problem = store.current().problem(der_chain(JANE), NOW)
    assert problem is not None and problem.rule == "revoked"
    # Before its revocation it was good; others of the CA still are.
    assert store.check(der_chain(JANE), NOW - dt.timedelta(days=6)) is None
    assert store.check(der_chain(LAPSED), NOW - dt.timedelta(days=10)) is None


def test_a_revoked_intermediate_refuses_what_it_issued(tmp_path: Path) -> None:
    crl = tmp_path / "root.crl"
    crl.write_bytes(make_crl(ROOT, [(SUB, NOW - dt.timedelta(days=1))]))
    carried = TrustStore(bundle(tmp_path / "root.pem", ROOT), [crl])
    assert f"serial {SUB.cert.serial_number} (CN=Site Issuing CA" in str(
        carried.check(der_chain(BOB, SUB), NOW)
    )
    held = TrustStore(bundle(tmp_path / "both.pem", ROOT, SUB), [crl])
    assert "revoked by CN=Site Trust CA" in str(held.check(der_chain(BOB), NOW))


def test_a_list_past_its_next_update_leaves_revocation_unknown(tmp_path: Path) -> None:
    crl = tmp_path / "root.crl"
    crl.write_bytes(make_crl(ROOT, next_update=NOW - dt.timedelta(hours=1)))
    store = TrustStore(bundle(tmp_path / "cas.pem", ROOT), [crl])
    reason = str(store.check(der_chain(JANE), NOW))
    assert "revocation list of CN=Site Trust CA" in reason
    assert "was due for renewal on" in reason and str(crl) in reason


def test_a_list_whose_signature_does_not_verify_is_an_error_naming_the_file(
    tmp_path: Path,
) -> None:
    cas = bundle(tmp_path / "cas.pem", ROOT)
    forged = tmp_path / "forged.crl"
    forged.write_bytes(make_crl(ROOT, [(JANE, NOW)], signer=OTHER))
    with pytest.raises(Invalid, match=rf"CRL {forged}: its signature does not verify"):
        load(cas, [forged])
    foreign = tmp_path / "foreign.crl"
    foreign.write_bytes(make_crl(OTHER))
    with pytest.raises(Invalid, match=rf"CRL {foreign}: issued by CN=Someone Else's CA.*not a CA"):
        load(cas, [foreign])
    junk = tmp_path / "junk.crl"
    junk.write_bytes(b"not a list")
    with pytest.raises(Invalid, match=rf"CRL {junk}: neither a PEM nor a DER"):
        load(cas, [junk])


def test_a_store_that_cannot_be_used_is_an_error_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(Invalid, match=rf"trust store {tmp_path / 'none.pem'}: cannot be read"):
        load(tmp_path / "none.pem")
    (tmp_path / "junk.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nnope\n")
    with pytest.raises(Invalid, match=r"junk\.pem: not a PEM certificate"):
        load(tmp_path / "junk.pem")
    (tmp_path / "leaf.pem").write_bytes(JANE.cert_pem)
    with pytest.raises(Invalid, match="holds no CA certificate"):
        load(tmp_path / "leaf.pem")


def test_a_directory_store_reads_the_certificates_among_its_files(tmp_path: Path) -> None:
    folder = tmp_path / "certificates"
    folder.mkdir()
    bundle(folder / "root.pem", ROOT)
    os.symlink(folder / "root.pem", folder / "5f2c8a1e.0")  # the hash link grid sites keep
    (folder / "root.signing_policy").write_text("access_id_CA X509 '/C=EU/CN=Site Trust CA'\n")
    bundle(folder / "sub.pem", SUB)
    anchors = load(folder)
    assert len(anchors.cas) == 2
    assert anchors.check(der_chain(BOB), NOW) is None


def test_the_store_is_read_again_when_its_files_change(tmp_path: Path) -> None:
    cas = bundle(tmp_path / "cas.pem", OTHER)
    crl = tmp_path / "root.crl"
    crl.write_bytes(make_crl(OTHER))
    store = TrustStore(cas, [crl], recheck_s=0)
    first = store.current()
    assert store.current() is first  # nothing changed: not read again
    assert "which the site does not trust" in str(store.check(der_chain(JANE), NOW))
    bundle(cas, OTHER, ROOT)
    crl.write_bytes(make_crl(ROOT, [(JANE, NOW - dt.timedelta(days=1))]))
    assert "revoked by CN=Site Trust CA" in str(store.check(der_chain(JANE), NOW))
    crl.write_bytes(make_crl(ROOT, signer=OTHER))
    with pytest.raises(Invalid, match="its signature does not verify"):
        store.current()
    crl.write_bytes(make_crl(ROOT))
    assert store.check(der_chain(JANE), NOW) is None


def test_the_store_looks_at_its_files_at_most_once_per_recheck_interval(tmp_path: Path) -> None:
    cas = bundle(tmp_path / "cas.pem", OTHER)
    ticks = [0.0]
    store = TrustStore(cas, recheck_s=1.0, clock=lambda: ticks[0])
    assert store.check(der_chain(JANE), NOW) is not None
    bundle(cas, ROOT)
    ticks[0] = 0.5
    assert store.check(der_chain(JANE), NOW) is not None  # not looked at yet
    ticks[0] = 1.5
    assert store.check(der_chain(JANE), NOW) is None


def test_an_endorsement_without_certificates_is_not_trusted(tmp_path: Path) -> None:
    store = TrustStore(bundle(tmp_path / "cas.pem", ROOT))
    assert store.check((), NOW) == "the endorsement carries no certificate"
    assert store.check((b"junk",), NOW) == "a certificate of the endorsement is not DER X.509"
