"""/agent: the zipapp every node downloads, its digest, and the digest its user-data expects."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from stratuslab.cloud import sitecert
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.config import Settings
from stratuslab.deploy import agent_bundle
from tests.deploy.support import nodes, push_app, start_run, wait_for_state


@pytest.fixture
def store(tmp_path: Path) -> str:
    """Only SQLite: what is served here does not come from the store."""
    return f"sqlite:///{tmp_path}/data/stratus.db"


def test_the_zipapp_is_served_with_its_digest(api: TestClient) -> None:
    answer = api.get(f"/agent/{agent_bundle.NAME}", headers={"Authorization": ""})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/zip"
    digest = hashlib.sha256(answer.content).hexdigest()
    assert answer.content == agent_bundle.bundle().data
    assert answer.headers["x-stratus-agent-sha256"] == digest
    assert answer.headers["etag"] == f'"{digest}"'
    line = api.get(f"/agent/{agent_bundle.NAME}.sha256", headers={"Authorization": ""})
    assert (line.status_code, line.text) == (200, f"{digest}  {agent_bundle.NAME}\n")


def test_the_single_file_agent_is_gone(api: TestClient) -> None:
    assert api.get("/agent/stratus_agent.py").status_code == 404


def test_a_nodes_user_data_expects_the_zipapp_served(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    push_app(deploy_api)
    run = start_run(deploy_api)
    nodes(deploy_api, fake, run["id"], 3)
    served = deploy_api.get(f"/agent/{agent_bundle.NAME}").content
    digest = hashlib.sha256(served).hexdigest()
    instances = fake.list_instances(tags={"run": run["id"]})
    assert len(instances) == 3
    for instance in instances:
        assert f"\nexpected={digest}\n" in instance.extra["user_data"]
    assert deploy_api.delete(f"/run/{run['id']}").status_code == 204
    wait_for_state(deploy_api, run["id"], "Cancelled")


def test_a_nodes_user_data_trusts_this_sites_ca_and_calls_the_server_over_tls(
    deploy_api: TestClient, fake: FakeConnector, settings: Settings
) -> None:
    """Each node gets the site CA the server listens for nodes with, in its configuration and
    as the file its download is checked against: a neighbour cannot pose as the server."""
    push_app(deploy_api)
    run = start_run(deploy_api)
    nodes(deploy_api, fake, run["id"], 3)
    ca = sitecert.read_ca(settings.tls_dir)
    assert ca is not None and ca == sitecert.ensure(settings).ca_pem
    for instance in fake.list_instances(tags={"run": run["id"]}):
        user_data = instance.extra["user_data"]
        config = json.loads(user_data.split("'STRATUS_AGENT_CONF'\n", 1)[1].split("\n", 1)[0])
        assert config["ca"] == ca
        assert config["server"] == settings.agent_url
        assert config["server"].startswith(f"https://{settings.bridge_gateway}:")
        assert f"<<'STRATUS_SERVER_CA'\n{ca}STRATUS_SERVER_CA\n" in user_data
        assert '--cacert "$ca"' in user_data
    assert deploy_api.delete(f"/run/{run['id']}").status_code == 204
    wait_for_state(deploy_api, run["id"], "Cancelled")
