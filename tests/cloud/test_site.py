"""`cloud init` on the real LXD daemon that `make setup` initialised."""

from __future__ import annotations

import pytest

from stratuslab.cloud import site, sitecert
from stratuslab.cloud.connectors.lxd_api import LxdApi
from stratuslab.cloud.connectors.lxd_nics import NIC_FILTERING
from stratuslab.config import Settings

pytestmark = pytest.mark.lxd


def test_initialising_an_initialised_cloud_changes_nothing(settings: Settings) -> None:
    sitecert.ensure(settings)  # this test's data directory is new; the host's LXD is not
    report = site.initialise(settings)
    assert dict(report.steps) == {
        "daemon": "running",
        "host limits": "present",
        f"bridge {settings.lxd_bridge}": "present",
        f"storage pool {settings.lxd_pool}": "present",
        f"profile {settings.lxd_profile}": "present",
        "site certificate": "present",
    }
    assert not report.changed


def test_the_profile_nic_filters_spoofing_and_the_site_ca_is_made_once(settings: Settings) -> None:
    report = site.initialise(settings)
    assert dict(report.steps)["site certificate"] == "created"
    api = LxdApi(settings.lxd_endpoint)
    try:
        eth0 = api.get(LxdApi.path("profiles", settings.lxd_profile))["devices"]["eth0"]
    finally:
        api.close()
    assert {k: eth0.get(k) for k in NIC_FILTERING} == NIC_FILTERING
    status = site.status(settings)["site_ca"]
    assert status == {"present": True, "sha256": sitecert.ensure(settings).ca_sha256}


def test_status_reports_daemon_bridge_pool_images_and_capacity(settings: Settings) -> None:
    report = site.status(settings)
    assert report["daemon"]["running"] and report["daemon"]["version"]
    assert report["bridge"]["present"] and report["bridge"]["ipv4.address"] == settings.lxd_subnet
    assert report["bridge"]["ipv4.nat"] == "true"
    assert report["pool"]["driver"] == "btrfs" and report["pool"]["free_mb"] > 0
    assert any("debian-12" in image["aliases"] for image in report["images"])
    assert report["capacity"]["cpus"] >= 1 and report["capacity"]["memory_free_mb"] > 0


def test_a_bridge_whose_settings_drifted_is_put_back(settings: Settings) -> None:
    """A bridge with another NAT setting is corrected (it is declarative), then left alone."""
    from stratuslab.cloud.connectors.lxd_api import LxdApi

    api = LxdApi(settings.lxd_endpoint)
    path = LxdApi.path("networks", settings.lxd_bridge)
    try:
        api.patch(path, {"config": {"ipv4.nat": "false"}})
        report = site.initialise(settings)
        assert dict(report.steps)[f"bridge {settings.lxd_bridge}"] == "updated"
        assert api.get(path)["config"]["ipv4.nat"] == "true"
    finally:
        api.patch(path, {"config": {"ipv4.nat": "true"}})
        api.close()
