"""Every request body is bounded before a route sees it (api/limits.py): refused at once when
its Content-Length is over the bound, and the moment its bytes pass it when there is none,
with the project's JSON error. A report upload streams to disk under its own cap instead."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from stratuslab.api import app as app_module
from stratuslab.api.app import create_app
from stratuslab.api.limits import MAX_BODY
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.config import Settings
from tests.api.asgi import send_in_pieces
from tests.deploy.support import BASE, nodes, push_app, start_run

pytestmark = pytest.mark.usefixtures("fake")
TIGHT = 64 * 1024


@pytest.fixture
def tight_api(
    settings: Settings, fake: FakeConnector, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    """The API with bodies bounded at 64 KiB instead of 16 MiB."""
    monkeypatch.setattr(app_module, "MAX_BODY", TIGHT)
    app = create_app(settings.with_overrides(token="test-token", report_grace_s=1))
    with TestClient(app, headers={"Authorization": "Bearer test-token"}) as client:
        yield client


def push_of(size: int) -> bytes:
    """A module push of about ``size`` bytes."""
    text = BASE + "description: " + "x" * size + "\n"
    return json.dumps(
        {"modules": [{"path": "x/base", "file": "x/base.yaml", "text": text}]}
    ).encode()


def pieces(total: int, size: int) -> Iterator[bytes]:
    for _ in range(total // size):
        yield b"x" * size


def refusal(body: object) -> dict[str, object]:
    assert isinstance(body, dict)
    error = body["error"]
    assert isinstance(error, dict) and error["type"] == "TooLarge"
    return error


def test_a_body_announced_over_the_bound_is_refused_without_being_read(
    deploy_api: TestClient,
) -> None:
    answer = send_in_pieces(
        deploy_api,
        "POST",
        "/api/modules",
        pieces(MAX_BODY + 2**20, 2**20),
        headers={"content-type": "application/json", "content-length": str(MAX_BODY + 1)},
    )
    assert answer.status == 413
    assert refusal(answer.json())["message"] == (
        f"a request body is at most 16 MiB; this one has {MAX_BODY + 1} bytes"
    )
    assert answer.pieces_read == 0
    assert deploy_api.get("/api/modules").json() == []


def test_a_body_streamed_past_the_bound_is_refused_there(deploy_api: TestClient) -> None:
    answer = send_in_pieces(
        deploy_api,
        "POST",
        "/api/modules",
        pieces(10 * MAX_BODY, 2**20),  # 160 MiB, were it all read
        headers={"content-type": "application/json"},
    )
    assert answer.status == 413
    assert refusal(answer.json())["message"] == (
        "a request body is at most 16 MiB; this one is larger"
    )
    assert answer.pieces_read == 17  # the piece that passed the bound was the last one read


def test_the_test_client_meets_the_same_bound(tight_api: TestClient) -> None:
    announced = tight_api.post(
        "/api/modules", content=push_of(TIGHT), headers={"Content-Type": "application/json"}
    )
    assert announced.status_code == 413
    assert announced.json()["error"]["message"] == (
        f"a request body is at most 65536 bytes; this one has {len(push_of(TIGHT))} bytes"
    )

    def chunked() -> Iterator[bytes]:  # no Content-Length: the bytes are counted
        yield push_of(TIGHT)

    streamed = tight_api.post(
        "/api/modules", content=chunked(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
    assert streamed.json()["error"] == {
        "type": "TooLarge",
        "message": "a request body is at most 65536 bytes; this one is larger",
        "hint": None,
    }
    assert tight_api.get("/api/modules").json() == []
    within = tight_api.post(
        "/api/modules", content=push_of(TIGHT // 2), headers={"Content-Type": "application/json"}
    )
    assert within.status_code == 201, within.text


def test_slipstream_bodies_meet_the_bound_too(tight_api: TestClient) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    answer = tight_api.post("/run", content=b"refqname=" + b"x" * TIGHT, headers=form)
    assert answer.status_code == 413
    assert answer.json()["error"]["type"] == "TooLarge"


def test_a_report_streams_past_the_body_bound_under_its_own_cap(
    tight_api: TestClient, fake: FakeConnector
) -> None:
    push_app(tight_api)
    run = start_run(tight_api)
    members = nodes(tight_api, fake, run["id"], 3)
    report = gzip.compress(bytes(range(256)) * 2048, compresslevel=0)  # 512 KiB
    assert len(report) > TIGHT
    answer = tight_api.put(
        f"/api/runs/{run['id']}/reports/web.1", content=report, headers=members["web.1"].headers
    )
    assert answer.status_code == 201, answer.text
    assert answer.json() == {"node_instance": "web.1", "size": len(report)}
    assert tight_api.get(f"/api/runs/{run['id']}/reports/web.1").content == report
