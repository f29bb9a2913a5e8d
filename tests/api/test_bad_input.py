"""Bad input, on both stores: every answer is a 4xx that says what is wrong, never a 5xx, and
nothing a client sends makes the server hold on to it (a stream, a request) without end.

PostgreSQL is stricter than SQLite (integers are 32 or 64 bits, text holds no NUL, a
``varchar(n)`` holds n characters), so several of these only ever failed there.
"""

from __future__ import annotations

import gzip
import itertools
import threading
from collections.abc import Iterator
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from fastapi.testclient import TestClient

from stratuslab.api.app import create_app
from stratuslab.api.routes import runs as runs_routes
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.config import Settings
from stratuslab.deploy import reports
from tests.api.asgi import send_in_pieces
from tests.deploy.support import (
    BASE,
    Node,
    complete_all,
    nodes,
    push_app,
    start_run,
    wait_for_state,
)

pytestmark = pytest.mark.usefixtures("fake")
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
HUGE = 10**19  # 20 digits: past a 64-bit integer, let alone PostgreSQL's 32-bit ones


def error(answer: Any) -> str:
    """The message of a JSON error answer, checking that it is one."""
    body = answer.json()
    assert set(body["error"]) == {"type", "message", "hint"}, body
    return str(body["error"]["message"])


def detail(answer: Any) -> str:
    """The reason of a refused /run start (SlipStream's XML ``detail``)."""
    return ET.fromstring(answer.content).attrib["detail"]


@pytest.fixture
def run(deploy_api: TestClient, fake: FakeConnector) -> tuple[str, dict[str, Node]]:
    """A live run (Provisioning, its nodes running) and its node instances."""
    push_app(deploy_api)
    started = start_run(deploy_api)
    return started["id"], nodes(deploy_api, fake, started["id"], 3)


# -- logs --------------------------------------------------------------------------------


def test_a_log_line_from_beyond_year_9999_is_refused(
    deploy_api: TestClient, run: tuple[str, dict[str, Node]]
) -> None:
    run_id, members = run
    web = members["web.1"]
    for t in (1e20, -1.0):
        answer = deploy_api.post(
            f"/api/runs/{run_id}/logs",
            json={"node_instance": "web.1", "lines": [{"t": t, "text": "hello"}]},
            headers=web.headers,
        )
        assert answer.status_code == 422, answer.text
        assert f"log line 1: t={t:g} is not a time between 1970 and 9999" in error(answer)
    assert deploy_api.get(f"/api/runs/{run_id}/logs").json() == []


def test_logs_for_a_run_that_does_not_exist_are_not_found(deploy_api: TestClient) -> None:
    answer = deploy_api.post(
        "/api/runs/no-such-run/logs", json={"node_instance": "web.1", "lines": [{"text": "x"}]}
    )
    assert answer.status_code == 404
    assert error(answer) == "no run 'no-such-run'"


def test_a_log_batch_over_its_bound_is_refused(
    deploy_api: TestClient, run: tuple[str, dict[str, Node]]
) -> None:
    run_id, members = run
    answer = deploy_api.post(
        f"/api/runs/{run_id}/logs",
        json={"node_instance": "web.1", "lines": [{"text": "x"}] * 1001},
        headers=members["web.1"].headers,
    )
    assert answer.status_code == 422
    assert error(answer).startswith("lines: List should have at most 1000 items")


# -- paging ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/api/runs?offset={n}", "offset"),
        ("/run?offset={n}", "offset"),
        ("/api/runs/{run}/events?after={n}", "after"),
        ("/api/runs/{run}/logs?after={n}", "after"),
        ("/api/runs/{run}/logs?follow=true&after={n}", "after"),
        ("/api/runs/{run}/watch?after={n}", "after"),
    ],
)
def test_paging_past_what_the_store_holds_is_refused(
    deploy_api: TestClient, run: tuple[str, dict[str, Node]], path: str, name: str
) -> None:
    answer = deploy_api.get(path.format(n=HUGE, run=run[0]))
    assert answer.status_code == 422
    assert error(answer) == f"query.{name}: Input should be less than or equal to 2147483647"


