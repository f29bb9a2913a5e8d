from __future__ import annotations

from pathlib import Path

import pytest

from stratuslab import config
from stratuslab.errors import Invalid
from tests.support import environment


def test_defaults_put_everything_under_the_data_dir(tmp_path: Path) -> None:
    settings = config.load(environment(tmp_path))
    assert settings.data_dir == tmp_path / "data"
    assert settings.database_url == f"sqlite:///{tmp_path / 'data' / 'stratus.db'}"
    assert settings.database_path == tmp_path / "data" / "stratus.db"
    assert settings.user == "alice"
    assert settings.lxd_endpoint.startswith("unix://")


def test_file_tables_flatten_onto_settings_and_environment_wins(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        'instance_prefix = "lab"\n[lxd]\nbridge = "br7"\npool_size_gib = 12\n'
    )
    settings = config.load(environment(tmp_path, STRATUS_LXD_BRIDGE="br9"))
    assert settings.instance_prefix == "lab"
    assert settings.lxd_pool_size_gib == 12
    assert settings.lxd_bridge == "br9"


def test_an_unknown_key_names_the_file_and_the_key(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[lxd]\nbrige = 'typo'\n")
    with pytest.raises(Invalid, match=r"config.toml: unknown setting 'lxd_brige'"):
        config.load(environment(tmp_path))


def test_a_broken_file_is_reported_with_its_path(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("this is = = not toml")
    with pytest.raises(Invalid, match="cannot read configuration"):
        config.load(environment(tmp_path))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("STRATUS_LXD_SUBNET", "10.0.0.0/24", "gateway address"),
        ("STRATUS_LXD_SUBNET", "not-a-net", "lxd_subnet"),
        ("STRATUS_INSTANCE_PREFIX", "Bad_Prefix", "instance_prefix"),
        ("STRATUS_LXD_POOL_SIZE_GIB", "2", "at least 5 GiB"),
        ("STRATUS_LXD_POOL_SIZE_GIB", "many", "lxd_pool_size_gib"),
        ("STRATUS_DATABASE_URL", "mysql://x", "neither sqlite"),
    ],
)
def test_unsafe_or_malformed_values_are_refused(
    tmp_path: Path, key: str, value: str, message: str
) -> None:
    with pytest.raises(Invalid, match=message):
        config.load(environment(tmp_path, **{key: value}))


def test_overrides_are_validated_too(tmp_path: Path) -> None:
    settings = config.load(environment(tmp_path))
    assert settings.with_overrides(lxd_bridge="br2").lxd_bridge == "br2"
    with pytest.raises(Invalid):
        settings.with_overrides(lxd_subnet="300.1.1.1/24")


def test_the_trust_policy_defaults_start_what_started_before(tmp_path: Path) -> None:
    settings = config.load(environment(tmp_path))
    assert (settings.policy_unsigned, settings.policy_expired, settings.policy_site_images) == (
        "allow",
        "refuse",
        "allow",
    )
    assert settings.policy_trust_store == "" and settings.policy_endorsers_deny == ()


def test_policy_lists_come_from_a_table_of_the_file_or_the_environment(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        "[policy]\n"
        'unsigned = "refuse"\n'
        'trust_store = "/etc/grid-security/certificates"\n'
        'crls = ["/etc/grid-security/certificates/5f2c8a1e.r0"]\n'
        'endorsers_allow = ["jane@example.org", "CN=Jane Tester,O=Grid"]\n'
    )
    settings = config.load(
        environment(
            tmp_path,
            STRATUS_POLICY_ENDORSERS_DENY="/O=Grid/CN=Mallory; eve@example.net\n",
            STRATUS_POLICY_CHECKSUMS_DENY="d41d8cd98f00b204e9800998ecf8427e",
        )
    )
    assert settings.policy_unsigned == "refuse"
    assert settings.policy_crls == ("/etc/grid-security/certificates/5f2c8a1e.r0",)
    assert settings.policy_endorsers_allow == ("jane@example.org", "CN=Jane Tester,O=Grid")
    assert settings.policy_endorsers_deny == ("/O=Grid/CN=Mallory", "eve@example.net")
    assert settings.policy_checksums_deny == ("d41d8cd98f00b204e9800998ecf8427e",)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("STRATUS_POLICY_UNSIGNED", "sometimes", "policy_unsigned: allow or refuse"),
        ("STRATUS_POLICY_EXPIRED", "yes", "policy_expired: allow or refuse"),
        ("STRATUS_POLICY_CRLS", "/tmp/x.crl", "policy_crls: .*set policy_trust_store"),
        ("STRATUS_POLICY_ENDORSERS_ALLOW", "jane", "'jane' is not an e-mail address or a"),
        ("STRATUS_POLICY_ENDORSERS_DENY", "/O=Grid/XY=Eve", "unknown DN attribute 'XY'"),
        ("STRATUS_POLICY_IDENTIFIERS_DENY", "short", "'short' is not a 27-character"),
        ("STRATUS_POLICY_CHECKSUMS_ALLOW", "abc123", "'abc123' is not the hex digest"),
    ],
)
def test_a_policy_setting_that_cannot_be_compared_is_refused(
    tmp_path: Path, key: str, value: str, message: str
) -> None:
    with pytest.raises(Invalid, match=message):
        config.load(environment(tmp_path, **{key: value}))
