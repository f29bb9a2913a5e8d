"""`stratus-agent.pyz run`: the agent follows a fake run through its states, as a process."""

from __future__ import annotations

import io
import signal
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.agent.conftest import Node, alive, eventually, tagged
from tests.deploy.agent.fakeserver import FakeRun, FakeServer, plan_for

pytestmark = pytest.mark.spawns

BASE = "examples/webapp/base"
WEB = "examples/webapp/web"


def report_members(fake_run: FakeRun) -> dict[str, bytes]:
    members = {}
    with tarfile.open(fileobj=io.BytesIO(fake_run.reports["web.1"]), mode="r:gz") as archive:
        for member in archive.getmembers():
            if member.isfile():
                extracted = archive.extractfile(member)
                assert extracted is not None
                members[member.name] = extracted.read()
    return members


def texts(fake_run: FakeRun, **match: str) -> list[str]:
    return [line["text"] for line in fake_run.lines(**match)]


def test_a_full_run_from_provisioning_to_done(node: Node, fake_run: FakeRun) -> None:
    node.install_tools()
    fake_run.plans["web.1"] = plan_for(
        "web.1",
        packages=["nginx", "python3-psycopg2"],
        pre_install=[(BASE, "#!/bin/sh\necho pre-out\necho pre-err >&2\n")],
        post_install=[(BASE, "[[ -n $BASH_VERSION ]] && echo post from bash\n")],
        deployment=[
            (BASE, "#!/bin/sh\necho base deploy in $(pwd) as $SLIPSTREAM_NODE_INSTANCE_NAME\n"),
            (WEB, "#!/bin/sh\nss-set ready true\nss-display almost there\necho web deploy\n"),
        ],
        report=[(WEB, "#!/bin/sh\necho hello > $SLIPSTREAM_REPORT_DIR/web-report.txt\n")],
    )
    fake_run.set("ss:state", "Provisioning")
    agent = node.start()
    assert agent.wait(30) == 0, node.agent_log()

    assert fake_run.get("ss:state") == "Done"
    assert fake_run.completes == [
        ("web.1", "Provisioning"),
        ("web.1", "Executing"),
        ("web.1", "SendingReports"),
        ("web.1", "Ready"),
    ]
    assert fake_run.set_history("web.1:statecustom") == [
        f"Executing: pre-install ({BASE})",
        "Executing: packages (apt-get update)",
        "Executing: packages (apt-get install)",
        f"Executing: post-install ({BASE})",
        f"Executing: deployment ({BASE})",
        f"Executing: deployment ({WEB})",
        "almost there",  # the recipe's own ss-display, still shown after the reports
    ]
    assert node.apt_calls.read_text().splitlines() == [
        "noninteractive update",
        "noninteractive install -y nginx python3-psycopg2",
    ]
    assert fake_run.get("web.1:ready") == "true"  # the tools work from inside a recipe
    assert [
        path for method, path in fake_run.requests if method == "POST" and "complete" in path
    ] == [
        f"/run/{fake_run.run_id}/web.1:complete?state={state}"
        for state in ("Provisioning", "Executing", "SendingReports", "Ready")
    ]

    assert texts(fake_run, recipe="pre-install", stream="stdout") == ["pre-out"]
    assert texts(fake_run, recipe="pre-install", stream="stderr") == ["pre-err"]
    assert texts(fake_run, recipe="post-install") == ["post from bash"]
    assert texts(fake_run, recipe="deployment", stream="stdout") == [
        f"base deploy in {node.root / 'home'} as web.1",
        "web deploy",
    ]
    assert texts(fake_run, recipe="packages") == ["ok", "ok"]
    assert {line["state"] for line in fake_run.lines(recipe="deployment")} == {"Executing"}
    assert {line["node"] for line in fake_run.log_lines} == {"web.1"}

    members = report_members(fake_run)
    assert members["reports/web-report.txt"] == b"hello\n"
    # Two streams read by two threads: their lines interleave in either order.
    assert sorted(members["logs/Executing-pre-install-1.log"].splitlines()) == [
        b"pre-err",
        b"pre-out",
    ]
    assert b"web deploy" in members["logs/Executing-deployment-2.log"]
    assert b"ss:state is Executing" in members["logs/agent.log"]


