"""Signing and verifying a Marketplace entry, and the site's trust policy at every start.

Measures, in this process, with a temporary SQLite store and the fake cloud (no LXD, no server):

1. ``sign``: :func:`signing.sign` of an entry with an endorser's ECDSA P-256 certificate and key
   (as ``stratus marketplace sign`` does), and ``verify``: :func:`signing.verify` of the signed
   XML with the CA trusted (as an upload does), ``--signs`` times each.
2. ``decide``: :meth:`ImagePolicy.decide` for an image endorsed by one entry, the site's policy
   being ``unsigned = refuse`` with an allow list of endorsers, a trust store holding the
   endorser's CA and a revocation list of that CA revoking 100 other serials: what every start
   of an endorsed image costs (the chain walked and checked against the list, the entry's size,
   dates and deprecation). Beside it, in the same run, ``decide_default``: the decision of a
   site with the default policy and no Marketplace (every image unsigned). ``--trials`` each.
3. ``prepare_many``: one request for an instance of that image, through
   :meth:`InstanceService.prepare_many` (checks, image lookup, capacity, the policy, the record
   in the store), with the policy above against the same service with the policy off (the
   baseline), trial by trial interleaved, ``--starts`` each. The difference of the medians is
   the policy's cost per start; the goal is under 5 ms.

The endorsements come from memory (by SHA-256), so the Marketplace store's own lookup is not
in these figures. Everything is made under a temporary directory and a fake-cloud namespace
named ``bench-<6 hex>``, removed at the end, even on failure or Ctrl-C. From the project root:
``.venv/bin/python bench/policy_decision.py [--trials 1000] [--signs 200] [--starts 300]
[--json-only]``. Results go to stdout and bench/results/policy_decision-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import secrets
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import guarded, log, percentile, publish
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from stratuslab.cloud import clouds
from stratuslab.cloud.clouds import ConnectorPool
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.cloud.instances import InstanceService, Prepared, RunRequest
from stratuslab.cloud.marketplace.entry import Entry, to_xml
from stratuslab.cloud.marketplace.gate import ImagePolicy, facts
from stratuslab.cloud.marketplace.identifier import checksums
from stratuslab.cloud.marketplace.policy import Policy
from stratuslab.cloud.marketplace.signing import Verified, sign, verify
from stratuslab.cloud.marketplace.trust import TrustStore
from stratuslab.db.session import dispose, engine_for

GOAL_MS = 5.0
NOW = dt.datetime.now(dt.UTC)


def name(cn: str, email: str | None = None) -> x509.Name:
    attributes = [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bench"),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ]
    if email:
        attributes.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, email))
    return x509.Name(attributes)


def certificate(
    subject: x509.Name, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer: Any, *, ca: bool
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(signer, hashes.SHA256())
    )


def site(folder: Path) -> tuple[bytes, bytes, bytes, TrustStore]:
    """A CA (in a trust store, with a list revoking 100 serials), and an endorser it
    certified: the CA's PEM, the endorser's certificate and key PEM, the store."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate(name("Bench CA"), ca_key, name("Bench CA"), ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    person = certificate(name("Jane", "jane@example.org"), key, ca.subject, ca_key, ca=False)
    crl = x509.CertificateRevocationListBuilder().issuer_name(ca.subject)
    crl = crl.last_update(NOW - dt.timedelta(hours=1)).next_update(NOW + dt.timedelta(days=7))
    for _ in range(100):
        crl = crl.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(x509.random_serial_number())
            .revocation_date(NOW - dt.timedelta(days=1))
            .build()
        )
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    (folder / "ca.pem").write_bytes(ca_pem)
    (folder / "ca.crl").write_bytes(
        crl.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    store = TrustStore(folder / "ca.pem", [folder / "ca.crl"])
    return ca_pem, person.public_bytes(serialization.Encoding.PEM), key_pem, store


def timed(work: Callable[[], object], trials: int) -> list[float]:
    samples = []
    for _ in range(trials):
        started = time.perf_counter()
        work()
        samples.append(time.perf_counter() - started)
    return samples


def stats(samples: list[float]) -> dict[str, Any]:
    """Milliseconds: n, median, p99, max."""
    ms = [s * 1e3 for s in samples]
    return {
        "n": len(ms),
        "median_ms": statistics.median(ms),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms),
    }


class Memory:
    """Endorsements held in memory, by the SHA-256 of the bytes they describe."""

    def __init__(self, *held: Verified) -> None:
        self.held = {v.entry.checksums.sha256: [v] for v in held}

    def endorsements(self, sha256: str) -> list[Verified]:
        return list(self.held.get(sha256, []))


