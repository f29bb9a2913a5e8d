"""The Marketplace's store: signing and verifying an entry, uploading it, and the policy's
look-up of an image's endorsements (``Marketplace.endorsements``, at every instance start).

A store of its own (a temporary SQLite file, or ``--database URL``, e.g. an empty PostgreSQL
database) is filled with ``--images`` images, each endorsed twice by one endorser (the older
entry kept as history) and once by another; then each figure is sampled. No LXD, no server.

    .venv/bin/python bench/marketplace_store.py [--images 300] [--lookups 1000] [--json-only]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import percentile, publish
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from stratuslab.cloud.marketplace.entry import Entry, to_xml
from stratuslab.cloud.marketplace.identifier import checksums
from stratuslab.cloud.marketplace.signing import sign, verify
from stratuslab.cloud.marketplace.store import Marketplace
from stratuslab.db.session import engine_for
from stratuslab.principal import Principal

NOW = datetime.now(UTC).replace(microsecond=0)


def person(email: str, ca_key: Any, ca_name: x509.Name) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, email)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return cert.public_bytes(pem), key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def entry_of(seed: int) -> bytes:
    return to_xml(
        Entry(
            checksums=checksums(io.BytesIO(f"image {seed}".encode() * 1000)),
            os="debian",
            os_version="12",
            os_arch="x86_64",
            format="lxd",
            title=f"image-{seed}",
            description="a benchmark's image",
            creator="bench",
            created=NOW - dt.timedelta(days=1),
            valid=NOW + dt.timedelta(days=180),
            tags=("bench",),
        )
    )


def ms(samples: list[float]) -> dict[str, float]:
    return {"p50": percentile(samples, 50), "p99": percentile(samples, 99), "n": len(samples)}


def measure(url: str, images: int, lookups: int) -> dict[str, Any]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bench CA")])
    jane, john = (
        person("jane@example.org", ca_key, ca_name),
        person("john@example.org", ca_key, ca_name),
    )
    market = Marketplace(engine_for(url), max_entries=10 * images + 10)
    uploader = Principal.for_user("bench")
    signing, verifying, uploading = [], [], []
    for seed in range(images):
        for who, minutes in ((jane, 20), (john, 20), (jane, 10)):
            xml = entry_of(seed)
            started = time.perf_counter()
            signed = sign(xml, *who, now=NOW - dt.timedelta(minutes=minutes))
            signing.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            verify(signed, trusted_cas=None)
            verifying.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            market.upload(principal=uploader, xml=signed)
            uploading.append((time.perf_counter() - started) * 1000)
    wanted = checksums(io.BytesIO(f"image {images // 2}".encode() * 1000)).sha256
    looking = []
    for _ in range(lookups):
        started = time.perf_counter()
        found = market.endorsements(wanted)
        looking.append((time.perf_counter() - started) * 1000)
    assert [v.email for v in found] == ["jane@example.org", "john@example.org"]
    searching = []
    for _ in range(20):
        started = time.perf_counter()
        market.search(limit=100)
        searching.append((time.perf_counter() - started) * 1000)
    return {
        "sign_ms": ms(signing),
        "verify_ms": ms(verifying),
        "upload_ms": ms(uploading),  # verify again, checks, insert
        "endorsements_ms": ms(looking),
        "search_100_ms": ms(searching),
    }


def table(results: dict[str, Any]) -> str:
    lines = [f"{'measure (milliseconds)':<44} {'n':>5} {'p50':>8} {'p99':>8}"]
    for label, key in (
        ("sign an entry", "sign_ms"),
        ("verify an entry", "verify_ms"),
        ("upload (verify, check, insert)", "upload_ms"),
        ("the policy's look-up: endorsements(sha256)", "endorsements_ms"),
        ("a search, 100 entries as JSON rows", "search_100_ms"),
    ):
        r = results[key]
        lines.append(f"{label:<44} {r['n']:>5} {r['p50']:>8.2f} {r['p99']:>8.2f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--lookups", type=int, default=1000)
    parser.add_argument("--database", default="", help="an empty store's URL (default: SQLite)")
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args()
    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as scratch:
        url = args.database or f"sqlite:///{Path(scratch) / 'stratus.db'}"
        results = measure(url, args.images, args.lookups)
    settings = {"images": args.images, "entries": 3 * args.images, "store": url.split(":")[0]}
    return publish(
        "marketplace_store", started, "", settings, results, table, json_only=args.json_only
    )


if __name__ == "__main__":
    raise SystemExit(main())
