"""`stratus cert`: registering, listing and removing the DNs that log a user in over TLS."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient

from stratuslab.principal import SERVER
from stratuslab.services import Services
from tests.accounts import pki
from tests.support import CliResult

Stratus = Callable[..., CliResult]


def services_of(api: TestClient) -> Services:
    found: Services = api.app.state.services  # type: ignore[attr-defined]
    return found


def test_a_dn_is_registered_from_text_or_a_certificate_and_removed(
    stratus: Stratus, api: TestClient, tmp_path: Path
) -> None:
    services_of(api).accounts.add_user("alice", caller=SERVER)
    added = stratus("cert", "add", "CN=Alice Smith,O=Grid", "-o", "json")
    assert added.code == 0, added.err
    assert json.loads(added.out)["dn"] == "/O=Grid/CN=Alice Smith"

    authority = pki.ca("Users CA")
    bob = pki.issue(
        authority, pki.name((NameOID.ORGANIZATION_NAME, "Grid"), (NameOID.COMMON_NAME, "Bob"))
    )
    pem = tmp_path / "bob.pem"
    pem.write_bytes(bob.certificate.public_bytes(serialization.Encoding.PEM))
    from_file = stratus("cert", "add", "--file", str(pem), "-o", "json")
    assert json.loads(from_file.out)["dn"] == "/O=Grid/CN=Bob"

    listed = stratus("cert", "list")
    assert "/O=Grid/CN=Alice Smith" in listed.out and "/O=Grid/CN=Bob" in listed.out
    assert stratus("cert", "remove", "/O=Grid/CN=Bob").code == 0
    assert [c["dn"] for c in json.loads(stratus("cert", "list", "-o", "json").out)] == [
        "/O=Grid/CN=Alice Smith"
    ]


def test_a_key_file_a_dn_held_by_another_and_a_non_dn_are_refused(
    stratus: Stratus, api: TestClient, tmp_path: Path
) -> None:
    services = services_of(api)
    services.accounts.add_user("alice", caller=SERVER)
    services.accounts.add_user("bob", caller=SERVER)
    assert stratus("cert", "add", "/O=Grid/CN=Bob", "--user", "bob").code == 0
    held = stratus("cert", "add", "/O=Grid/CN=Bob")
    assert held.code == 67 and "registered to another user" in held.err
    key = tmp_path / "mine.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----\n")
    refused = stratus("cert", "add", "--file", str(key))
    assert refused.code == 65 and "holds a private key" in refused.err
    assert stratus("cert", "add", "Alice").code == 65
    assert stratus("cert", "add").code == 65
