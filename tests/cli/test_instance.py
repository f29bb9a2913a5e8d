"""`stratus instance` in-process against the in-process API on the fake cloud."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.errors import BackendError
from tests.support import CliResult

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHd8m5hLrq1vXbU3lY4D2v5b5nK0q0s7b1tQm1c2a3b4 alice@lab"
Stratus = Callable[..., CliResult]


def test_run_shows_progress_then_a_table(stratus: Stratus, tmp_path: Path) -> None:
    key = tmp_path / "id.pub"
    key.write_text(KEY + "\n")
    result = stratus("instance", "run", "debian-12", "-n", "2", "--name", "web", "--key", str(key))
    assert result.code == 0, result.err
    assert "web-1: recorded" in result.err and "web-2: running at 10.99." in result.err
    assert "2 of 2 running." in result.out
    assert "web-1" in result.out and "running" in result.out


def test_json_output_is_machine_readable_and_progress_free(stratus: Stratus) -> None:
    result = stratus("instance", "run", "debian-12", "--name", "solo", "-o", "json")
    assert result.code == 0 and result.err == ""
    (view,) = json.loads(result.out)
    assert view["name"] == "solo" and view["state"] == "running" and view["addresses"]
    listed = json.loads(stratus("instance", "list", "-o", "json").out)
    assert [v["id"] for v in listed] == [view["id"]]


def test_exec_passes_the_exit_code_and_output_through(stratus: Stratus) -> None:
    stratus("instance", "run", "debian-12", "--name", "box")
    echoed = stratus("instance", "exec", "box", "--", "echo", "-n", "hi")
    assert (echoed.code, echoed.out) == (0, "-n hi\n")
    assert stratus("instance", "exec", "box", "--", "false").code == 1
    missing = stratus("instance", "exec", "box", "--", "nosuch")
    assert missing.code == 127 and "nosuch: command not found" in missing.err


def test_stop_start_kill_accept_several_instances(stratus: Stratus) -> None:
    stratus("instance", "run", "debian-12", "-n", "2", "--name", "pair")
    assert "stopped" in stratus("instance", "stop", "pair-1", "pair-2").out
    assert stratus("instance", "start", "pair-1").code == 0
    killed = json.loads(stratus("instance", "kill", "pair-1", "pair-2", "-o", "json").out)
    assert [v["state"] for v in killed] == ["gone", "gone"]
    assert "No instances" in stratus("instance", "list").err


def test_user_errors_are_one_line_with_a_documented_exit_code(
    stratus: Stratus, tmp_path: Path
) -> None:
    cases = {
        ("instance", "run", "nope"): (66, "error: no image called 'nope'"),
        ("instance", "run", "debian-12", "--key", str(tmp_path / "missing.pub")): (
            65,
            "cannot read the key file",
        ),
        ("instance", "run", "debian-12", "--cpu", "64"): (68, "not enough capacity"),
        ("instance", "show", "ghost"): (66, "no instance 'ghost'"),
    }
    for args, (code, message) in cases.items():
        result = stratus(*args)
        assert result.code == code, (args, result)
        assert result.err.startswith("error: ") and message in result.err
        assert len(result.err.strip().splitlines()) == 1


def test_usage_errors_exit_64_with_clicks_usage_text(stratus: Stratus) -> None:
    result = stratus("instance", "run")
    assert result.code == 64 and "Missing argument 'IMAGE'" in result.err


def test_bad_user_data_is_refused_before_anything_starts(
    stratus: Stratus, tmp_path: Path, fake: FakeConnector
) -> None:
    data = tmp_path / "ud.txt"
    data.write_text("apt-get install nginx\n")
    result = stratus("instance", "run", "debian-12", "--user-data", str(data))
    assert result.code == 65 and "ud.txt: user-data must start with '#!'" in result.err
    assert fake.list_instances() == []


def test_a_partial_failure_is_shown_and_exits_non_zero(
    stratus: Stratus, fake: FakeConnector
) -> None:
    fake.ex_fail_next("create", BackendError("LXD: quota"))
    result = stratus("instance", "run", "debian-12", "-n", "2")
    assert result.code == 70
    assert "1 of 2 running" in result.out and "LXD: quota" in result.err
