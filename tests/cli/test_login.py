"""`stratus login`, `whoami`, `logout` and the credential the CLI chooses: the login kept in a
file of mode 0600 (one others may read is refused), sent only to the server it came from;
STRATUS_TOKEN first; the local site token last, only when readable; X-Stratus-User only when
asked for."""

from __future__ import annotations

import io
import json
import stat
import sys
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from stratuslab import build
from stratuslab.accounts import COOKIE
from stratuslab.accounts import COOKIE as SESSION_COOKIE  # one definition, client and server
from stratuslab.cli import credfile
from stratuslab.cli.main import main
from stratuslab.cli.runtime import Runtime
from stratuslab.config import Settings
from tests.api.impostor import Impostor, health
from tests.cli.logins import PASSWORD, REMOTE, Cli

ADMIN = {"token": "test-token"}  # STRATUS_TOKEN: the site token, the host's administrator


@pytest.fixture
def cli(
    api: TestClient,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Cli:
    """Alice's CLI (STRATUS_USER=alice) of the remote server, with no token and no login."""
    return Cli(api.app, settings.with_overrides(server_url=REMOTE, token=""), capsys, monkeypatch)


def add_user(cli: Cli, name: str = "bob") -> None:
    added = cli("user", "add", name, "--password-stdin", stdin=PASSWORD + "\n", **ADMIN)
    assert added.code == 0, added.err


def log_in(cli: Cli, name: str = "bob", **overrides: str) -> None:
    done = cli("login", "--user", name, "--password-stdin", stdin=PASSWORD, **overrides)
    assert done.code == 0, done.err


def test_login_whoami_logout_round_trip(cli: Cli, api: TestClient, settings: Settings) -> None:
    add_user(cli)
    logged = cli("login", "--user", "bob", "--password-stdin", stdin=PASSWORD + "\n")
    assert logged.code == 0, logged.err
    assert logged.out.startswith(f"Logged in to {REMOTE} as bob until ")
    path = settings.credentials_file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert PASSWORD not in path.read_text()
    kept = credfile.find(path, REMOTE)
    assert kept is not None and (kept.user, kept.expires is not None) == ("bob", True)

    me = cli("whoami", "-o", "json")
    assert me.code == 0, me.err
    shown = json.loads(me.out)
    assert (shown["user"], shown["admin"], shown["authenticated_by"]) == ("bob", False, "session")
    assert (shown["session"], shown["credential"]) == (kept.session, "session")
    assert shown["login"]["file"] == str(path)
    sent = cli.sent()[-1]
    assert SESSION_COOKIE == COOKIE  # the client's name for the cookie is the server's
    assert sent.header("cookie") == f"{SESSION_COOKIE}={kept.cookie}"
    assert sent.header("authorization") is None
    assert sent.header("x-stratus-user") is None  # STRATUS_USER is alice, but nobody asked
    table = cli("whoami")
    assert "bob" in table.out and f"session {kept.session} (kept in" in table.out
    assert cli("run", "list", "-o", "json").code == 0  # bob's commands just work

    out = cli("logout")
    assert (out.code, out.out) == (0, f"Logged out of {REMOTE} (bob); the session ended.\n")
    assert not path.exists()
    old_cookie = TestClient(api.app, cookies={SESSION_COOKIE: kept.cookie})
    assert old_cookie.get("/api/whoami").status_code == 401
    after = cli("whoami")
    assert after.code == 77 and after.err.startswith("error: log in first")
    again = cli("logout")
    assert again.code == 0 and "Not logged in to http://testserver: nothing to do." in again.err


def test_a_new_login_ends_the_session_it_replaces(cli: Cli, api: TestClient) -> None:
    add_user(cli)
    log_in(cli)
    first = credfile.find(cli.settings.credentials_file, REMOTE)
    log_in(cli)
    second = credfile.find(cli.settings.credentials_file, REMOTE)
    assert first is not None and second is not None and first.session != second.session
    old = TestClient(api.app, cookies={SESSION_COOKIE: first.cookie}).get("/api/whoami")
    assert old.status_code == 401
    assert json.loads(cli("whoami", "-o", "json").out)["session"] == second.session


def test_a_credentials_file_others_may_read_is_refused(cli: Cli) -> None:
    add_user(cli)
    log_in(cli)
    path = cli.settings.credentials_file
    path.chmod(0o644)
    before = len(cli.sent())
    for args in (("whoami",), ("logout",), ("login", "--password-stdin")):
        refused = cli(*args, stdin=PASSWORD)
        assert refused.code == 77, (args, refused)
        assert refused.err == (
            f"error: {path} may be read or changed by others (mode 0644): not using the "
            f"credentials in it; delete it and log in again (its sessions may have been read), "
            f"or `chmod 600 {path}`\n"
        )
    assert len(cli.sent()) == before  # nothing was sent, the password least of all
    path.chmod(0o600)
    assert cli("whoami").code == 0


def test_the_session_goes_only_to_the_server_it_came_from(cli: Cli) -> None:
    add_user(cli)
    log_in(cli)
    other = "http://other.example:8421"
    refused = cli("whoami", server_url=other)
    assert refused.code == 77 and refused.err.startswith("error: log in first")
    assert cli.sent(other)
    for sent in cli.sent(other):
        assert sent.header("cookie") is None and sent.header("authorization") is None


def test_a_login_to_another_server_is_kept_for_that_server(cli: Cli) -> None:
    add_user(cli)
    other = "http://other.example:8421/"
    done = cli("login", "--server", other, "--user", "bob", "--password-stdin", stdin=PASSWORD)
    assert done.code == 0, done.err
    assert "warning: http://other.example:8421 is plain HTTP" in done.err
    assert "set STRATUS_SERVER_URL=http://other.example:8421" in done.err
    assert cli("whoami").code == 77  # the configured server has no login
    there = cli("whoami", "-o", "json", server_url="http://other.example:8421")
    assert json.loads(there.out)["user"] == "bob"
    bad = cli("login", "--server", "ftp://x", "--password-stdin", stdin=PASSWORD)
    assert bad.code == 65 and "use http://host:port or https://host:port" in bad.err


def test_wrong_passwords_and_disabled_users_are_refused(cli: Cli) -> None:
    add_user(cli)
    wrong = cli("login", "--user", "bob", "--password-stdin", stdin="not the password")
    assert wrong.code == 77 and wrong.err.endswith("\nerror: wrong user name or password\n")
    assert not cli.settings.credentials_file.exists()
    empty = cli("login", "--user", "bob", "--password-stdin", stdin="\n")
    assert empty.code == 65 and "empty" in empty.err
    no_terminal = cli("login", "--user", "bob")
    assert no_terminal.code == 64 and "use --password-stdin" in no_terminal.err

    log_in(cli)
    assert cli("user", "disable", "bob", **ADMIN).code == 0
    ended = cli("whoami")
    assert ended.code == 77 and "the session has ended" in ended.err
    refused = cli("login", "--user", "bob", "--password-stdin", stdin=PASSWORD)
    assert refused.code == 77 and refused.err.endswith("\nerror: the account bob is disabled\n")


def test_an_expired_login_is_not_sent(cli: Cli) -> None:
    past = datetime.now(UTC) - timedelta(minutes=1)
    credfile.save(
        cli.settings.credentials_file,
        credfile.Login(REMOTE, "bob", "session/x", "cookie-value", past),
    )
    expired = cli("whoami")
    assert expired.code == 77
    assert expired.err.startswith(f"error: your session on {REMOTE} as bob ended at ")
    assert f"log in again: `stratus login --server {REMOTE}`" in expired.err
    assert not cli.sent()


def test_stratus_token_comes_first_and_an_api_key_needs_no_identity_check(cli: Cli) -> None:
    add_user(cli)
    log_in(cli)
    made = cli("apikey", "create", "--name", "ci", "-o", "json")
    token = json.loads(made.out)["token"]
    sent_before = len(cli.sent())
    me = json.loads(cli("whoami", "-o", "json", token=token).out)
    assert (me["user"], me["authenticated_by"], me["credential"]) == ("bob", "api-key", "API key")
    sent = cli.sent()[sent_before:]
    assert [s.target for s in sent] == ["/api/whoami"]  # no /health challenge for a key
    assert sent[0].header("authorization") == f"Bearer {token}"
    assert sent[0].header("cookie") is None
    site = json.loads(cli("whoami", "-o", "json", **ADMIN).out)
    assert (site["user"], site["authenticated_by"]) == ("alice", "site-token")
    assert cli.sent()[-2].target.startswith("/health?challenge=")  # the site token: proved


def test_x_stratus_user_is_sent_only_when_asked_and_only_works_for_administrators(
    cli: Cli,
) -> None:
    add_user(cli)
    add_user(cli, "carol")
    log_in(cli)
    posing = cli("--user", "carol", "whoami")
    assert posing.code == 77
    assert posing.err == "error: x-stratus-user: only an administrator acts as another user\n"
    assert cli.sent()[-1].header("x-stratus-user") == "carol"
    acting = json.loads(cli("--user", "bob", "whoami", "-o", "json", **ADMIN).out)
    assert (acting["user"], acting["acting_as"], acting["authenticated_as"]) == (
        "bob",
        True,
        "alice",
    )
    table = cli("--user", "bob", "whoami", **ADMIN)
    assert "acting for" in table.out and "alice (administrator)" in table.out


def test_the_local_site_token_is_used_last_and_only_when_readable(cli: Cli) -> None:
    local = cli.settings.with_overrides(server_url="")
    cli.settings = local
    url = local.local_server_url
    nothing = cli("whoami")
    assert nothing.code == 77 and nothing.err.startswith("error: log in first")
    assert all(s.header("authorization") is None for s in cli.sent(url))

    local.token_file.write_text("test-token\n")
    local.token_file.chmod(0o600)
    site = json.loads(cli("whoami", "-o", "json").out)
    assert (site["user"], site["admin"], site["authenticated_by"]) == ("alice", True, "site-token")
    assert cli.sent(url)[-2].target.startswith("/health?challenge=")
    admin_added = cli("user", "add", "root", "--admin", "--password-stdin", stdin=PASSWORD)
    assert admin_added.out == "Added the administrator root.\n"

    log_in(cli, "root")  # on the local server: no --server
    me = json.loads(cli("whoami", "-o", "json").out)
    assert (me["user"], me["authenticated_by"]) == ("root", "session")
    assert cli.sent(url)[-1].header("authorization") is None


def test_a_squatter_on_the_local_port_is_not_told_the_password(
    settings: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.token_file.write_text("the-site-token\n")
    posing = health(pid=4242, build=build.running(), idle_exit=300, proof="f" * 64)
    with Impostor(posing) as impostor:
        runtime = Runtime()
        runtime.__dict__["settings"] = settings.with_overrides(server_port=impostor.port)
        monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD))
        code = main(["login", "--password-stdin"], runtime=runtime)
    assert code == 77
    assert "did not prove it holds the site token" in capsys.readouterr().err
    assert impostor.received and not impostor.saw(PASSWORD)
    assert all(r.path.startswith("/health?") for r in impostor.received)
