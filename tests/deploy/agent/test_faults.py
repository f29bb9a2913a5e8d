"""The agent and its tools against the fake server (fakeserver.py), for what the real server
cannot be made to do on purpose: fail, be down, refuse a completion as late, hold a state or
move it at a chosen moment, hand out no plan, and show the requests it was sent. Everything
else is tested against the real server (test_run.py, test_tools.py)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from stratuslab.deploy.agent.tools import NOBLOCK_RETRY_FOR
from tests.deploy.agent.conftest import PYTHON, Node, alive, eventually, tagged
from tests.deploy.agent.fakeserver import FakeRun, FakeServer, plan_for

pytestmark = pytest.mark.spawns

WEB = "examples/webapp/web"


def texts(fake_run: FakeRun, **match: str) -> list[str]:
    """What the recipes printed (without the agent's word on where each started and ended)."""
    return [line["text"] for line in fake_run.lines(**match) if line["stream"] != "phase"]


def marks(fake_run: FakeRun, recipe: str) -> list[dict[str, Any]]:
    """Where each recipe of step ``recipe`` started and ended, as the agent said."""
    return [json.loads(line["text"]) for line in fake_run.lines(recipe=recipe, stream="phase")]


# The agent.


def test_each_complete_names_the_state_it_completes(node: Node, fake_run: FakeRun) -> None:
    """So that the server can refuse one that arrives late (seen only in the requests)."""
    fake_run.plans["web.1"] = plan_for("web.1")
    fake_run.set("ss:state", "Provisioning")
    agent = node.start()
    assert agent.wait(30) == 0, node.agent_log()
    assert [
        path for method, path in fake_run.requests if method == "POST" and "complete" in path
    ] == [
        f"/run/{fake_run.run_id}/web.1:complete?state={state}"
        for state in ("Provisioning", "Executing", "SendingReports", "Ready")
    ]


def test_no_plan_aborts_the_run(node: Node, fake_run: FakeRun) -> None:
    reason = "web.1: no plan for Executing: nothing at /api/runs/6a1f0c1e-run/nodes/web.1/plan"
    fake_run.set("ss:state", "Executing")
    agent = node.start()
    assert fake_run.wait_until(lambda: fake_run.get("ss:abort") != "")
    assert fake_run.get("ss:abort").startswith(reason)
    fake_run.set("ss:state", "Cancelled")
    assert agent.wait(10) == 0


def test_a_step_is_stopped_when_the_run_leaves_executing(node: Node, fake_run: FakeRun) -> None:
    hanging = "#!/bin/sh\necho $$ > $TEST_ROOT/recipe.pid\ntrap '' TERM\nsleep 600\n"
    fake_run.plans["web.1"] = plan_for("web.1", deployment=[(WEB, hanging)])
    fake_run.set("ss:state", "Provisioning")
    agent = node.start()
    pid_file = node.root / "recipe.pid"
    assert eventually(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
    recipe = int(pid_file.read_text())
    assert eventually(lambda: any("sleep 600" in c for c in tagged(node.tag).values()))

    fake_run.set("ss:state", "SendingReports")  # timed out, say
    moved_at = time.monotonic()
    assert eventually(lambda: not alive(recipe), timeout=10)
    stopped_after = time.monotonic() - moved_at
    assert 4.5 < stopped_after < 7  # it ignores SIGTERM: SIGKILL came 5 s later
    assert not any("sleep 600" in c for c in tagged(node.tag).values())

    assert agent.wait(20) == 0, node.agent_log()
    assert "web.1" in fake_run.reports
    assert ("web.1", "Executing") not in fake_run.completes
    assert fake_run.get("ss:abort") == ""  # being stopped is not failing
    assert marks(fake_run, "deployment") == [
        {"event": "start", "n": 1, "module": WEB},
        {"event": "end", "n": 1, "module": WEB, "code": 137, "stopped": True},  # SIGKILL
    ]


def test_a_server_down_for_two_seconds_loses_nothing(
    node: Node, fake_run: FakeRun, server: FakeServer
) -> None:
    fake_run.plans["web.1"] = plan_for(
        "web.1", deployment=[(WEB, "#!/bin/sh\necho before\nsleep 1\necho after\n")]
    )
    fake_run.set("ss:state", "Provisioning")
    agent = node.start()
    assert fake_run.wait_until(lambda: fake_run.get("web.1:statecustom").startswith("Executing"))
    server.stop()
    time.sleep(2)
    server.start()

    assert agent.wait(30) == 0, node.agent_log()
    assert [state for _, state in fake_run.completes] == [
        "Provisioning",
        "Executing",
        "SendingReports",
        "Ready",
    ]
    assert texts(fake_run, recipe="deployment") == ["before", "after"]
    assert marks(fake_run, "deployment") == [
        {"event": "start", "n": 1, "module": WEB},
        {"event": "end", "n": 1, "module": WEB, "code": 0, "stopped": False},
    ]
    assert "retrying" in node.agent_log()


def _executed_once_then_killed(node: Node, fake_run: FakeRun) -> Path:
    """An agent that ran Executing's recipe (it counts its runs in $TEST_ROOT/runs) and
    completed it, then was killed; the run's states are the test's to move. Returns the
    marker of that Executing."""
    fake_run.advance_on_complete = False
    fake_run.plans["web.1"] = plan_for(
        "web.1", deployment=[(WEB, "#!/bin/sh\necho ran >> $TEST_ROOT/runs\n")]
    )
    marker = node.state_dir / "markers" / fake_run.run_id / "1-Executing"
    fake_run.set("ss:state", "Executing")
    first = node.start()
    assert eventually(lambda: marker.exists() and marker.read_text() == "completed")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    return marker


def test_a_restarted_agent_does_not_repeat_a_finished_state(node: Node, fake_run: FakeRun) -> None:
    _executed_once_then_killed(node, fake_run)
    second = node.start()
    assert eventually(lambda: node.agent_log().count("agent of web.1") == 2)
    time.sleep(1)
    assert fake_run.completes == [("web.1", "Executing")]
    assert (node.root / "runs").read_text() == "ran\n"

    fake_run.set("ss:state", "SendingReports")  # and it follows the run from there
    assert fake_run.wait_until(lambda: ("web.1", "SendingReports") in fake_run.completes)
    fake_run.set("ss:state", "Done")
    assert second.wait(10) == 0


def test_a_restarted_agent_posts_the_complete_it_still_owed(node: Node, fake_run: FakeRun) -> None:
    marker = _executed_once_then_killed(node, fake_run)
    # As if it had died between finishing the recipes and posting complete:
    marker.write_text("complete")

    second = node.start()
    assert fake_run.wait_until(lambda: len(fake_run.completes) == 2)
    assert fake_run.completes == [("web.1", "Executing"), ("web.1", "Executing")]
    assert (node.root / "runs").read_text() == "ran\n"
    fake_run.set("ss:state", "Done")
    assert second.wait(10) == 0


def test_a_complete_the_server_refuses_as_late_is_dropped(node: Node, fake_run: FakeRun) -> None:
    fake_run.fail["web.1:complete"] = 409  # as the server says when the run moved on
    fake_run.set("ss:state", "Provisioning")
    agent = node.start()
    marker = node.state_dir / "markers" / fake_run.run_id / "1-Provisioning"
    assert eventually(lambda: marker.exists() and marker.read_text() == "done")
    assert agent.poll() is None
    fake_run.set("ss:state", "Done")
    assert agent.wait(10) == 0
    assert sum(1 for _, path in fake_run.requests if "complete" in path) == 1


# The tools.


def test_an_unreachable_server_exits_4_after_retrying(node: Node) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    done = node.tool(
        "ss-get",
        "ready",
        SLIPSTREAM_SERVICEURL=f"https://127.0.0.1:{port}",
        STRATUS_AGENT_RETRY_FOR="1",
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 4
    assert done.stderr.startswith(f"ss-get: cannot reach https://127.0.0.1:{port}: ")
    assert 0.5 < elapsed < 5


@pytest.mark.parametrize(
    "args",
    [
        ("ss-get", "--timeout", "1", "ready"),
        ("ss-get-all", "--timeout", "1", "db", "ready"),
        ("ss-get", "--noblock", "ready"),
    ],
    ids=["ss-get --timeout", "ss-get-all --timeout", "ss-get --noblock"],
)
def test_a_tools_timeout_also_ends_retrying_a_server_that_is_down(
    node: Node, args: tuple[str, ...]
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    done = node.tool(
        *args,
        SLIPSTREAM_SERVICEURL=f"https://127.0.0.1:{port}",
        STRATUS_AGENT_RETRY_FOR="600",  # the agent's period: the tool's own must end it first
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 4, done.stderr
    assert done.stderr.startswith(f"{args[0]}: cannot reach https://127.0.0.1:{port}: ")
    limit = NOBLOCK_RETRY_FOR if "--noblock" in args else 1
    assert limit - 0.5 < elapsed < limit + 4


def test_a_failing_server_exits_5(node: Node, fake_run: FakeRun) -> None:
    fake_run.fail["web.1:ready"] = 500
    done = node.tool("ss-get", "ready")
    assert (done.returncode, done.stderr) == (5, "ss-get: the server is having a bad day\n")


def test_503_is_retried_until_the_server_is_back(node: Node, fake_run: FakeRun) -> None:
    fake_run.set("web.1:ready", "true")
    fake_run.fail["web.1:ready"] = 503
    threading.Timer(0.7, lambda: fake_run.fail.pop("web.1:ready")).start()
    done = node.tool("ss-get", "ready")
    assert (done.returncode, done.stdout) == (0, "true\n")
    assert sum(1 for method, path in fake_run.requests if "web.1:ready" in path) > 1


def test_ss_get_returns_as_soon_as_the_value_is_set(node: Node, fake_run: FakeRun) -> None:
    """A long-poll of 60 s (seen in the requests), answered the moment the value is set."""
    with subprocess.Popen(
        [PYTHON, str(node.agent), "ss-get", "--timeout", "0", "db:hostname"],
        env=node.env,
        stdout=subprocess.PIPE,
        text=True,
    ) as waiting:
        assert fake_run.wait_until(lambda: any("db.1:hostname" in p for _, p in fake_run.requests))
        time.sleep(0.5)
        assert waiting.poll() is None
        fake_run.set("db.1:hostname", "db-1.lxd")
        set_at = time.monotonic()
        out, _ = waiting.communicate(timeout=10)
        returned_after = time.monotonic() - set_at
    assert (waiting.returncode, out) == (0, "db-1.lxd\n")
    assert returned_after < 0.5
    assert "wait=0" not in str(fake_run.requests) and "wait=60" in str(fake_run.requests)
