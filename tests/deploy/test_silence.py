"""A cloud that stops answering: its node instances are lost once it has been silent for the
site's bound, their runs abort with the reason, and the teardown is tried until it answers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from stratuslab.api.app import create_app
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.config import Settings
from stratuslab.deploy.silence import Silence
from tests.deploy.support import complete_all, nodes, push_app, start_run, wait_until


def test_a_cloud_is_lost_only_after_its_silence_lasted_the_bound() -> None:
    silence = Silence(after=60)
    silence.failed("host2", "connection refused", now=100.0)
    assert silence.silent("host2")
    assert silence.lost("host2", now=159.0) is None
    silence.failed("host2", "timed out", now=150.0)  # still silent since 100, now timing out
    assert silence.lost("host2", now=161.0) == "cloud host2 has not answered for 61 s: timed out"
    silence.answered("host2")
    assert not silence.silent("host2") and silence.lost("host2", now=500.0) is None
    assert silence.lost("local", now=500.0) is None  # never silent


@pytest.fixture
def quick_api(settings: Settings, fake: FakeConnector) -> Iterator[TestClient]:
    """The engine with a silence of 1 s and aborted runs waiting 1 s for reports."""
    app = create_app(
        settings.with_overrides(token="test-token", report_grace_s=1, cloud_silence_s=1)
    )
    with TestClient(app, headers={"Authorization": "Bearer test-token"}) as client:
        yield client


def test_a_silent_cloud_aborts_its_runs_and_their_teardown_waits_for_it_to_answer(
    quick_api: TestClient, fake: FakeConnector
) -> None:
    push_app(quick_api)
    run = start_run(quick_api)
    members = nodes(quick_api, fake, run["id"], 3)
    complete_all(members, "Provisioning")
    fake.ex_outage("connection refused (host down)")
    view = wait_until(
        lambda: (v := quick_api.get(f"/api/runs/{run['id']}").json())["abort_reason"] and v,
        timeout=20,
        what="the abort",
    )
    assert "cloud local has not answered for" in view["abort_reason"]
    assert "connection refused (host down)" in view["abort_reason"]

    def failed_teardown() -> list[dict[str, object]]:
        events = quick_api.get(f"/api/runs/{run['id']}/events").json()
        return [e for e in events if e["kind"] == "teardown-failed"]

    first = wait_until(failed_teardown, timeout=20, what="a failed teardown")[0]
    assert first["fields"]["retry_in"] is not None  # not given up: the cloud may come back
    assert quick_api.get(f"/api/runs/{run['id']}").json()["state"] == "Finalizing"
    fake.ex_outage(None)
    wait_until(
        lambda: quick_api.get(f"/api/runs/{run['id']}").json()["state"] == "Aborted",
        timeout=30,
        what="the teardown once the cloud answers",
    )
    assert fake.list_instances(tags={"run": run["id"]}) == []


def test_a_cloud_nobody_lists_any_more_starts_afresh() -> None:
    silence = Silence(after=60)
    silence.failed("host2", "connection refused", now=0.0)
    silence.only({"local"})  # its runs are over: host2 is not listed this round
    silence.failed("host2", "one hiccup", now=5000.0)
    assert silence.lost("host2", now=5001.0) is None  # silent for 1 s, not since 0
