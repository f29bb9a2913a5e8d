"""The debian-12 base image, as built by `stratus image build` during `make setup`."""

from __future__ import annotations

import json
import time

import pytest

from tests.integration.conftest import Stratus

pytestmark = pytest.mark.lxd


def sh(stratus: Stratus, ref: str, script: str) -> str:
    result = stratus("instance", "exec", ref, "--", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_building_again_is_a_cache_hit(stratus: Stratus) -> None:
    """The second build finds the image by its recipe's digest and builds nothing: the same
    fingerprint comes back. (How fast that is, bench/instance_run.py's neighbours measure: a
    wall-clock bound here would fail a loaded CI machine, not the code.)"""
    images = json.loads(stratus("image", "list", "-o", "json").stdout)
    (before,) = [i for i in images if i["name"] == "debian-12"]
    result = stratus("image", "build", "debian-12", "-o", "json")
    assert result.returncode == 0, result.stderr
    built = json.loads(result.stdout)
    assert built["cached"] is True
    assert built["fingerprint"] == before["fingerprint"]


def test_image_list_shows_it(stratus: Stratus) -> None:
    images = json.loads(stratus("image", "list", "-o", "json").stdout)
    (image,) = [i for i in images if i["name"] == "debian-12"]
    assert image["properties"]["stratus.recipe"] and image["description"].startswith("Debian 12")


def test_instances_are_distinct_systems_that_boot_cleanly(stratus: Stratus, prefix: str) -> None:
    result = stratus(
        "instance", "run", "debian-12", "-n", "2", "--name", f"{prefix}-img", "-o", "json"
    )
    assert result.returncode == 0, result.stderr
    one, two = json.loads(result.stdout)
    try:
        facts = []
        for view in (one, two):
            deadline = time.monotonic() + 60
            while sh(stratus, view["id"], "systemctl is-system-running || true") not in (
                "running",
                "degraded",
            ):
                assert time.monotonic() < deadline, "boot never finished"
                time.sleep(0.5)
            assert sh(stratus, view["id"], "systemctl is-system-running || true") == "running", sh(
                stratus, view["id"], "systemctl --failed --no-legend"
            )
            facts.append(
                {
                    "hostname": sh(stratus, view["id"], "hostname"),
                    "machine_id": sh(stratus, view["id"], "cat /etc/machine-id"),
                    "host_key": sh(
                        stratus, view["id"], "cat /etc/ssh/ssh_host_ed25519_key.pub | cut -d' ' -f2"
                    ),
                }
            )
            assert sh(stratus, view["id"], "python3 -c 'print(1+1)'") == "2"
            assert sh(stratus, view["id"], "grep -c nameserver /etc/resolv.conf") != "0"
            assert view["addresses"][0] in sh(stratus, view["id"], "hostname -I")
        assert [f["hostname"] for f in facts] == [one["name"], two["name"]]
        assert facts[0]["machine_id"] != facts[1]["machine_id"]
        assert facts[0]["host_key"] != facts[1]["host_key"], (
            "instances must not share ssh host keys"
        )
        # Instances reach the Debian mirror through NAT, so recipes can install packages.
        assert (
            sh(stratus, one["id"], "apt-get update -q >/dev/null 2>&1 && echo reachable")
            == "reachable"
        )
    finally:
        stratus("instance", "kill", one["id"], two["id"])
