"""/api/usage: accounting a billing script can read, from a real stop/start cycle whose
recorded times are then set to known moments. On both stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from stratuslab.db.models import UsageRecord
from stratuslab.db.session import session_scope
from tests.api.test_quotas import user_client
from tests.api.test_session import services_of
from tests.deploy.support import wait_until

pytestmark = pytest.mark.usefixtures("fake")
T0 = datetime(2021, 3, 1, 10, 0, tzinfo=UTC)


def running(client: TestClient, ram_mb: int) -> str:
    accepted = client.post(
        "/api/instances", json={"image": "debian-12", "cpu": 2, "ram_mb": ram_mb}
    )
    instance_id: str = accepted.json()["instances"][0]["id"]
    wait_until(
        lambda: client.get(f"/api/instances/{instance_id}").json()["state"] == "running",
        what="running",
    )
    return instance_id


def test_a_stop_start_cycle_is_billed_for_the_running_hours_only(api: TestClient) -> None:
    alice, bob = user_client(api, "alice"), user_client(api, "bob")
    instance = running(alice, 2048)
    assert alice.post(f"/api/instances/{instance}/stop").json()["state"] == "stopped"
    assert alice.post(f"/api/instances/{instance}/start").json()["state"] == "running"
    assert alice.delete(f"/api/instances/{instance}").json()["state"] == "gone"
    running(bob, 1024)
    engine = services_of(api).engine
    with session_scope(engine) as session:
        first, second, bobs = session.scalars(select(UsageRecord).order_by(UsageRecord.id))
        moments = {
            first.id: (T0, T0 + timedelta(hours=2)),  # stopped 12:00-13:00: not billed
            second.id: (T0 + timedelta(hours=3), T0 + timedelta(hours=5)),
            bobs.id: (T0, None),  # still running
        }
    with session_scope(engine) as session:
        for row_id, (start, end) in moments.items():
            session.execute(
                update(UsageRecord)
                .where(UsageRecord.id == row_id)
                .values(started_at=start, ended_at=end)
            )

    window = {"since": "2021-03-01T11:00:00Z", "until": "2021-03-01T14:00:00+00:00"}
    report = alice.get("/api/usage", params=window).json()
    assert report["since"] == "2021-03-01T11:00:00+00:00"
    assert report["until"] == "2021-03-01T14:00:00+00:00"
    assert (report["user"], report["by"]) == ("alice", "user")
    assert report["rows"] == [
        {
            "user": "alice",
            "cloud": None,
            "run": None,
            "instance_hours": 2.0,
            "vcpu_hours": 4.0,
            "memory_gib_hours": 4.0,
            "intervals": 2,
        }
    ]
    assert set(report["units"]) == {"instance_hours", "vcpu_hours", "memory_gib_hours"}

    everybody = api.get("/api/usage", params={**window, "all": "true", "by": "cloud"}).json()
    assert everybody["user"] is None
    assert everybody["rows"] == [
        {
            "user": None,
            "cloud": "local",
            "run": None,
            "instance_hours": 5.0,
            "vcpu_hours": 10.0,
            "memory_gib_hours": 7.0,
            "intervals": 3,
        }
    ]
    naive = api.get(
        "/api/usage", params={"since": "2021-03-01", "until": "2021-03-02", "user": "bob"}
    )
    assert naive.json()["since"] == "2021-03-01T00:00:00+00:00"  # no zone: UTC
    assert naive.json()["total"]["instance_hours"] == 14.0  # from 10:00, clipped to the 2nd


@pytest.mark.parametrize(
    ("params", "status", "says"),
    [
        ({"since": "yesterday"}, 422, "since"),
        ({"since": "2021-03-02", "until": "2021-03-01"}, 422, "must be before"),
        ({"by": "week"}, 422, "by"),
        ({"user": "bob"}, 404, "no user 'bob'"),
        ({"until": "9999-12-31T23:59:59-05:00"}, 422, "out of range"),
    ],
)
def test_bad_usage_questions_get_a_clear_error(
    api: TestClient, params: dict[str, str], status: int, says: str
) -> None:
    answer = user_client(api, "alice").get("/api/usage", params=params)
    assert answer.status_code == status, answer.text
    assert says in answer.json()["error"]["message"]
