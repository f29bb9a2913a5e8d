"""`stratus module rights`, `module show` and `module list` as two users who are not
administrators, in-process against the API."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from stratuslab import config
from stratuslab.api.client import ApiClient
from stratuslab.cli.main import main
from stratuslab.cli.runtime import Runtime
from stratuslab.config import Settings
from stratuslab.principal import SERVER
from tests.deploy.support import push_app
from tests.support import CliResult, InProcessTransport, environment

Stratus = Callable[..., CliResult]


@pytest.fixture
def settings(tmp_path: Path, store: str) -> Settings:
    """The site's own user is root, so that alice and bob are users like any other."""
    return config.load(environment(tmp_path, STRATUS_DATABASE_URL=store, STRATUS_USER="root"))


def cli_as(
    api: TestClient, settings: Settings, capsys: pytest.CaptureFixture[str], user: str
) -> Stratus:
    def run(*args: str) -> CliResult:
        runtime = Runtime()
        runtime.__dict__["settings"] = settings
        runtime.__dict__["client"] = ApiClient(
            "http://testserver", token="test-token", user=user, transport=InProcessTransport(api)
        )
        code = main(list(args), runtime=runtime)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def people(
    api: TestClient, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> tuple[Stratus, Stratus]:
    accounts = api.app.state.services.accounts  # type: ignore[attr-defined]
    accounts.add_group("team", caller=SERVER)
    for name in ("alice", "bob"):
        accounts.add_user(name, caller=SERVER, password="correct horse")
    accounts.add_member("team", "alice", caller=SERVER)
    push_app(
        TestClient(
            api.app, headers={"Authorization": "Bearer test-token", "X-Stratus-User": "alice"}
        )
    )
    return cli_as(api, settings, capsys, "alice"), cli_as(api, settings, capsys, "bob")


def test_the_owner_sets_rights_and_show_and_list_say_them(people: tuple[Stratus, Stratus]) -> None:
    alice, bob = people
    shown = alice("module", "rights", "apps/demo")
    assert shown.code == 0, shown.err
    assert "owner   alice     rwx" in shown.out and "public  everyone  ---" in shown.out

    changed = alice(
        "module", "rights", "apps/demo", "--group", "team", "--group-rights", "rx",
        "--public-rights", "r", "-o", "json",
    )  # fmt: skip
    assert changed.code == 0, changed.err
    found = json.loads(changed.out)
    assert (found["owner"], found["group"]) == ("alice", "team")
    assert found["rights"] == {"owner": "rwx", "group": "r-x", "public": "r--"}

    page = bob("module", "show", "apps/demo")
    assert page.code == 0, page.err
    assert "# owner alice, group team r-x, public r--; you may r--" in page.out
    listed = bob("module", "list")
    assert "apps/demo" in listed.out and "alice" in listed.out and "r--" in listed.out
    assert "apps/web" not in listed.out  # still hers alone

    cleared = alice("module", "rights", "apps/demo", "--no-group", "-o", "json")
    assert json.loads(cleared.out)["group"] is None


def test_bob_is_refused_in_one_line_with_the_documented_codes(
    people: tuple[Stratus, Stratus],
) -> None:
    alice, bob = people
    hidden = bob("module", "show", "apps/demo")
    assert hidden.code == 66 and hidden.err.startswith("error: no module 'apps/demo'")
    assert bob("module", "rights", "apps/demo").code == 66
    alice("module", "rights", "apps/demo", "--public-rights", "r")
    refused = bob("module", "rights", "apps/demo", "--public-rights", "rwx")
    assert refused.code == 77
    assert (
        refused.err == "error: only alice or an administrator changes the rights of 'apps/demo'\n"
    )
    bad = alice("module", "rights", "apps/demo", "--public-rights", "rq")
    assert bad.code == 65 and "letters of rwx" in bad.err
    both = alice("module", "rights", "apps/demo", "--group", "team", "--no-group")
    assert both.code == 64