# -- text that is not text ---------------------------------------------------------------


def test_a_parameter_value_that_is_not_utf8_or_holds_a_nul_is_refused(
    deploy_api: TestClient, run: tuple[str, dict[str, Node]]
) -> None:
    db = run[1]["db.1"]
    not_utf8 = db.set("db.1:ready", b"ok\xff\xfe")  # type: ignore[arg-type]
    assert not_utf8.status_code == 422
    assert not_utf8.text == "the value of db.1:ready is not UTF-8 text (byte 2)"
    nul = db.set("db.1:ready", "o\x00k")
    assert nul.status_code == 422
    assert nul.text == "db.1:ready: a value is text, and this one holds a NUL character"
    assert db.get("db.1:ready").status_code == 412  # nothing was set


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"refqname=module/apps/demo&tags=\xff", "the form is not UTF-8 text (byte 31)"),
        (b"refqname=module/apps/demo&tags=%ff", "the form cannot be read"),
        (b"refqname=module/apps/de%00mo", "the form holds a NUL character"),
        (b"refqname=module/apps/demo&tags=a%00b", "the form holds a NUL character"),
        (b"refqname=module/apps/demo&parameter--node--web--greeting=%00", "NUL character"),
    ],
    ids=["raw-bytes", "escaped-bytes", "nul-module", "nul-tag", "nul-value"],
)
def test_a_start_form_that_is_not_utf8_or_holds_a_nul_is_refused(
    deploy_api: TestClient, body: bytes, reason: str
) -> None:
    push_app(deploy_api)
    answer = deploy_api.post("/run", content=body, headers=FORM)
    assert answer.status_code == 409, answer.text
    assert reason in detail(answer)
    assert deploy_api.get("/api/runs").json() == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"module": "apps/de\x00mo"}, "module: Value error, text holds no NUL character"),
        ({"module": "apps/demo", "tags": ["a\x00"]}, "tags.0: Value error, text holds no NUL"),
    ],
    ids=["module", "tag"],
)
def test_a_start_request_holding_a_nul_is_refused(
    deploy_api: TestClient, body: dict[str, Any], message: str
) -> None:
    push_app(deploy_api)
    answer = deploy_api.post("/api/runs", json=body)
    assert answer.status_code == 422
    assert error(answer).startswith(message)


@pytest.mark.parametrize(
    "path",
    [
        "/api/runs/%00",
        "/api/runs/%00/logs",
        "/api/runs/{run}/logs?node=%00",
        "/run/%00",
        "/run/%00/ss:state",
        "/run/{run}/ss%00",
        "/api/runs/%00/reports/web.1",
        "/api/modules/apps/%00",
        "/api/instances/%00",
    ],
)
def test_a_nul_in_the_path_or_query_is_refused(
    deploy_api: TestClient, run: tuple[str, dict[str, Node]], path: str
) -> None:
    answer = deploy_api.get(path.format(run=run[0]))
    assert answer.status_code == 422, answer.text
    assert error(answer) == "the request's path or query holds a NUL character (%00)"


# -- what a run may ask ------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [10**12, 1e30])
def test_a_run_timeout_beyond_a_week_is_refused(deploy_api: TestClient, timeout: float) -> None:
    push_app(deploy_api)
    answer = deploy_api.post("/api/runs", json={"module": "apps/demo", "timeout_s": timeout})
    assert answer.status_code == 422
    assert error(answer) == "timeout_s: Input should be less than or equal to 604800"


def test_a_billion_instances_of_a_node_are_refused(deploy_api: TestClient) -> None:
    push_app(deploy_api)
    answer = deploy_api.post(
        "/api/runs", json={"module": "apps/demo", "multiplicity": {"web": 1_000_000_000}}
    )
    assert answer.status_code == 422
    assert error(answer) == "web:multiplicity: between 0 and 10000, not 1000000000"
    form = deploy_api.post(
        "/run",
        content="refqname=module/apps/demo&parameter--node--web--multiplicity=1000000000",
        headers=FORM,
    )
    assert form.status_code == 409
    assert detail(form) == "web:multiplicity: between 0 and 10000, not 1000000000"
    past_an_int = deploy_api.post(
        "/run",
        content=f"refqname=module/apps/demo&parameter--node--web--multiplicity={HUGE}",
        headers=FORM,
    )
    assert past_an_int.status_code == 409
    assert detail(past_an_int).startswith(
        "parameter--node--web--multiplicity must be a number from 0 to 2147483647"
    )
    assert deploy_api.get("/api/runs").json() == []


