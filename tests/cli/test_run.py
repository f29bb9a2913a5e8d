"""`stratus run`: what its commands print of a run with secrets (the CLI's own code: the server
masks, the CLI asks to see them only when told)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.config import Settings
from stratuslab.deploy.secrets import MASK
from tests.api.secretapp import SECRET, started
from tests.support import cli_on


def test_run_params_masks_secrets_unless_asked(
    deploy_api: TestClient,
    fake: FakeConnector,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    stratus = cli_on(deploy_api, settings, capsys)
    run_id, members = started(deploy_api, deploy_api, fake)  # alice's run
    assert members["db.1"].set("password", SECRET).status_code == 200
    assert members["db.1"].set("ss:url.service", f"https://admin:{SECRET}@db").status_code == 200

    table = stratus("run", "params", run_id[:8])
    assert table.code == 0, table.err
    rows = dict(line.split(None, 1) for line in table.out.splitlines()[1:] if " " in line.strip())
    assert rows["db.1:password"].strip() == rows["web.2:db_password"].strip() == MASK
    assert rows["web.1:greeting"].strip() == "hello"
    assert rows["ss:url.service"].strip() == f"https://admin:{MASK}@db"
    assert SECRET not in table.out

    as_json = stratus("run", "params", run_id, "--node", "db", "-o", "json")
    assert json.loads(as_json.out)["db.1:password"] == MASK
    assert SECRET not in as_json.out

    shown = stratus("run", "params", run_id, "--show-secrets", "-o", "json")
    values = json.loads(shown.out)
    assert values["db.1:password"] == values["web.1:db_password"] == SECRET
    assert SECRET in stratus("run", "params", run_id, "--show-secrets").out

    # Not a secret (url.service was set without --secret), yet shown redacted: it holds one.
    show = stratus("run", "show", run_id)
    assert show.code == 0 and SECRET not in show.out
    assert f"https://admin:{MASK}@db" in show.out
