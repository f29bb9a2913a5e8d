"""The JUnit report of a real run: real agents on the localproc cloud (tests/deploy/
realserver.py), one of whose deployment recipes fails while the other node's pass and its
report archive holds a JUnit file of its own."""

from __future__ import annotations

import pytest

from tests.deploy.junitdata import cases, checked, outcome
from tests.deploy.realserver import Api

pytestmark = pytest.mark.spawns


def test_a_failing_deployment_recipe_is_the_failing_case_beside_the_passing_ones(
    real_api: Api,
) -> None:
    run = real_api.start("junitfail")
    assert real_api.wait_for_state(run, "Aborted", "Done") == "Aborted", real_api.story(run)
    reason = "web.1: deployment recipe of junitfail/web exited with 3: bad config"
    assert real_api.run(run)["abort_reason"] == reason, real_api.story(run)

    answer = real_api.http.get(f"/api/runs/{run}/junit")
    assert answer.status_code == 200, answer.text
    root = checked(answer.content)
    suites = [s.get("name") for s in root.findall("testsuite")]
    assert suites == ["junitfail.db", "junitfail.web", "db smoke"]
    found = cases(root)
    outcomes = {name: outcome(case) for name, case in found.items()}
    assert outcomes == {
        "db.1 provisioning": "passed",
        "db.1 deployment": "passed",
        "db.1 report": "passed",
        "web.1 provisioning": "passed",
        "web.1 pre-install": "passed",
        "web.1 deployment": "failed",
        "web.1 report": "passed",  # an aborted run still sends its reports
        "select 1": "passed",
        "replication": "failed",  # db's own report: its suite as it wrote it
    }, real_api.story(run)

    deployment = found["web.1 deployment"]
    failure = deployment.find("failure")
    assert failure is not None and failure.get("message") == reason
    # Two streams read by two threads: their lines interleave in either order.
    printed = ["bad config", "connecting failed "]  # the ANSI colours and \x01 taken out
    assert sorted((failure.text or "").split("\n\n", 1)[1].splitlines()) == printed
    assert sorted((deployment.findtext("system-out") or "").splitlines()) == printed
    assert deployment.get("classname") == "junitfail.web"
    assert float(deployment.get("time", "0")) >= 1  # it slept a second before failing
    assert found["db.1 deployment"].findtext("system-out") == "db up\n"
    assert found["web.1 pre-install"].findtext("system-out") == "preparing\n"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("9", "2", "0")