def test_a_module_asking_a_billion_instances_is_refused_when_pushed(
    deploy_api: TestClient,
) -> None:
    app = (
        "kind: application\nnodes:\n  web:\n    component: apps/web\n    multiplicity: 1000000000\n"
    )
    answer = deploy_api.post(
        "/api/modules", json={"modules": [{"path": "x/app", "file": "x/app.yaml", "text": app}]}
    )
    assert answer.status_code == 422
    assert error(answer) == (
        "x/app.yaml:5: nodes.web.multiplicity: must be at most 10000, not 1000000000"
    )
    assert deploy_api.get("/api/modules").json() == []


@pytest.fixture
def small_site(settings: Settings, fake: FakeConnector) -> Iterator[TestClient]:
    """A site that allows at most 4 node instances in one run."""
    app = create_app(settings.with_overrides(token="test-token", max_run_instances=4))
    with TestClient(app, headers={"Authorization": "Bearer test-token"}) as client:
        yield client


def test_a_run_beyond_the_sites_instance_bound_is_refused(small_site: TestClient) -> None:
    push_app(small_site)
    answer = small_site.post(
        "/api/runs", json={"module": "apps/demo", "multiplicity": {"web": 2, "db": 3}}
    )
    assert answer.status_code == 422
    assert error(answer) == (
        "the run would have 5 node instances; this site allows at most 4 in one run"
    )
    form = small_site.post(
        "/run",
        content="refqname=module/apps/demo&parameter--node--web--multiplicity=4",
        headers=FORM,
    )
    assert form.status_code == 409
    assert "this site allows at most 4 in one run" in detail(form)
    assert small_site.get("/api/runs").json() == []


def test_scaling_a_run_beyond_the_sites_instance_bound_is_refused(
    small_site: TestClient, fake: FakeConnector
) -> None:
    push_app(small_site)
    run_id = start_run(small_site, mutable=True)["id"]  # db.1, web.1, web.2
    members = nodes(small_site, fake, run_id, 3)
    for state in ("Provisioning", "Executing", "SendingReports", "Ready"):
        wait_for_state(small_site, run_id, state)
        complete_all(members, state)
    answer = small_site.post(f"/api/runs/{run_id}/nodes/web/instances", json={"count": 2})
    assert answer.status_code == 422
    assert error(answer) == ("the run has 3 node instances: this site allows at most 4 in one run")
    assert small_site.get(f"/api/runs/{run_id}").json()["scaling"] is None


# -- reports -----------------------------------------------------------------------------


def test_a_report_over_the_cap_is_refused_as_it_streams(
    deploy_api: TestClient,
    run: tuple[str, dict[str, Node]],
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
) -> None:
    run_id, members = run
    monkeypatch.setattr(reports, "MAX_REPORT", 2**20)  # 64 MiB, in production
    piece = 64 * 1024
    body = itertools.chain([gzip.compress(b"x")], (b"\0" * piece for _ in range(100)))
    answer = send_in_pieces(  # no Content-Length: only the bytes can tell
        deploy_api,
        "PUT",
        f"/api/runs/{run_id}/reports/web.1",
        body,
        headers={"authorization": members["web.1"].headers["Authorization"]},
    )
    assert answer.status == 413
    assert answer.json()["error"]["message"] == "a report is at most 1 MiB; this one is larger"
    assert answer.pieces_read == 2**20 // piece + 1  # refused past the cap, not read to the end
    assert deploy_api.get(f"/api/runs/{run_id}/reports").json() == []
    assert list((settings.reports_dir / run_id).iterdir()) == []  # nothing left on disk