def test_a_failing_recipe_aborts_the_run_and_still_reports(node: Node, fake_run: FakeRun) -> None:
    failing = "#!/bin/sh\necho working\necho 'first problem' >&2\necho 'bad config' >&2\nexit 3\n"
    fake_run.plans["web.1"] = plan_for(
        "web.1",
        deployment=[(WEB, failing), (WEB, "#!/bin/sh\necho never\n")],
        report=[(WEB, "#!/bin/sh\necho partial > $SLIPSTREAM_REPORT_DIR/state.txt\nexit 1\n")],
    )
    fake_run.set("ss:state", "Provisioning")
    agent = node.start()

    reason = f"web.1: deployment recipe of {WEB} exited with 3: bad config"
    assert fake_run.wait_until(lambda: fake_run.get("ss:abort") != "")
    assert fake_run.get("ss:abort") == reason
    assert fake_run.get("web.1:abort") == reason
    time.sleep(0.5)
    assert fake_run.completes == [("web.1", "Provisioning")]
    assert not (node.log_dir / "Executing-deployment-2.log").exists()

    fake_run.set("ss:state", "SendingReports")  # what the server does with an aborted run
    assert agent.wait(20) == 0, node.agent_log()
    assert fake_run.get("ss:state") == "Aborted"
    assert ("web.1", "Executing") not in fake_run.completes
    assert ("web.1", "SendingReports") in fake_run.completes
    assert report_members(fake_run)["reports/state.txt"] == b"partial\n"


@pytest.mark.parametrize(
    ("plan", "reason"),
    [
        (None, "web.1: no plan for Executing: nothing at /api/runs/6a1f0c1e-run/nodes/web.1/plan"),
        (
            plan_for("web.1", deployment=[(WEB, "#!/no/such/shell\necho hi\n")]),
            f"web.1: deployment recipe of {WEB} exited with 127: cannot run ",
        ),
    ],
    ids=["no plan", "no interpreter"],
)
def test_what_cannot_even_start_aborts_the_run(
    node: Node, fake_run: FakeRun, plan: dict[str, Any] | None, reason: str
) -> None:
    if plan is not None:
        fake_run.plans["web.1"] = plan
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


def test_a_scale_action_runs_the_hooks_not_the_recipes(node: Node, fake_run: FakeRun) -> None:
    hook = (
        "#!/bin/sh\n"
        "echo $SLIPSTREAM_SCALING_ACTION $SLIPSTREAM_SCALING_NODE $SLIPSTREAM_SCALING_VMS\n"
    )
    fake_run.scalable = True
    fake_run.plans["web.1"] = plan_for(
        "web.1",
        deployment=[(WEB, "#!/bin/sh\necho deployed\n")],
        on_vm_add=[(WEB, hook)],
    )
    fake_run.set("ss:state", "Provisioning")
    agent = node.start()
    assert fake_run.wait_until(lambda: ("web.1", "Ready") in fake_run.completes)

    fake_run.plans["web.1"]["scaling"] = {"action": "vm_add", "node": "web", "vms": "web.2"}
    fake_run.set("ss:state", "Provisioning")  # a scale action: a new round
    assert fake_run.wait_until(lambda: len(fake_run.completes) == 8), node.agent_log()
    fake_run.set("ss:state", "Done")
    assert agent.wait(10) == 0, node.agent_log()
    assert texts(fake_run, recipe="on-vm-add") == ["vm_add web web.2"]
    assert texts(fake_run, recipe="deployment") == ["deployed"]
    assert [state for _, state in fake_run.completes] == 2 * [
        "Provisioning",
        "Executing",
        "SendingReports",
        "Ready",
    ]
