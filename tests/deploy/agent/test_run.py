"""`stratus-agent.pyz run` against the real server: each node instance is a localproc instance
whose bootstrap downloads the agent from the server and starts it (tests/deploy/realserver.py).
What the server cannot be made to do on purpose (be down, refuse a completion, hold a state) is
in test_faults.py, against the fake server."""

from __future__ import annotations

import pytest

from tests.deploy.realserver import Api
from tests.support import wait_until

pytestmark = pytest.mark.spawns

BASE = "agentrun/base"
WEB = "agentrun/web"
BARRIERS = ["Provisioning", "Executing", "SendingReports", "Ready"]


def test_a_full_run_from_provisioning_to_done(real_api: Api) -> None:
    run = real_api.start("agentrun")
    assert real_api.wait_for_state(run, "Done", "Aborted") == "Done", real_api.story(run)

    assert real_api.completes(run, "web.1") == BARRIERS
    assert real_api.displays(run, "web.1") == [
        f"Executing: pre-install ({BASE})",
        "Executing: packages (apt-get update)",
        "Executing: packages (apt-get install)",
        f"Executing: post-install ({BASE})",
        f"Executing: deployment ({BASE})",
        f"Executing: deployment ({WEB})",
        "almost there",  # the recipe's own ss-display, still shown after the reports
    ]
    apt_calls = real_api.server.apt_calls / f"{run}-web.1"
    assert apt_calls.read_text().splitlines() == [
        "noninteractive update",
        "noninteractive install -y nginx python3-psycopg2",
    ]
    assert real_api.params(run)["web.1:ready"] == "true"  # the tools work from inside a recipe

    def texts(**match: str) -> list[str]:
        return real_api.logs(run, node_instance="web.1", **match)

    assert texts(recipe="pre-install", stream="stdout") == ["pre-out"]
    assert texts(recipe="pre-install", stream="stderr") == ["pre-err"]
    assert texts(recipe="post-install") == ["post from bash"]
    assert texts(recipe="deployment", stream="stdout") == [
        "base deploy in /root as web.1",
        "web deploy",
    ]
    assert texts(recipe="packages") == ["ok", "ok"]
    assert texts(recipe="deployment", state="Executing") == texts(recipe="deployment")
    assert real_api.logs(run) == texts()  # every line is web.1's

    members = real_api.report(run, "web.1")
    assert members["reports/web-report.txt"] == b"hello\n"
    # Two streams read by two threads: their lines interleave in either order.
    assert sorted(members["logs/Executing-pre-install-1.log"].splitlines()) == [
        b"pre-err",
        b"pre-out",
    ]
    assert b"web deploy" in members["logs/Executing-deployment-2.log"]
    assert b"ss:state is Executing" in members["logs/agent.log"]


def test_a_failing_recipe_aborts_the_run_and_still_reports(real_api: Api) -> None:
    run = real_api.start("agentfail")
    assert real_api.wait_for_state(run, "Aborted", "Done") == "Aborted"

    reason = "web.1: deployment recipe of agentfail/broken exited with 3: bad config"
    params = real_api.params(run)
    assert params["ss:abort"] == reason
    assert params["web.1:abort"] == reason
    assert real_api.run(run)["abort_reason"] == reason
    # The server moved the aborted run to SendingReports itself, and the node reported.
    assert real_api.states(run) == [
        "Provisioning",
        "Executing",
        "SendingReports",
        "Finalizing",
        "Aborted",
    ]
    assert real_api.completes(run, "web.1") == ["Provisioning", "SendingReports"]
    members = real_api.report(run, "web.1")
    assert members["reports/state.txt"] == b"partial\n"  # its report recipe failed: no matter
    assert b"bad config" in members["logs/Executing-deployment-1.log"]
    assert "logs/Executing-deployment-2.log" not in members  # nothing ran after the failure
    assert real_api.logs(run, recipe="deployment", stream="stdout") == ["working"]
    assert real_api.logs(run, recipe="deployment", stream="stderr") == [
        "first problem",
        "bad config",
    ]


def test_a_recipe_whose_interpreter_is_missing_aborts_the_run(real_api: Api) -> None:
    run = real_api.start("nointerp")
    assert real_api.wait_for_state(run, "Aborted", "Done") == "Aborted"
    reason = real_api.run(run)["abort_reason"]
    assert reason.startswith(
        "web.1: deployment recipe of nointerp/web exited with 127: cannot run "
    )


def test_a_scale_action_runs_the_hooks_not_the_recipes(real_api: Api) -> None:
    def rounds_completed(count: int) -> None:
        """Wait until web.1 has completed ``count`` rounds: a scale action may start (and a
        run be terminated) before a node has posted Ready's completion, which is then refused
        as late; the test waits for it, to count it."""
        wait_until(lambda: len(real_api.completes(run, "web.1")) >= 4 * count, what="Ready")

    run = real_api.start("agentscale", mutable=True)
    real_api.wait_for_state(run, "Ready")
    rounds_completed(1)

    assert real_api.add(run, "web") == ["web.2"]
    real_api.wait_for_round(run)
    rounds_completed(2)
    params = real_api.params(run)
    assert params["web.2:joined"] == "installed"  # the new instance ran its recipes
    assert params["web.1:joined"] == "vm_add web web.2"  # the one there before, its hook
    assert real_api.logs(run, node_instance="web.1", recipe="on-vm-add") == ["vm_add web web.2"]
    assert real_api.logs(run, node_instance="web.1", recipe="deployment") == ["deployed"]
    assert real_api.completes(run, "web.1") == 2 * BARRIERS
    assert len(real_api.machines(run)) == 2

    assert real_api.remove(run, "web", 2) == ["web.2"]
    real_api.wait_for_round(run)
    rounds_completed(3)
    assert real_api.params(run)["web.1:joined"] == "vm_remove web web.2"
    assert real_api.logs(run, node_instance="web.1", recipe="on-vm-remove") == [
        "vm_remove web web.2"
    ]
    assert real_api.logs(run, node_instance="web.1", recipe="deployment") == ["deployed"]
    assert [m.tags["node-instance"] for m in real_api.machines(run)] == ["web.1"]

    real_api.terminate(run)
    assert real_api.wait_for_state(run, "Done") == "Done"
    assert real_api.completes(run, "web.1") == 3 * BARRIERS
    assert real_api.machines(run) == []