def test_a_report_that_is_not_gzip_is_refused(
    deploy_api: TestClient, run: tuple[str, dict[str, Node]]
) -> None:
    run_id, members = run
    answer = deploy_api.put(
        f"/api/runs/{run_id}/reports/web.1",
        content=b"PK\x03\x04 a zip",
        headers=members["web.1"].headers,
    )
    assert answer.status_code == 422
    assert error(answer) == "a report is a .tar.gz archive; this upload is not gzip data"


# -- streams end by themselves -----------------------------------------------------------


def read_to_the_end(client: TestClient, url: str) -> list[str]:
    """The lines of a stream, read in a thread so that a stream that never ends fails the
    test instead of hanging it."""
    lines: list[str] = []
    ended = threading.Event()

    def read() -> None:
        with client.stream("GET", url) as stream:
            lines.extend(line for line in stream.iter_lines() if line.strip())
        ended.set()

    threading.Thread(target=read, daemon=True).start()
    assert ended.wait(60), f"{url} did not end"
    return lines


@pytest.mark.parametrize(
    "url", ["/api/runs/{run}/watch?timeout=1e300", "/api/runs/{run}/logs?follow=true&timeout=1e300"]
)
def test_a_stream_asked_for_ages_ends_at_the_servers_bound(
    deploy_api: TestClient,
    run: tuple[str, dict[str, Node]],
    monkeypatch: pytest.MonkeyPatch,
    url: str,
) -> None:
    run_id, _members = run
    monkeypatch.setattr(runs_routes, "MAX_STREAM", 0.5)  # an hour, in production
    lines = read_to_the_end(deploy_api, url.format(run=run_id))
    if "watch" in url:
        assert '"kind": "created"' in lines[0]
    assert deploy_api.get(f"/api/runs/{run_id}").json()["state"] == "Provisioning"  # still live


@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "abc"])
def test_a_stream_timeout_that_is_not_a_positive_number_is_refused(
    deploy_api: TestClient, run: tuple[str, dict[str, Node]], timeout: str
) -> None:
    answer = deploy_api.get(f"/api/runs/{run[0]}/watch?timeout={timeout}")
    assert answer.status_code == 422
    assert error(answer).startswith("query.timeout: ")


# -- names and tokens of absurd length ---------------------------------------------------


LONG = "x" * 100_000


def test_a_node_token_of_absurd_length_is_unauthorized(
    deploy_api: TestClient, run: tuple[str, dict[str, Node]]
) -> None:
    answer = deploy_api.get(f"/run/{run[0]}/ss:state", headers={"Authorization": "Bearer " + LONG})
    assert answer.status_code == 401
    assert error(answer) == f"this token is not valid for run {run[0]}"


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("GET", "/api/runs/{run}/nodes/{long}.1/plan", 422, "is not a node instance of run"),
        ("GET", "/api/runs/{run}/reports/{long}", 404, "has sent no report for run"),
        ("PUT", "/api/runs/{run}/reports/{long}", 404, "no node instance"),
        ("POST", "/api/runs/{run}/nodes/{long}/instances", 409, "the run is not scalable"),
        ("GET", "/api/runs/{long}", 404, "no run"),
        ("GET", "/api/modules/{long}", 404, "no module"),
        ("GET", "/api/instances/{long}", 404, "no instance"),
    ],
)
def test_names_of_absurd_length_are_refused(
    deploy_api: TestClient,
    run: tuple[str, dict[str, Node]],
    method: str,
    path: str,
    status: int,
    message: str,
) -> None:
    body: dict[str, Any] = {}
    if method == "POST":
        body["json"] = {"count": 1}
    if method == "PUT":
        body["content"] = gzip.compress(b"x")
    answer = deploy_api.request(method, path.format(run=run[0], long="w" * 5000), **body)
    assert answer.status_code == status, answer.text
    assert message in error(answer)


