"""Secrets (``type: password``, ``ss-random --secret``): kept out of every listing, event, log
line and abort reason; shown to the run's owner on explicit request; read by the run's own
nodes by name. On both stores, with fake nodes speaking the real protocol."""

from __future__ import annotations

import json
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from fastapi.testclient import TestClient

from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.deploy.secrets import MASK, RunSecrets
from tests.api.secretapp import SECRET, TOKEN, services_of, started, user_client
from tests.deploy.support import complete_all, wait_for_state, wait_until

pytestmark = pytest.mark.usefixtures("fake")


def xml_params(answer: Any) -> dict[str, str]:
    assert answer.status_code == 200, answer.text
    root = ET.fromstring(answer.content)
    return {p.get("key"): p.text or "" for p in root.iter("runtimeParameter")}


def test_a_password_is_masked_everywhere_and_shown_to_its_owner_on_request(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    carol = user_client(deploy_api, "carol")
    bob = user_client(deploy_api, "bob")
    run_id, members = started(deploy_api, carol, fake)
    db, web = members["db.1"], members["web.1"]
    assert db.set("password", SECRET).status_code == 200

    # The run's own nodes read it by name: that is how web learns db's password.
    assert web.get("db_password").text == SECRET
    assert members["web.2"].get("db_password").text == SECRET
    assert web.get("db:password").text == SECRET

    listed = carol.get(f"/api/runs/{run_id}/params").json()
    for key in ("db.1:password", "web.1:db_password", "web.2:db_password"):
        assert listed[key] == MASK, key
    assert listed["web.1:greeting"] == "hello" and listed["db.1:token"] is None
    assert SECRET not in json.dumps(listed)
    shown = carol.get(f"/api/runs/{run_id}/params", params={"show_secrets": "true"}).json()
    assert shown["db.1:password"] == shown["web.2:db_password"] == SECRET
    # An administrator may ask too; another user does not even see the run.
    admin = deploy_api.get(f"/api/runs/{run_id}/params", params={"show_secrets": "true"})
    assert admin.json()["db.1:password"] == SECRET
    for params in ({}, {"show_secrets": "true"}):
        refused = bob.get(f"/api/runs/{run_id}/params", params=params)
        assert refused.status_code == 404 and SECRET not in refused.text
    assert bob.get(f"/run/{run_id}/db.1:password").status_code == 404

    # The XML is a listing, to the owner and to the run's nodes alike.
    assert xml_params(carol.get(f"/run/{run_id}"))["db.1:password"] == MASK
    node_view = web.api.get(f"/run/{run_id}", headers=web.headers)
    assert xml_params(node_view)["web.1:db_password"] == MASK and SECRET not in node_view.text
    bulk = web.api.get(
        f"/api/runs/{run_id}/params", params={"show_secrets": "true"}, headers=web.headers
    )
    assert bulk.status_code in (401, 403) and SECRET not in bulk.text
    # The owner reading the one value by its name asks for it explicitly.
    assert carol.get(f"/run/{run_id}/db.1:password").text == SECRET

    assert SECRET not in carol.get(f"/api/runs/{run_id}").text
    assert SECRET not in carol.get(f"/api/runs/{run_id}/events").text


def test_a_node_marks_a_value_secret_and_its_copies_follow(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    run_id, members = started(deploy_api, deploy_api, fake)
    db = members["db.1"]
    assert db.set("token", TOKEN, secret="true").status_code == 200  # ss-random --secret token
    listed = deploy_api.get(f"/api/runs/{run_id}/params").json()
    assert listed["db.1:token"] == listed["web.1:db_token"] == listed["web.2:db_token"] == MASK
    assert members["web.2"].get("db_token").text == TOKEN
    # Once secret, for good: a later write without the flag stays masked.
    assert db.set("token", "tok-another-one").status_code == 200
    assert deploy_api.get(f"/api/runs/{run_id}/params").json()["db.1:token"] == MASK
    assert members["web.1"].get("db_token").text == "tok-another-one"

    # What every node instance has is shown to whoever looks: it cannot be made secret.
    refused = db.set("statecustom", "busy", secret="true")
    assert refused.status_code == 422 and "only a declared parameter" in refused.text
    # A global: the run view shows ss:url.service, masked once it is secret.
    assert db.set("ss:url.service", "https://admin:Hunter2-x@db", secret="true").status_code == 200
    view = deploy_api.get(f"/api/runs/{run_id}").json()
    assert view["service_url"] == MASK


def test_secret_values_are_redacted_from_logs_displays_and_abort_reasons(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    run_id, members = started(deploy_api, deploy_api, fake)
    db, web = members["db.1"], members["web.1"]
    assert db.set("password", SECRET).status_code == 200
    assert db.set("token", TOKEN, secret="true").status_code == 200

    lines = [
        {"text": f"connecting with password={SECRET}", "stream": "stdout"},
        {"text": f"token {TOKEN}; again {TOKEN}", "stream": "stderr"},
        {"text": "nothing secret here", "stream": "stdout"},
    ]
    sent = web.api.post(
        f"/api/runs/{run_id}/logs",
        json={"node_instance": "web.1", "lines": lines},
        headers=web.headers,
    )
    assert sent.status_code == 204, sent.text
    stored = [line["text"] for line in deploy_api.get(f"/api/runs/{run_id}/logs").json()]
    assert stored == [
        f"connecting with password={MASK}",
        f"token {MASK}; again {MASK}",
        "nothing secret here",
    ]

    assert web.set("statecustom", f"logged in as admin/{SECRET}").status_code == 200
    view = deploy_api.get(f"/api/runs/{run_id}").json()
    (shown,) = [n["statecustom"] for n in view["nodes"] if n["name"] == "web.1"]
    assert shown == f"logged in as admin/{MASK}"

    assert web.set("abort", f"psql: password {SECRET} refused").status_code == 200
    wait_until(lambda: deploy_api.get(f"/api/runs/{run_id}").json()["abort_reason"], what="abort")
    reason = f"web.1: psql: password {MASK} refused"
    assert deploy_api.get(f"/api/runs/{run_id}").json()["abort_reason"] == reason
    assert web.get("ss:abort", ignoreabort="true").text == reason
    listed = deploy_api.get("/run").text
    assert SECRET not in listed and MASK in listed

    found = deploy_api.get(f"/api/runs/{run_id}/events").json()
    kinds = {event["kind"] for event in found}
    assert {"display", "abort"} <= kinds
    assert SECRET not in json.dumps(found) and TOKEN not in json.dumps(found)
    wait_for_state(deploy_api, run_id, "SendingReports")

    later = RunSecrets(services_of(deploy_api).engine)  # a server started afterwards
    assert later.redact(run_id, f"{SECRET} {TOKEN}") == f"{MASK} {MASK}"


def test_an_instance_added_later_keeps_the_secrets_of_its_sources(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    run_id, members = started(deploy_api, deploy_api, fake, mutable=True)
    members["db.1"].set("password", SECRET)
    members["db.1"].set("token", TOKEN, secret="true")
    for state in ("Provisioning", "Executing", "SendingReports", "Ready"):
        wait_for_state(deploy_api, run_id, state)
        complete_all(members, state)
    wait_until(lambda: deploy_api.get(f"/api/runs/{run_id}").json()["waiting"] == 0, what="Ready")
    added = deploy_api.post(f"/api/runs/{run_id}/nodes/web/instances", json={"count": 1})
    assert added.json() == {"added": ["web.3"]}
    listed = deploy_api.get(f"/api/runs/{run_id}/params").json()
    assert listed["web.3:db_password"] == listed["web.3:db_token"] == MASK
    shown = deploy_api.get(f"/api/runs/{run_id}/params", params={"show_secrets": "true"}).json()
    assert (shown["web.3:db_password"], shown["web.3:db_token"]) == (SECRET, TOKEN)
