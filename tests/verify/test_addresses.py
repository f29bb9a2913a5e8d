"""A user's watch may not make the server reach the site's private addresses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stratuslab.db.session import dispose, engine_for
from stratuslab.errors import Invalid
from stratuslab.principal import Principal
from stratuslab.verify import addresses, gitcache
from stratuslab.verify.watches import Watches, WatchSpec


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("git://127.0.0.1:9418/x.git", "127.0.0.1"),
        ("https://[::1]:8443/hook", "::1"),
        ("git@10.210.0.7:team/app.git", "10.210.0.7"),
        ("ssh://git@LOCALHOST./x", "localhost"),
        ("http://user:pw@169.254.169.254/latest", "169.254.169.254"),
    ],
)
def test_the_host_is_read_from_every_form_of_url(url: str, host: str) -> None:
    assert addresses.host_of(url) == host
    assert addresses.is_private(host)


@pytest.mark.parametrize(
    "host", ["10.0.0.1", "172.16.5.4", "192.168.1.1", "100.64.0.1", "fe80::1", "::ffff:127.0.0.1",
             "0.0.0.0", "224.0.0.1", "api.localhost"],
)  # fmt: skip
def test_private_loopback_link_local_shared_and_multicast_addresses_are_private(host: str) -> None:
    assert addresses.is_private(host)


@pytest.mark.parametrize("host", ["8.8.8.8", "2001:4860:4860::8888", "git.example.org"])
def test_public_addresses_and_names_are_not(host: str) -> None:
    assert not addresses.is_private(host)


@pytest.fixture
def watches(tmp_path: Path) -> Iterator[Watches]:
    url = f"sqlite:///{tmp_path / 'stratus.db'}"
    found = Watches(
        engine_for(url),
        check_url=lambda u, local: gitcache.check_url(u, local_allowed=local),
        private_addresses=False,
    )
    yield found
    dispose(url)


ALICE = Principal.for_user("alice")


@pytest.mark.parametrize(
    ("repository", "notify", "said"),
    [
        ("git://127.0.0.1:9418/app.git", [], "the repository's host '127.0.0.1'"),
        ("https://git.example.org/a.git", ["http://10.210.0.5:8000/x"], "the webhook's host"),
    ],
)
def test_a_user_is_refused_a_private_address_and_told_why(
    watches: Watches, repository: str, notify: list[str], said: str
) -> None:
    spec = WatchSpec(repository=repository, module="app", notify=notify)
    with pytest.raises(Invalid) as refused:
        watches.add(spec, caller=ALICE)
    assert said in refused.value.message
    assert watches.list_watches(caller=ALICE) == []


def test_the_forge_api_is_judged_too(watches: Watches) -> None:
    forge = {"kind": "gitea", "api": "http://127.0.0.1:3000/api/v1", "repo": "a/b", "token": "t"}
    spec = WatchSpec(repository="https://git.example.org/a.git", module="app", forge=forge)
    with pytest.raises(Invalid, match="the forge's host"):
        watches.add(spec, caller=ALICE)


def test_an_administrator_may_name_one(watches: Watches) -> None:
    spec = WatchSpec(repository="git://127.0.0.1:9418/app.git", module="app")
    admin = Principal.for_user("root", admin=True)
    assert watches.add(spec, caller=admin)["repository"] == spec.repository