def test_log_node_instances_of_absurd_length_are_refused(
    deploy_api: TestClient, run: tuple[str, dict[str, Node]]
) -> None:
    sent = deploy_api.post(
        f"/api/runs/{run[0]}/logs", json={"node_instance": "w" * 5000, "lines": [{"text": "x"}]}
    )
    assert sent.status_code == 422
    assert error(sent) == "node_instance: String should have at most 128 characters"
    read = deploy_api.get(f"/api/runs/{run[0]}/logs", params={"node": "w" * 5000})
    assert read.status_code == 422
    assert error(read) == "query.node: String should have at most 128 characters"


@pytest.mark.parametrize(
    ("method", "key"),
    [("GET", "web.1:" + "k" * 5000), ("PUT", "web.1:" + "k" * 5000), ("GET", "w" * 5000 + ".1:x")],
)
def test_parameter_keys_of_absurd_length_are_refused(
    deploy_api: TestClient, run: tuple[str, dict[str, Node]], method: str, key: str
) -> None:
    answer = deploy_api.request(method, f"/run/{run[0]}/{key}", content=b"v")
    assert answer.status_code == 422
    assert answer.text.endswith("...' is not a runtime parameter name")
    assert len(answer.text) < 200


def test_a_completion_for_a_node_instance_of_absurd_length_is_refused(
    deploy_api: TestClient, run: tuple[str, dict[str, Node]]
) -> None:
    answer = deploy_api.post(f"/run/{run[0]}/{'w' * 5000}.1:complete")
    assert answer.status_code == 404, answer.text
    assert answer.text.startswith("no node instance 'wwww")


# -- what the fuzzer found -----------------------------------------------------------------


def test_watching_an_instance_that_does_not_exist_is_not_found(deploy_api: TestClient) -> None:
    """Before: the stream had started when the id was looked up, so the answer broke off."""
    answer = deploy_api.get("/api/instances/watch", params={"ids": "i-nothing", "timeout": 1})
    assert answer.status_code == 404
    assert error(answer) == "no instance 'i-nothing'"


@pytest.mark.parametrize(
    ("form", "reason"),
    [
        (
            "type=Run",
            "run type 'Run': Orchestration (an application) and Machine (a bake) are supported",
        ),
        ("parameter--node--web--cloudservice=aws", "no cloud 'aws' at this site"),
    ],
)
def test_a_start_asking_what_is_not_supported_is_refused_not_a_server_error(
    deploy_api: TestClient, form: str, reason: str
) -> None:
    push_app(deploy_api)
    answer = deploy_api.post("/run", content=f"refqname=module/apps/demo&{form}", headers=FORM)
    assert answer.status_code == 409
    assert reason in detail(answer)


def test_a_module_file_name_longer_than_the_store_keeps_is_refused(
    deploy_api: TestClient,
) -> None:
    module = {"path": "x/base", "file": "d" * 501 + "/module.yaml", "text": BASE}
    answer = deploy_api.post("/api/modules", json={"modules": [module]})
    assert answer.status_code == 422
    assert error(answer) == "modules.0.file: String should have at most 512 characters"


def test_an_instance_request_holding_a_nul_is_refused(deploy_api: TestClient) -> None:
    answer = deploy_api.post("/api/instances", json={"image": "debian-12", "cloud": "lo\x00cal"})
    assert answer.status_code == 422
    assert error(answer) == "cloud: Value error, text holds no NUL character, and this one does"


# -- who a request acts for ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        (
            "POST",
            "/api/modules",
            {"modules": [{"path": "x/b", "file": "x/b.yaml", "text": "a: b"}]},
        ),
        ("POST", "/api/runs", {"module": "apps/demo"}),
        ("POST", "/api/instances", {"image": "debian-12"}),
    ],
)
def test_a_user_name_longer_than_the_store_keeps_is_refused(
    deploy_api: TestClient, method: str, path: str, body: dict[str, Any]
) -> None:
    push_app(deploy_api)
    answer = deploy_api.request(method, path, json=body, headers={"X-Stratus-User": "u" * 65})
    assert answer.status_code == 422, answer.text
    assert "x-stratus-user" in error(answer) and "64 characters" in error(answer)
