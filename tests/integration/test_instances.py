"""What a scientist does with `stratus instance`, end to end on LXD."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from stratuslab.cloud.connectors.lxd_api import LxdApi
from tests.integration.conftest import Stratus

pytestmark = pytest.mark.lxd


def run_json(stratus: Stratus, *args: str) -> list[dict[str, object]]:
    result = stratus(*args, "-o", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    return data if isinstance(data, list) else [data]


def ssh_to(key: Path, address: str, command: str) -> subprocess.CompletedProcess[str]:
    options = [
        "BatchMode=yes",
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "ConnectTimeout=10",
        "ConnectionAttempts=10",
    ]
    argv = [
        "ssh",
        "-i",
        str(key),
        *(a for o in options for a in ("-o", o)),
        f"root@{address}",
        command,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def wait_for_file(stratus: Stratus, ref: str, path: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = stratus("instance", "exec", ref, "--", "cat", path)
        if result.returncode == 0:
            return result.stdout
        time.sleep(0.5)
    raise AssertionError(f"{path} never appeared in {ref}")


def test_run_with_key_and_user_data_then_ssh_in_as_root(
    stratus: Stratus, keypair: Path, tmp_path: Path, prefix: str
) -> None:
    script = tmp_path / "boot.sh"
    script.write_text('#!/bin/sh\necho "booted $(hostname)" >> /root/user-data.log\n')
    (view,) = run_json(
        stratus,
        "instance",
        "run",
        "debian-12",
        "--key",
        f"{keypair}.pub",
        "--user-data",
        str(script),
        "--name",
        f"{prefix}-ssh",
        "--cpu",
        "1",
        "--ram",
        "512",
    )
    assert (
        view["state"] == "running"
        and view["addresses"]
        and (view["cpu"], view["ram_mb"]) == (1, 512)
    )
    assert (
        wait_for_file(stratus, str(view["id"]), "/root/user-data.log") == f"booted {prefix}-ssh\n"
    )
    status = json.loads(
        wait_for_file(stratus, str(view["id"]), "/var/lib/stratus-context/final.status")
    )
    assert status["exit_code"] == 0

    address = view["addresses"][0]  # type: ignore[index]
    ssh = ssh_to(keypair, str(address), "id -un; hostname")
    assert ssh.returncode == 0, ssh.stderr
    assert ssh.stdout.split() == ["root", f"{prefix}-ssh"]

    via_cli = stratus("instance", "ssh", str(view["id"]), "-i", str(keypair), "--", "uname", "-n")
    assert via_cli.returncode == 0 and via_cli.stdout.strip() == f"{prefix}-ssh"

    # The user-data ran once: a restart does not run it again.
    assert stratus("instance", "stop", str(view["id"])).returncode == 0
    assert stratus("instance", "start", str(view["id"])).returncode == 0
    time.sleep(2)  # time for a wrongly repeated user-data run to show
    assert (
        wait_for_file(stratus, str(view["id"]), "/root/user-data.log") == f"booted {prefix}-ssh\n"
    )
    assert run_json(stratus, "instance", "kill", str(view["id"]))[0]["state"] == "gone"


def test_a_key_is_required_to_ssh_in(stratus: Stratus, keypair: Path, prefix: str) -> None:
    (view,) = run_json(stratus, "instance", "run", "debian-12", "--name", f"{prefix}-nokey")
    ssh = ssh_to(keypair, str(view["addresses"][0]), "true")  # type: ignore[index]
    assert ssh.returncode == 255 and "Permission denied" in ssh.stderr
    stratus("instance", "kill", str(view["id"]))


def test_n_instances_start_in_parallel_with_their_own_addresses(
    stratus: Stratus, prefix: str
) -> None:
    started = time.monotonic()
    views = run_json(stratus, "instance", "run", "debian-12", "-n", "3", "--name", f"{prefix}-par")
    elapsed = time.monotonic() - started
    assert sorted(v["name"] for v in views) == [f"{prefix}-par-{i}" for i in (1, 2, 3)]  # type: ignore[type-var]
    assert all(v["state"] == "running" for v in views)
    assert len({v["addresses"][0] for v in views}) == 3  # type: ignore[index]
    assert elapsed < 60
    killed = run_json(stratus, "instance", "kill", *(str(v["id"]) for v in views))
    assert {v["state"] for v in killed} == {"gone"}


def test_reconciliation_with_what_lxd_really_has(
    stratus: Stratus, lxd: LxdApi, live_env: dict[str, str], prefix: str
) -> None:
    doomed, orphan = run_json(
        stratus, "instance", "run", "debian-12", "-n", "2", "--name", f"{prefix}-rec"
    )
    # Deleted behind our back: shows as gone.
    lxd.put(
        LxdApi.path("instances", str(doomed["name"]), "state"), {"action": "stop", "force": True}
    )
    lxd.delete(LxdApi.path("instances", str(doomed["name"])))
    # Lost by the store (a crash between the two): found again.
    with sqlite3.connect(Path(live_env["STRATUS_DATA_DIR"]) / "stratus.db") as db:
        db.execute("DELETE FROM instances WHERE id = ?", (orphan["id"],))
    listed = {v["id"]: v for v in run_json(stratus, "instance", "list", "--gone")}
    assert listed[doomed["id"]]["state"] == "gone"
    assert listed[doomed["id"]]["error"] == "deleted outside StratusLab"
    assert listed[orphan["id"]]["state"] == "running" and listed[orphan["id"]]["recovered"] is True
    assert listed[orphan["id"]]["owner"] == "alice"
    stratus("instance", "kill", str(orphan["id"]))


def test_errors_are_one_line_with_documented_codes(
    stratus: Stratus, tmp_path: Path, live_env: dict[str, str]
) -> None:
    bad_data = tmp_path / "ud.bin"
    bad_data.write_bytes(b"\x1f\x8b\x08\x00\xff\xfe")  # gzip-compressed, as some tools send
    cases = [
        (("instance", "run", "no-such-image"), 66, "no image called 'no-such-image'"),
        (
            ("instance", "run", "debian-12", "--key", str(tmp_path / "none.pub")),
            65,
            "cannot read the key file",
        ),
        (("instance", "run", "debian-12", "--user-data", str(bad_data)), 65, "UTF-8 text"),
        (("instance", "run", "debian-12", "--ram", "100000000"), 68, "not enough capacity"),
    ]
    for args, code, message in cases:
        result = stratus(*args)
        assert result.returncode == code, (args, result.stderr)
        last = result.stderr.strip().splitlines()[
            -1
        ]  # the first command may note it started the server
        assert last.startswith("error:") and message in last
        assert "Traceback" not in result.stderr


@pytest.mark.spawns
def test_lxd_not_running_is_one_line_with_its_exit_code(live_env: dict[str, str]) -> None:
    import sys

    env = {**live_env, "STRATUS_LXD_ENDPOINT": "unix:///nonexistent/lxd.sock"}
    result = subprocess.run(
        [sys.executable, "-m", "stratuslab", "cloud", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 69
    assert result.stderr.strip() == (
        "error: LXD is not reachable at unix:///nonexistent/lxd.sock; "
        "start it with `stratus cloud init`"
    )