def measure(work: Path, namespace: str, trials: int, signs: int, starts: int) -> dict[str, Any]:
    ca_pem, cert_pem, key_pem, store = site(work)
    archive = image_tarball(work / "image.tar")
    with archive.open("rb") as stream:
        sums = checksums(stream)
    entry = Entry(
        checksums=sums,
        os="debian",
        os_version="12",
        os_arch="x86_64",
        format="lxd",
        title="bench",
        description="",
        creator="bench",
        created=NOW - dt.timedelta(days=1),
        valid=NOW + dt.timedelta(days=30),
    )
    unsigned = to_xml(entry)
    log(f"sign and verify, {signs} times each")
    sign_s = timed(lambda: sign(unsigned, cert_pem, key_pem), signs)
    signed = sign(unsigned, cert_pem, key_pem)
    verify_s = timed(lambda: verify(signed, trusted_cas=[ca_pem]), signs)
    endorsement = verify(signed, trusted_cas=None)

    engine_url = f"sqlite:///{work / 'stratus.db'}"
    engine = engine_for(engine_url)
    clouds.record(engine, name="local", connector="fake", options={"namespace": namespace})
    fake = FakeConnector(namespace=namespace, cpus=64, memory_mb=10**9, disk_mb=10**9)
    image = fake.import_image(archive, name="bench-image", sha256=sums.sha256)
    gate = ImagePolicy(
        Policy(unsigned="refuse", endorsers_allow=["jane@example.org"]),
        source=Memory(endorsement),
        trust=store,
    )
    default = ImagePolicy(Policy())
    about = facts("local", image)
    assert gate.decide(about).rule == "endorsed", gate.decide(about)
    log(f"decide, {trials} times with the policy, {trials} with the default")
    decide_s = timed(lambda: gate.decide(about), trials)
    default_s = timed(lambda: default.decide(about), trials)

    pool = ConnectorPool(engine)
    with_policy = InstanceService(
        engine, owner="bench", connectors=pool, name_prefix="b", policy=gate
    )
    without = InstanceService(engine, owner="bench", connectors=pool, name_prefix="b")
    log(f"prepare_many, {starts} times with the policy and {starts} without, interleaved")
    on: list[float] = []
    off: list[float] = []
    for trial in range(starts):
        for service, samples in ((with_policy, on), (without, off))[:: 1 if trial % 2 else -1]:
            started = time.perf_counter()
            (outcome,) = service.prepare_many([RunRequest(image="bench-image")])
            samples.append(time.perf_counter() - started)
            if not isinstance(outcome, Prepared):
                raise RuntimeError(f"prepare_many refused: {outcome}")
    pool.close()
    dispose(engine_url)
    results = {
        "sign": stats(sign_s),
        "verify": stats(verify_s),
        "decide": stats(decide_s),
        "decide_default": stats(default_s),
        "prepare_many_policy": stats(on),
        "prepare_many_off": stats(off),
    }
    cost = results["prepare_many_policy"]["median_ms"] - results["prepare_many_off"]["median_ms"]
    results["policy_cost_per_start_ms"] = cost
    results["goal_met"] = results["decide"]["p99_ms"] < GOAL_MS and cost < GOAL_MS
    return results


def image_tarball(path: Path) -> Path:
    """An image as LXD and the fake cloud import one: ``metadata.yaml`` and 1 MiB of rootfs."""
    with tarfile.open(path, "w") as tar:
        for member, data in (
            ("metadata.yaml", b"architecture: x86_64\ncreation_date: 1777000000\n"),
            ("rootfs/payload", secrets.token_bytes(1 << 20)),
        ):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def table(results: dict[str, Any]) -> str:
    rows = (
        ("sign an entry", "sign"),
        ("verify an entry (signature, chain)", "verify"),
        ("decide: endorsed, trust store + CRL", "decide"),
        ("  beside: default policy, no Marketplace", "decide_default"),
        ("prepare_many, policy on", "prepare_many_policy"),
        ("  baseline: prepare_many, policy off", "prepare_many_off"),
    )
    lines = [f"{'measure (ms)':<44} {'n':>5} {'median':>8} {'p99':>8} {'max':>8}"]
    for label, key in rows:
        s = results[key]
        lines.append(
            f"{label:<44} {s['n']:>5} {s['median_ms']:>8.3f} {s['p99_ms']:>8.3f}"
            f" {s['max_ms']:>8.3f}"
        )
    met = "met" if results["goal_met"] else "NOT met"
    lines.append(
        "\npolicy cost per start (median on - median off):"
        f" {results['policy_cost_per_start_ms']:.3f} ms;"
        f" goal: decision p99 and cost per start < {GOAL_MS:.0f} ms: {met}"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000, help="decisions timed (1000)")
    parser.add_argument("--signs", type=int, default=200, help="signatures and verifications (200)")
    parser.add_argument(
        "--starts", type=int, default=300, help="prepare_many calls, each way (300)"
    )
    parser.add_argument("--json-only", action="store_true", help="print only the JSON results")
    args = parser.parse_args()
    if min(args.trials, args.signs, args.starts) < 1:
        parser.error("--trials, --signs and --starts must be at least 1")
    prefix = f"bench-{secrets.token_hex(3)}"
    work = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    started = dt.datetime.now(dt.UTC)

    def cleanup() -> None:
        FakeConnector.ex_reset(prefix)
        shutil.rmtree(work, ignore_errors=True)
        log(f"cleanup: {work} removed, fake namespace {prefix} reset")

    status, results = guarded(
        lambda: measure(work, prefix, args.trials, args.signs, args.starts),
        cleanup,
        failures=(OSError, RuntimeError, AssertionError),
    )
    if results is None:
        return status
    settings = {"trials": args.trials, "signs": args.signs, "starts": args.starts}
    return publish(
        "policy_decision", started, prefix, settings, results, table, json_only=args.json_only
    )


if __name__ == "__main__":
    sys.exit(main())
