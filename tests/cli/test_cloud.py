"""`stratus cloud add|list|show|set|disable|enable|remove`, in-process against the in-process
API on the fake cloud: alice (the site's administrator here) and bob, who is not. Secrets are
read from stdin and never printed."""

from __future__ import annotations

import io
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from stratuslab.cloud import clouds
from stratuslab.cloud.connectors import REGISTRY
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.config import Settings
from stratuslab.errors import EXIT_USAGE
from tests.support import CliResult, as_json

Cli = Callable[..., CliResult]
SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
NAMESPACE: list[str] = []  # the fake backend the "libcloud" stand-in uses, per test


class PublicCloudStandIn(FakeConnector):
    """Takes exactly the options of connector "libcloud", on the fake backend."""

    def __init__(
        self, *, provider: str, region: str, key_id: str, secret: str, endpoint: str | None
    ) -> None:
        assert secret == SECRET  # what stdin held, first line, as it was
        super().__init__(namespace=NAMESPACE[-1])


@pytest.fixture(autouse=True)
def libcloud(monkeypatch: pytest.MonkeyPatch, fake_namespace: str) -> None:
    monkeypatch.setitem(REGISTRY, "libcloud", f"{__name__}:PublicCloudStandIn")
    NAMESPACE.append(fake_namespace)


@pytest.fixture
def stdin(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    return lambda text: monkeypatch.setattr(sys, "stdin", io.StringIO(text))


EC2 = ("--libcloud", "ec2", "--region", "eu-west-1", "--key-id", "AKIAEXAMPLE", "--secret-stdin")


def test_a_public_cloud_is_added_listed_changed_disabled_and_removed(
    stratus: Cli, bob: Cli, stdin: Callable[[str], None], settings: Settings
) -> None:
    stdin(SECRET + "\nignored\n")
    added = stratus("cloud", "add", "aws", *EC2, "--priority", "500", "--max-instances", "20")
    assert added.code == 0, added.err
    assert added.out.strip() == (
        "cloud aws: added (libcloud at eu-west-1, priority 500, at most 20 instances, enabled)"
    )
    from stratuslab.db.session import engine_for

    recorded = clouds.get(engine_for(settings.database_url), "aws")
    assert recorded.options == {
        "provider": "ec2",
        "region": "eu-west-1",
        "key_id": "AKIAEXAMPLE",
        "secret": SECRET,
        "endpoint": None,
    }
    listing = stratus("cloud", "list")
    assert listing.code == 0
    lines = listing.out.splitlines()
    assert lines[0].split() == [
        "NAME",
        "CONNECTOR",
        "PRIORITY",
        "STATE",
        "MAX",
        "INSTANCES",
        "VOLUMES",
        "WHERE",
    ]
    assert [line.split()[0] for line in lines[1:]] == ["local", "aws"]
    assert lines[2].split() == ["aws", "libcloud", "500", "enabled", "20", "0", "0", "eu-west-1"]
    shown = stratus("cloud", "show", "aws")
    assert shown.code == 0 and "option secret" in shown.out and "********" in shown.out
    assert "8 CPUs" in shown.out

    assert as_json(stratus, "cloud", "set", "aws", "--priority", "5")["priority"] == 5
    assert (
        as_json(stratus, "cloud", "set", "aws", "--max-instances", "none")["max_instances"] is None
    )
    off = stratus("cloud", "disable", "aws", "--reason", "bill too high [red]")
    assert off.code == 0 and "disabled: bill too high [red]" in off.out
    assert [c["name"] for c in as_json(bob, "cloud", "list")] == ["local"]
    assert [c["name"] for c in as_json(stratus, "cloud", "list")] == ["aws", "local"]
    assert stratus("cloud", "list").out.splitlines()[1].split()[:4] == [
        "aws",
        "libcloud",
        "5",
        "disabled:",
    ]
    assert as_json(stratus, "cloud", "show", "aws")["note"] == "bill too high [red]"
    assert bob("cloud", "show", "aws").code == 66
    on = as_json(stratus, "cloud", "enable", "aws")
    assert (on["enabled"], on["note"]) == (True, None)
    assert as_json(bob, "cloud", "show", "aws")["options"] is None

    gone = stratus("cloud", "remove", "aws")
    assert (gone.code, gone.out.strip()) == (0, "cloud aws: removed")
    assert [c["name"] for c in as_json(stratus, "cloud", "list")] == ["local"]
    everything = "".join(
        r.out + r.err for r in (added, listing, shown, off, stratus("cloud", "show", "local"))
    )
    assert SECRET not in everything


def test_users_list_clouds_without_their_options_and_change_nothing(
    bob: Cli, stdin: Callable[[str], None]
) -> None:
    listing = bob("cloud", "list")
    assert listing.code == 0 and "WHERE" not in listing.out
    assert listing.out.splitlines()[1].split()[:4] == ["local", "fake", "100", "enabled"]
    stdin(SECRET + "\n")
    refused = bob("cloud", "add", "aws", *EC2)
    assert refused.code == 77 and "only a site administrator may" in refused.err
    assert bob("cloud", "disable", "local").code == 77
    assert bob("cloud", "remove", "local").code == 77


def test_an_unreachable_lxd_is_refused_naming_its_url(
    stratus: Cli, stdin: Callable[[str], None]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"https://127.0.0.1:{probe.getsockname()[1]}"
    stdin("trust-me\n")
    refused = stratus("cloud", "add", "far", "--lxd", url, "--trust-password-stdin")
    assert refused.code == 69 and url in refused.err, refused.err
    assert "trust-me" not in refused.out + refused.err
    assert [c["name"] for c in as_json(stratus, "cloud", "list")] == ["local"]


@pytest.mark.parametrize(
    "args",
    [
        ("cloud", "add", "x"),
        ("cloud", "add", "x", "--lxd", "https://h:8443", "--libcloud", "ec2"),
        ("cloud", "add", "x", "--lxd", "https://h:8443", "--region", "r"),
        ("cloud", "add", "x", "--lxd", "https://h:8443", "--secret-stdin"),
        ("cloud", "add", "x", "--libcloud", "ec2", "--region", "r", "--key-id", "k"),
        ("cloud", "add", "x", "--libcloud", "ec2", "--fingerprint", "ab"),
        ("cloud", "set", "local"),
        ("cloud", "set", "local", "--max-instances", "lots"),
    ],
)
def test_usage_errors(stratus: Cli, args: tuple[str, ...]) -> None:
    assert stratus(*args).code == EXIT_USAGE


def test_a_certificate_given_must_be_a_pem_file(stratus: Cli, tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("not a certificate")
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    assert stratus("cloud", "add", "x", "--lxd", "https://h:8443", "--cert", str(cert)).code == (
        EXIT_USAGE
    )
    refused = stratus(
        "cloud", "add", "x", "--lxd", "https://h:8443", "--cert", str(cert), "--key", str(key)
    )
    assert refused.code == 65 and "is not a PEM file" in refused.err
