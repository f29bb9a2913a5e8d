"""What a scientist does with `stratus instance`, end to end on LXD."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from stratuslab.cloud.connectors.lxd_api import LxdApi
from tests.integration.conftest import Stratus, cli_json, destroy_container
from tests.support import wait_until

pytestmark = pytest.mark.lxd


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
    def read() -> str | None:
        result = stratus("instance", "exec", ref, "--", "cat", path)
        return result.stdout if result.returncode == 0 else None

    return wait_until(read, timeout, f"{path} to appear in {ref}", interval=0.5)  # type: ignore[no-any-return]


def wait_for_boot(stratus: Stratus, ref: str) -> str:
    """How systemd says the boot of ``ref`` ended, once every start-up job has finished
    ("degraded" exits non-zero but has finished too)."""
    result = stratus("instance", "exec", ref, "--", "systemctl", "is-system-running", "--wait")
    return result.stdout.strip()


def test_run_with_key_and_user_data_then_ssh_in_as_root(
    stratus: Stratus, keypair: Path, tmp_path: Path, prefix: str
) -> None:
    script = tmp_path / "boot.sh"
    script.write_text('#!/bin/sh\necho "booted $(hostname)" >> /root/user-data.log\n')
    (view,) = cli_json(
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
    ref = str(view["id"])
    try:
        assert (
            view["state"] == "running"
            and view["addresses"]
            and (view["cpu"], view["ram_mb"]) == (1, 512)
        )
        assert wait_for_file(stratus, ref, "/root/user-data.log") == f"booted {prefix}-ssh\n"
        status = json.loads(wait_for_file(stratus, ref, "/var/lib/stratus-context/final.status"))
        assert status["exit_code"] == 0

        address = view["addresses"][0]
        ssh = ssh_to(keypair, str(address), "id -un; hostname")
        assert ssh.returncode == 0, ssh.stderr
        assert ssh.stdout.split() == ["root", f"{prefix}-ssh"]

        via_cli = stratus("instance", "ssh", ref, "-i", str(keypair), "--", "uname", "-n")
        assert via_cli.returncode == 0 and via_cli.stdout.strip() == f"{prefix}-ssh"

        # The user-data ran once: a restart does not run it again, once the boot has finished.
        assert stratus("instance", "stop", ref).returncode == 0
        assert stratus("instance", "start", ref).returncode == 0
        assert wait_for_boot(stratus, ref) in ("running", "degraded")
        assert wait_for_file(stratus, ref, "/root/user-data.log") == f"booted {prefix}-ssh\n"
    finally:
        killed = cli_json(stratus, "instance", "kill", ref)
    assert killed[0]["state"] == "gone"


def test_cloud_config_installs_keys_writes_files_runs_commands_and_packages(
    stratus: Stratus, keypair: Path, tmp_path: Path, prefix: str
) -> None:
    public_key = Path(f"{keypair}.pub").read_text().strip()
    config = tmp_path / "cloud.yaml"
    config.write_text(
        "#cloud-config\n"
        "ssh_authorized_keys:\n"
        f"  - {public_key}\n"
        "write_files:\n"
        "  - path: /etc/lab/site.conf\n"
        "    content: |\n"
        "      site = lab\n"
        '    permissions: "0640"\n'
        "runcmd:\n"
        '  - echo "runcmd on $(hostname) read $(cat /etc/lab/site.conf)" > /root/runcmd.log\n'
        "package_update: true\n"
        "packages: [jq]\n"
    )
    # No --key: the only way in is the key the cloud-config installs.
    (view,) = cli_json(
        stratus,
        "instance",
        "run",
        "debian-12",
        "--user-data",
        str(config),
        "--name",
        f"{prefix}-cc",
    )
    ref = str(view["id"])
    try:
        status = json.loads(
            wait_for_file(stratus, ref, "/var/lib/stratus-context/final.status", timeout=180)
        )
        assert status["exit_code"] == 0, wait_for_file(stratus, ref, "/var/log/stratus-context.log")
        written = stratus(
            "instance", "exec", ref, "--", "stat", "-c", "%a %U", "/etc/lab/site.conf"
        )
        assert written.stdout.split() == ["640", "root"], written.stderr
        assert wait_for_file(stratus, ref, "/etc/lab/site.conf") == "site = lab\n"
        # runcmd ran after write_files, once, as root in a shell.
        assert (
            wait_for_file(stratus, ref, "/root/runcmd.log")
            == f"runcmd on {prefix}-cc read site = lab\n"
        )
        jq = stratus("instance", "exec", ref, "--", "sh", "-c", "echo '{\"a\": 2}' | jq .a")
        assert jq.stdout.strip() == "2", jq.stderr  # the package was installed

        ssh = ssh_to(keypair, str(view["addresses"][0]), "id -un; hostname")
        assert ssh.returncode == 0, ssh.stderr
        assert ssh.stdout.split() == ["root", f"{prefix}-cc"]
    finally:
        stratus("instance", "kill", ref)


def test_a_key_is_required_to_ssh_in(stratus: Stratus, keypair: Path, prefix: str) -> None:
    (view,) = cli_json(stratus, "instance", "run", "debian-12", "--name", f"{prefix}-nokey")
    try:
        ssh = ssh_to(keypair, str(view["addresses"][0]), "true")
        assert ssh.returncode == 255 and "Permission denied" in ssh.stderr
    finally:
        stratus("instance", "kill", str(view["id"]))


def test_n_instances_start_in_parallel_with_their_own_addresses(
    stratus: Stratus, lxd: LxdApi, prefix: str
) -> None:
    views: list[dict[str, Any]] = []
    try:
        views = cli_json(
            stratus, "instance", "run", "debian-12", "-n", "3", "--name", f"{prefix}-par"
        )
        assert sorted(v["name"] for v in views) == [f"{prefix}-par-{i}" for i in (1, 2, 3)]
        assert all(v["state"] == "running" for v in views)
        assert len({v["addresses"][0] for v in views}) == 3
        # In parallel: LXD was asked to create every one of them before any had its address
        # (in series, the second would be created only once the first answered).
        created = {
            i["name"]: datetime.fromisoformat(i["created_at"])
            for i in lxd.get("/1.0/instances", recursion=1)
            if i["name"].startswith(f"{prefix}-par-")
        }
        first_up = min(datetime.fromisoformat(v["started_at"]) for v in views)
        assert len(created) == 3 and max(created.values()) < first_up, (created, first_up)
    finally:
        killed = cli_json(stratus, "instance", "kill", *(str(v["id"]) for v in views))
    assert {v["state"] for v in killed} == {"gone"}


def test_reconciliation_with_what_lxd_really_has(
    stratus: Stratus, lxd: LxdApi, live_env: dict[str, str], prefix: str
) -> None:
    doomed, orphan = cli_json(
        stratus, "instance", "run", "debian-12", "-n", "2", "--name", f"{prefix}-rec"
    )
    try:
        # Deleted behind our back: shows as gone.
        destroy_container(lxd, str(doomed["name"]))
        # Lost by the store (a crash between the two): found again.
        with sqlite3.connect(Path(live_env["STRATUS_DATA_DIR"]) / "stratus.db") as db:
            db.execute("DELETE FROM instances WHERE id = ?", (orphan["id"],))
        listed = {v["id"]: v for v in cli_json(stratus, "instance", "list", "--gone")}
        assert listed[doomed["id"]]["state"] == "gone"
        assert listed[doomed["id"]]["error"] == "deleted outside StratusLab"
        assert (
            listed[orphan["id"]]["state"] == "running" and listed[orphan["id"]]["recovered"] is True
        )
        assert listed[orphan["id"]]["owner"] == "alice"
    finally:
        stratus("instance", "kill", str(doomed["id"]), str(orphan["id"]))


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
