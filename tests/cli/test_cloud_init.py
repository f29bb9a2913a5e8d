"""`stratus cloud init` makes the first administrator (setting `user`) when there is none,
with a password printed once or read from stdin; a second run changes nothing and says so.
On the real LXD daemon that `make setup` initialised (what `cloud init` sets up is there)."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable

import pytest
from sqlalchemy.engine import Engine

from stratuslab.accounts.secrets import verify_password
from stratuslab.accounts.users import Accounts
from stratuslab.cli.main import main
from stratuslab.cli.runtime import Runtime
from stratuslab.config import Settings
from stratuslab.db.models import UserRecord
from stratuslab.db.session import session_scope
from stratuslab.principal import SERVER
from tests.support import CliResult

pytestmark = pytest.mark.lxd
Init = Callable[..., CliResult]


@pytest.fixture
def init(
    settings: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Init:
    def run(*args: str, stdin: str = "") -> CliResult:
        runtime = Runtime()
        runtime.__dict__["settings"] = settings
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(["cloud", "init", *args], runtime=runtime)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def password_of(engine: Engine, name: str) -> str | None:
    with session_scope(engine) as session:
        row = session.get(UserRecord, name)
        return row.password_hash if row is not None else None


def test_the_first_administrator_is_made_once_with_a_password_shown_once(
    init: Init, engine: Engine
) -> None:
    first = init()
    assert first.code == 0, first.err
    lines = first.out.splitlines()
    assert lines[0] == "The local cloud is ready."
    assert lines[1].startswith("The administrator alice has the password: ")
    password = lines[1].rsplit(" ", 1)[1]
    assert len(password) >= 20 and verify_password(password_of(engine, "alice"), password)
    assert "it will not be shown again" in first.err
    alice = Accounts(engine).principal("alice")
    assert alice is not None and alice.admin

    again = init("-o", "json")
    assert again.code == 0, again.err
    report = json.loads(again.out)
    assert report["changed"] is False and report["administrator"] is None
    assert report["steps"]["administrator"] == "present"
    assert password not in again.out + again.err
    assert verify_password(password_of(engine, "alice"), password)  # unchanged
    third = init()
    assert third.out == "The local cloud is ready. Nothing needed changing.\n"


def test_the_first_administrators_password_can_come_from_stdin(init: Init, engine: Engine) -> None:
    made = init("--admin-password-stdin", "-o", "json", stdin="chosen by the site\n")
    assert made.code == 0, made.err
    report = json.loads(made.out)
    assert report["steps"]["administrator"] == "created alice" and report["administrator"] is None
    assert verify_password(password_of(engine, "alice"), "chosen by the site")
    short = init("--admin-password-stdin", stdin="x")
    assert short.code == 0 and "the password given was not used" in short.err


def test_a_bad_first_password_is_refused_and_makes_no_administrator(
    init: Init, engine: Engine
) -> None:
    refused = init("--admin-password-stdin", stdin="short")
    assert refused.code == 65 and "at least 8 characters" in refused.err
    assert not Accounts(engine).any_admin()


def test_an_existing_user_of_that_name_is_not_made_administrator_behind_ones_back(
    init: Init, engine: Engine
) -> None:
    Accounts(engine).add_user("alice", caller=SERVER)
    result = init()
    assert result.code == 0, result.err
    assert "administrator: none: the user alice exists and is not one" in result.err
    assert not Accounts(engine).any_admin()
