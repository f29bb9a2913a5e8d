"""`stratus user`, `stratus group` and `stratus apikey` as users meet them, through the CLI
in-process with the credentials it chooses itself: administrators with the site token
(STRATUS_TOKEN), others logged in."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from stratuslab.config import Settings
from tests.cli.logins import PASSWORD, REMOTE, Cli

ADMIN = {"token": "test-token"}


@pytest.fixture
def cli(
    api: TestClient,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Cli:
    return Cli(api.app, settings.with_overrides(server_url=REMOTE, token=""), capsys, monkeypatch)


def as_admin(cli: Cli, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = cli(*args, stdin=stdin, **ADMIN)
    return result.code, result.out, result.err


def add_and_log_in(cli: Cli, name: str) -> None:
    assert as_admin(cli, "user", "add", name, "--password-stdin", stdin=PASSWORD)[0] == 0
    done = cli("login", "--user", name, "--password-stdin", stdin=PASSWORD)
    assert done.code == 0, done.err


def test_an_administrator_adds_lists_shows_disables_and_enables_users(cli: Cli) -> None:
    code, out, _ = as_admin(
        cli, "user", "add", "bob", "--email", "bob@lab.example", "--password-stdin", stdin=PASSWORD
    )
    assert (code, out) == (0, "Added the user bob.\n")
    code, out, _ = as_admin(
        cli, "user", "add", "carol", "--admin", "--password-stdin", stdin=PASSWORD
    )
    assert (code, out) == (0, "Added the administrator carol.\n")
    code, out, err = as_admin(cli, "user", "add", "dave")  # no terminal, no --password-stdin
    assert (code, out) == (0, "Added the user dave.\n")
    assert err == "dave has no password yet: `stratus user passwd dave`\n"

    code, out, _ = as_admin(cli, "user", "list")
    assert code == 0 and re.search(r"bob\s+bob@lab\.example\s+user\s+enabled", out)
    assert re.search(r"carol\s+admin\s+enabled", out)
    listed = json.loads(as_admin(cli, "user", "list", "-o", "json")[1])
    assert [(u["name"], u["admin"], u["has_password"]) for u in listed] == [
        ("bob", False, True),
        ("carol", True, True),
        ("dave", False, False),
    ]
    code, out, _ = as_admin(cli, "user", "show", "bob")
    assert code == 0 and "bob@lab.example" in out and re.search(r"password\s+set", out)

    disabled = json.loads(as_admin(cli, "user", "disable", "bob", "-o", "json")[1])
    assert disabled["disabled"] is True
    assert re.search(r"state\s+disabled", as_admin(cli, "user", "show", "bob")[1])
    enabled = json.loads(as_admin(cli, "user", "enable", "bob", "-o", "json")[1])
    assert enabled["disabled"] is False


def test_user_add_asks_twice_without_echo_on_a_terminal(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts: list[str] = []
    answers = ["battery staple", "battery staple", "one thing", "another", ""]

    def getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return answers.pop(0)

    monkeypatch.setattr("getpass.getpass", getpass)
    made = cli("user", "add", "bob", tty=True, **ADMIN)
    assert made.code == 0, made.err
    assert prompts == ["Password for bob: ", "Password for bob (again): "]
    differ = cli("user", "add", "carol", tty=True, **ADMIN)
    assert differ.code == 65 and differ.err == (
        "error: the two passwords differ: nothing was changed\n"
    )
    empty = cli("user", "add", "carol", tty=True, **ADMIN)
    assert empty.code == 65 and "an empty password" in empty.err
    assert [u["name"] for u in json.loads(cli("user", "list", "-o", "json", **ADMIN).out)] == [
        "bob"
    ]
    logged = cli("login", "--user", "bob", "--password-stdin", stdin="battery staple")
    assert logged.code == 0, logged.err


def test_passwords_change_for_oneself_and_by_an_administrator(cli: Cli) -> None:
    add_and_log_in(cli, "bob")
    own = cli("user", "passwd", "--password-stdin", stdin="battery staple\n")
    assert (own.code, own.out) == (0, "Changed the password of bob.\n")
    assert cli("login", "--user", "bob", "--password-stdin", stdin=PASSWORD).code == 77
    assert cli("login", "--user", "bob", "--password-stdin", stdin="battery staple").code == 0
    code, out, _ = as_admin(
        cli, "user", "passwd", "bob", "--password-stdin", stdin="reset by admin"
    )
    assert (code, out) == (0, "Changed the password of bob.\n")
    assert cli("login", "--user", "bob", "--password-stdin", stdin="reset by admin").code == 0


def test_a_non_administrator_is_refused_with_77(cli: Cli) -> None:
    add_and_log_in(cli, "bob")
    for args, text in [
        (("user", "add", "carol"), "only an administrator may add users"),
        (("user", "list"), "only an administrator may list users"),
        (("user", "disable", "bob"), "only an administrator may disable or enable users"),
        (("group", "add", "bobs"), "only an administrator may add groups"),
    ]:
        refused = cli(*args)
        assert refused.code == 77, (args, refused)
        assert refused.err == f"error: {text}\n"
    assert json.loads(cli("user", "show", "bob", "-o", "json").out)["name"] == "bob"
    hidden = cli("user", "show", "alice")
    assert hidden.code == 66 and hidden.err.startswith("error: no user 'alice'")


@pytest.mark.parametrize(
    ("args", "stdin", "code", "text"),
    [
        (("user", "add", "Bob"), None, 65, "error: user name 'Bob': a lowercase letter"),
        (("user", "add", "b" * 70), None, 65, "up to 63 lowercase letters"),
        (("user", "add", "bob"), None, 67, "error: user bob exists already"),
        (("user", "add", "eve", "--password-stdin"), "short\n", 65, "at least 8 characters"),
        (("user", "add", "eve", "--password-stdin"), "x" * 1025, 65, "at most 1024 characters"),
        (("user", "add", "eve", "--password-stdin"), "\n", 65, "password read from stdin is empty"),
        (("user", "add", "eve", "--email", "nope"), None, 65, "email 'nope' is not an address"),
        (("user", "passwd", "bob"), None, 64, "no terminal to ask for the password"),
        (("user", "show", "nobody"), None, 66, "error: no user 'nobody'"),
        (("group", "show", "nosuch"), None, 66, "error: no group 'nosuch'"),
        (("group", "add-member", "nosuch", "bob"), None, 66, "error: no group 'nosuch'"),
        (("group", "add-member", "physics", "nobody"), None, 66, "error: no user 'nobody'"),
        (("group", "remove-member", "physics", "bob"), None, 66, "bob is not a member"),
        (("group", "add", "physics"), None, 67, "error: group physics exists already"),
        (("apikey", "revoke", "0" * 32), None, 66, "error: no API key"),
    ],
)
def test_bad_input_is_one_line_with_its_exit_code(
    cli: Cli, args: tuple[str, ...], stdin: str | None, code: int, text: str
) -> None:
    assert as_admin(cli, "user", "add", "bob")[0] == 0
    assert as_admin(cli, "group", "add", "physics")[0] == 0
    result = cli(*args, stdin=stdin, **ADMIN)
    assert result.code == code, result
    assert text in result.err
    if code != 64:  # a usage error shows the usage too, as Click's own do
        assert len(result.err.strip().splitlines()) == 1


def test_groups_are_made_filled_and_emptied(cli: Cli) -> None:
    add_and_log_in(cli, "bob")
    assert as_admin(cli, "user", "add", "carol", "--password-stdin", stdin=PASSWORD)[0] == 0
    code, out, _ = as_admin(cli, "group", "add", "physics", "-d", "the [bold]physicists[/bold]")
    assert (code, out) == (0, "Added the group physics.\n")
    code, out, _ = as_admin(cli, "group", "add-member", "physics", "bob", "carol")
    assert code == 0 and re.search(r"members\s+bob, carol", out)
    listed = as_admin(cli, "group", "list")[1]
    assert re.search(
        r"physics\s+bob, carol\s+the \[bold\]physicists\[/bold\]", listed
    )  # as written
    code, out, _ = as_admin(cli, "group", "remove-member", "physics", "carol", "-o", "json")
    assert json.loads(out)["members"] == ["bob"]

    mine = json.loads(cli("group", "list", "-o", "json").out)  # bob, logged in
    assert [g["name"] for g in mine] == ["physics"]
    assert json.loads(cli("group", "show", "physics", "-o", "json").out)["members"] == ["bob"]
    assert json.loads(cli("whoami", "-o", "json").out)["groups"] == ["physics"]
    assert cli("group", "add-member", "physics", "carol").code == 77
    cli("login", "--user", "carol", "--password-stdin", stdin=PASSWORD)
    assert "No groups." in cli("group", "list").err
    assert cli("group", "show", "physics").code == 66


def test_api_keys_are_shown_once_listed_used_and_revoked(cli: Cli) -> None:
    add_and_log_in(cli, "bob")
    made = cli("apikey", "create", "--name", "ci", "--expires", "30")
    assert made.code == 0, made.err
    found = re.search(
        r"^Created (credential/[0-9a-f]{32}) \(name 'ci', expires (\S+)\)\.$", made.out, re.M
    )
    in_30_days = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    assert found and found.group(2).startswith(in_30_days)
    token = re.search(r"^token: ([0-9a-f]{32}\.\S+)$", made.out, re.M)
    assert token and token.group(1).startswith(found.group(1).removeprefix("credential/"))
    assert "it will not be shown again" in made.err
    key_id, secret = found.group(1), token.group(1).split(".", 1)[1]

    listed = cli("apikey", "list", "-o", "json")
    (shown,) = json.loads(listed.out)
    assert (shown["id"], shown["name"], shown["state"], shown["user"]) == (
        key_id,
        "ci",
        "live",
        "bob",
    )
    assert "secret" not in shown and secret not in listed.out
    assert re.search(r"ci\s+live", cli("apikey", "list").out)

    as_key = json.loads(cli("whoami", "-o", "json", token=token.group(1)).out)
    assert (as_key["user"], as_key["authenticated_by"]) == ("bob", "api-key")
    machine = json.loads(cli("apikey", "create", "-o", "json").out)
    assert machine["secret"] and machine["token"].endswith("." + machine["secret"])

    revoked = cli("apikey", "revoke", key_id)
    assert (revoked.code, revoked.out) == (0, f"Revoked {key_id}.\n")
    refused = cli("whoami", token=token.group(1))
    assert (
        refused.code == 77 and refused.err == "error: this API key is wrong, revoked or expired\n"
    )
    assert json.loads(cli("apikey", "list", "-o", "json").out)[0]["state"] == "revoked"
    bad = cli("apikey", "create", "--expires", "0")
    assert bad.code == 65 and "between 1 and 3650 days" in bad.err


def test_another_users_key_is_not_found(cli: Cli) -> None:
    add_and_log_in(cli, "bob")
    bobs = json.loads(cli("apikey", "create", "--name", "bobs", "-o", "json").out)
    add_and_log_in(cli, "carol")
    assert json.loads(cli("apikey", "list", "-o", "json").out) == []
    stolen = cli("apikey", "revoke", bobs["id"])
    assert stolen.code == 66 and stolen.err.startswith(f"error: no API key '{bobs['id']}'")
    still = json.loads(cli("whoami", "-o", "json", token=bobs["token"]).out)
    assert still["user"] == "bob"
    everyone = json.loads(cli("apikey", "list", "--all", "-o", "json", **ADMIN).out)
    assert [k["user"] for k in everyone] == ["bob"]
