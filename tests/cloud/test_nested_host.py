"""The nested host's checks and cache key (no LXD: the host itself is made by the ``lxd`` tests'
session fixture ``nested_lxd``, tests/cloud/connectors/test_lxd_remote.py)."""

from __future__ import annotations

import pytest

from stratuslab.cloud import nested_host
from stratuslab.cloud.nested_host_recipe import recipe_key
from stratuslab.config import Settings
from stratuslab.errors import Invalid


def test_the_cache_key_follows_the_base_image_and_the_inner_subnet(settings: Settings) -> None:
    inner = nested_host._inner_settings(settings, "10.211.0.1/24")
    key = recipe_key("a" * 64, inner)
    assert key == recipe_key("a" * 64, inner)
    assert key != recipe_key("b" * 64, inner)
    assert key != recipe_key("a" * 64, nested_host._inner_settings(settings, "10.212.0.1/24"))


def test_the_address_is_a_fixed_one_of_this_hosts_bridge(settings: Settings) -> None:
    assert nested_host._default_address(settings) == "10.210.0.250"
    inner = nested_host._inner_settings(settings, nested_host.DEFAULT_SUBNET)
    nested_host._check_address(settings, "10.210.0.250", inner)
    for outside in ("10.211.0.5", "10.210.0.1", "nowhere"):
        with pytest.raises(Invalid):
            nested_host._check_address(settings, outside, inner)


def test_the_inner_subnet_may_not_overlap_this_hosts(settings: Settings) -> None:
    with pytest.raises(Invalid, match="overlaps"):
        nested_host.ensure(settings=settings, subnet="10.210.0.129/25")
    with pytest.raises(Invalid):
        nested_host.ensure(settings=settings, subnet="not-a-subnet")
