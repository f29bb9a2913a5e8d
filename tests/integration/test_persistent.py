"""examples/webapp-persistent on real LXD: deployed, torn down and deployed again, its database
on the user's volume pgdata; the second deployment finds what the first one wrote."""

from __future__ import annotations

from typing import Any

import pytest

from stratuslab.cloud.connectors.lxd_api import LxdApi
from tests.integration.conftest import Stratus, cli_json
from tests.integration.test_deploy import deploy, leftovers, params

pytestmark = pytest.mark.lxd
EXAMPLE = "examples/webapp-persistent"


def custom_volumes(lxd: LxdApi) -> dict[str, dict[str, Any]]:
    """LXD's custom volumes on every pool, by name."""
    found = {}
    for pool in lxd.get("/1.0/storage-pools"):
        name = pool.rsplit("/", 1)[-1]
        for volume in lxd.get(f"/1.0/storage-pools/{name}/volumes/custom", recursion=1):
            found[volume["name"]] = volume
    return found


def test_the_database_keeps_its_data_from_one_deployment_to_the_next(
    stratus: Stratus, lxd: LxdApi
) -> None:
    made = cli_json(stratus, "volume", "create", "pgdata", "--size", "1GiB")
    try:
        backend = [
            name
            for name, volume in custom_volumes(lxd).items()
            if volume["config"].get("user.stratus.id") == made["id"]
        ]
        assert len(backend) == 1, custom_volumes(lxd)
        for earlier, first in (("0", "yes"), ("1", "no")):
            code, run, stderr = deploy(stratus, EXAMPLE, "--keep-running", "never", timeout=600)
            assert code == 0, (run.get("abort_reason"), stderr[-2000:])
            assert run["state"] == "Done"
            values = params(stratus, run["id"])
            assert values["test.1:result"] == "passed"  # the webapp's own test, through the lb
            assert (values["db.1:first"], values["test.1:earlier"]) == (first, earlier)
            shown = cli_json(stratus, "run", "show", run["id"])
            (db,) = [n for n in shown["nodes"] if n["name"] == "db.1"]
            assert [(v["ref"], v["path"], v["fresh"]) for v in db["volumes"]] == [
                (f"{made['owner']}/pgdata", "/var/lib/postgresql", False)
            ]
            assert leftovers(lxd, run["id"]) == []
            kept = cli_json(stratus, "volume", "show", "pgdata")
            assert (kept["state"], kept["attachments"]) == ("ready", [])  # kept, detached
            assert backend[0] in custom_volumes(lxd)
    finally:
        deleted = stratus("volume", "delete", "pgdata")
    assert deleted.returncode == 0, deleted.stderr
    assert backend[0] not in custom_volumes(lxd)
