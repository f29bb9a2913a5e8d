"""The site certificate: a CA made once per data directory, and the server certificate it
signs for the addresses nodes call, signed again when they change or it nears its end."""

from __future__ import annotations

import datetime as dt
import ipaddress
import threading
from pathlib import Path

import pytest
from cryptography import x509

from stratuslab.cloud import sitecert
from stratuslab.config import Settings
from stratuslab.errors import BackendError, Invalid

NAMES = ["10.210.0.1", "127.0.0.1"]


def server_cert(site: sitecert.SiteCertificate) -> x509.Certificate:
    return x509.load_pem_x509_certificates(site.cert_file.read_bytes())[0]


def named(site: sitecert.SiteCertificate) -> set[str]:
    san = server_cert(site).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return {str(ip) for ip in san.value.get_values_for_type(x509.IPAddress)} | set(
        san.value.get_values_for_type(x509.DNSName)
    )


def test_made_once_with_private_keys_then_left_alone(tmp_path: Path) -> None:
    folder = tmp_path / "tls"
    first = sitecert.ensure_in(folder, names=NAMES)
    assert first.outcome == "created"
    modes = {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir() if p.name != ".lock"}
    assert modes == {
        "site-ca.pem": 0o644,
        "site-ca.key": 0o600,
        "server.pem": 0o644,
        "server.key": 0o600,
    }
    assert folder.stat().st_mode & 0o777 == 0o700
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    again = sitecert.ensure_in(folder, names=NAMES)
    assert again.outcome == "present" and again.ca_pem == first.ca_pem
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert named(first) == set(NAMES)
    assert len(first.ca_sha256) == 64 and sitecert.read_ca(folder) == first.ca_pem


def test_the_server_certificate_is_signed_again_for_new_names_under_the_same_ca(
    tmp_path: Path,
) -> None:
    """Nodes trust the CA, not the certificate: those running keep trusting the server."""
    first = sitecert.ensure_in(tmp_path, names=NAMES)
    moved = sitecert.ensure_in(tmp_path, names=["10.99.0.1", "stratus.example.org"])
    assert moved.outcome == "renewed" and moved.ca_pem == first.ca_pem
    assert named(moved) == {"10.99.0.1", "stratus.example.org"}


def test_a_server_certificate_near_its_end_is_renewed(tmp_path: Path) -> None:
    first = sitecert.ensure_in(tmp_path, names=NAMES)
    end = server_cert(first).not_valid_after_utc
    assert end - dt.datetime.now(dt.UTC) > dt.timedelta(days=360)
    later = end - dt.timedelta(days=10)
    renewed = sitecert.ensure_in(tmp_path, names=NAMES, now=later)
    assert renewed.outcome == "renewed" and renewed.ca_pem == first.ca_pem
    assert server_cert(renewed).not_valid_after_utc > end


def test_a_server_certificate_of_another_ca_is_replaced_by_one_of_the_sites(
    tmp_path: Path,
) -> None:
    site = sitecert.ensure_in(tmp_path / "site", names=NAMES)
    other = sitecert.ensure_in(tmp_path / "other", names=NAMES)
    for name in (sitecert.SERVER_FILE, sitecert.SERVER_KEY):
        (tmp_path / "site" / name).write_bytes((tmp_path / "other" / name).read_bytes())
    mended = sitecert.ensure_in(tmp_path / "site", names=NAMES)
    assert mended.outcome == "renewed"
    ca = x509.load_pem_x509_certificate(site.ca_pem.encode())
    server_cert(mended).verify_directly_issued_by(ca)
    assert server_cert(mended) != server_cert(other)


def test_a_site_ca_that_cannot_be_read_is_never_replaced_silently(tmp_path: Path) -> None:
    sitecert.ensure_in(tmp_path, names=NAMES)
    (tmp_path / sitecert.CA_KEY).write_text("garbage")
    with pytest.raises(BackendError, match=r"the site CA in .* cannot be read") as raised:
        sitecert.ensure_in(tmp_path, names=NAMES)
    assert "nodes already running will then refuse this server" in str(raised.value)


def test_a_ca_key_that_is_not_the_cas_is_refused(tmp_path: Path) -> None:
    sitecert.ensure_in(tmp_path / "a", names=NAMES)
    sitecert.ensure_in(tmp_path / "b", names=NAMES)
    (tmp_path / "a" / sitecert.CA_KEY).write_bytes((tmp_path / "b" / sitecert.CA_KEY).read_bytes())
    with pytest.raises(BackendError, match="is not the key of"):
        sitecert.ensure_in(tmp_path / "a", names=NAMES)


def test_a_key_left_readable_by_others_is_made_private_again(tmp_path: Path) -> None:
    sitecert.ensure_in(tmp_path, names=NAMES)
    (tmp_path / sitecert.CA_KEY).chmod(0o644)
    sitecert.ensure_in(tmp_path, names=NAMES)
    assert (tmp_path / sitecert.CA_KEY).stat().st_mode & 0o777 == 0o600


def test_servers_starting_at_once_make_one_ca(tmp_path: Path) -> None:
    made: list[str] = []

    def ensure() -> None:
        made.append(sitecert.ensure_in(tmp_path, names=NAMES).ca_pem)

    threads = [threading.Thread(target=ensure) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 6 and len(set(made)) == 1


def test_the_settings_name_the_bridge_gateway_and_the_agent_urls_host(settings: Settings) -> None:
    assert settings.agent_url == f"https://{settings.bridge_gateway}:{settings.server_port}"
    assert sitecert.agent_names(settings) == (settings.bridge_gateway,)
    elsewhere = settings.with_overrides(agent_server_url="https://stratus.example.org:8443")
    assert sitecert.agent_names(elsewhere) == ("stratus.example.org", settings.bridge_gateway)
    site = sitecert.ensure(elsewhere)
    assert site.cert_file.parent == settings.tls_dir
    assert ipaddress.ip_address(settings.bridge_gateway)
    assert named(site) == {"stratus.example.org", settings.bridge_gateway}


def test_a_plain_http_agent_url_is_refused(settings: Settings) -> None:
    with pytest.raises(
        Invalid, match=r"agent_server_url: 'http://10\.0\.0\.1:8421' must be an https"
    ):
        settings.with_overrides(agent_server_url="http://10.0.0.1:8421")
