"""The deployment engine end to end in the fast suite: the real server, the real bootstrap and
agent, on instances that are process trees of this host (the localproc cloud, see
tests/deploy/realserver.py). What is asserted is what users see: the run's state events,
parameters, abort reasons and report archives. The agent's own end-to-end tests (every recipe
step, a failing recipe, scale hooks, the tools) are in tests/deploy/agent/; the same engine on
LXD, in tests/integration/test_deploy.py."""

from __future__ import annotations

import pytest

from tests.deploy.realserver import Api

pytestmark = pytest.mark.spawns

EVERY_STATE = ["Provisioning", "Executing", "SendingReports", "Ready", "Finalizing", "Done"]
BARRIERS = ["Provisioning", "Executing", "SendingReports", "Ready"]


@pytest.fixture(scope="module")
def pair(real_api: Api) -> str:
    """A run of tests/deploy/apps/pair, to its end: a server node publishes a token, two
    client nodes wait for it through a mapped input. Its id."""
    run = real_api.start("pair")
    assert real_api.wait_for_state(run, "Done", "Aborted") == "Done", real_api.story(run)
    return run


def test_a_run_goes_through_every_state_to_done_and_leaves_nothing(
    real_api: Api, pair: str
) -> None:
    assert real_api.states(pair) == EVERY_STATE
    for node_instance in ("server.1", "client.1", "client.2"):
        assert real_api.completes(pair, node_instance) == BARRIERS
    view = real_api.run(pair)
    assert view["abort_reason"] is None and view["ended_at"]
    assert real_api.machines(pair) == []  # keep-running never: every machine destroyed
    torn_down = real_api.events(pair, "torn-down")
    assert [e["fields"]["destroyed"] for e in torn_down] == [3]


def test_an_output_set_by_one_node_reaches_the_mapped_input_of_every_other(
    real_api: Api, pair: str
) -> None:
    params = real_api.params(pair)
    token = params["server.1:token"]
    assert token is not None and len(token) == 16  # ss-random -s 16 token
    for client in ("client.1", "client.2"):
        assert params[f"{client}:server_token"] == token  # pushed into the mapped input
        assert params[f"{client}:seen"] == token  # ss-get of the input waited for it


def test_ss_display_is_shown_as_the_node_goes(real_api: Api, pair: str) -> None:
    assert real_api.displays(pair, "server.1") == [
        "Executing: deployment (pair/server)",
        "token published",
    ]
    assert real_api.displays(pair, "client.2") == [
        "Executing: pre-install (pair/client)",
        "Executing: deployment (pair/client)",
        "client 2 saw the token",
    ]
    assert real_api.params(pair)["client.1:statecustom"] == "client 1 saw the token"


def test_bare_ids_and_multiplicity_are_the_nodes(real_api: Api, pair: str) -> None:
    params = real_api.params(pair)
    for client in ("client.1", "client.2"):
        assert params[f"{client}:ids_seen"] == "1,2"  # `ss-get ids` is client:ids
        assert params[f"{client}:multiplicity_seen"] == "2"


def test_a_node_setting_what_the_server_owns_is_refused(real_api: Api, pair: str) -> None:
    params = real_api.params(pair)
    assert params["server.1:hostname_exit"] == "7"  # a client error, not "the run is aborted"
    assert "server.1:hostname belongs to the server" in (params["server.1:hostname_error"] or "")
    assert params["server.1:hostname"] == "127.0.0.1"  # unchanged
    assert real_api.run(pair)["abort_reason"] is None  # refused, not a broken recipe


def test_every_node_sends_its_report(real_api: Api, pair: str) -> None:
    reports = [r["node_instance"] for r in real_api.http.get(f"/api/runs/{pair}/reports").json()]
    assert reports == ["client.1", "client.2", "server.1"]
    steps = real_api.report(pair, "client.1")["reports/steps.txt"]
    # Recipes run in the instance's namespaces: its host name is the instance's name.
    assert steps == f"pre-install on e2e-{pair[:8]}-client-1 as 1\n".encode()


def test_ss_abort_from_a_node_aborts_the_run_and_reports_are_still_sent(real_api: Api) -> None:
    run = real_api.start("abort")
    assert real_api.wait_for_state(run, "Aborted", "Done") == "Aborted"
    reason = "quitter.1: database unreachable"
    assert real_api.run(run)["abort_reason"] == reason
    params = real_api.params(run)
    assert (params["ss:abort"], params["quitter.1:abort"]) == (reason, reason)
    assert [e["fields"]["reason"] for e in real_api.events(run, "abort")] == [reason]
    # Straight from Executing to SendingReports, and never Ready.
    assert real_api.states(run) == [
        "Provisioning",
        "Executing",
        "SendingReports",
        "Finalizing",
        "Aborted",
    ]
    # The other node's blocked ss-get failed at once, with the reason.
    waited = real_api.report(run, "waiter.1")["reports/waited.txt"].decode()
    assert waited == f"ss-get exited with 8: ss-get: the run is aborted: {reason}\n"
    assert real_api.report(run, "quitter.1")["reports/quitter.txt"] == b"quitter reporting\n"
    assert real_api.machines(run) == []
