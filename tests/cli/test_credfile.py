"""The CLI's credentials file: mode 0600 from the start, replaced whole, one login per server
URL; a file others may read, or someone else's, or not a file at all, is refused."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stratuslab.cli import credfile
from stratuslab.errors import Invalid, Unauthorized

SOON = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def login(server: str, user: str = "bob", expires: datetime | None = SOON) -> credfile.Login:
    return credfile.Login(server, user, "session/0a1b", f"cookie-of-{user}", expires)


def test_logins_are_kept_per_server_in_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "config" / "stratuslab" / "credentials.toml"
    credfile.save(path, login("http://a.example:8421/"))
    credfile.save(path, login('https://b.example/odd"path\\', "carol", None))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["credentials.toml"]  # no temporary left
    found = credfile.find(path, "http://a.example:8421")
    assert found == login("http://a.example:8421")
    odd = credfile.find(path, 'https://b.example/odd"path\\')
    assert odd is not None and (odd.user, odd.expires) == ("carol", None)

    credfile.save(path, login("http://a.example:8421", "dave"))
    assert credfile.find(path, "http://a.example:8421/") == login("http://a.example:8421", "dave")
    assert credfile.forget(path, "http://a.example:8421") is not None
    assert credfile.find(path, "http://a.example:8421") is None
    assert credfile.forget(path, 'https://b.example/odd"path\\') is not None
    assert not path.exists()  # nothing left: no file
    assert credfile.forget(path, "http://a.example:8421") is None


def test_expiry(tmp_path: Path) -> None:
    assert not login("x", expires=None).expired()
    assert login("x", expires=datetime.now(UTC) - timedelta(seconds=1)).expired()
    assert not login("x", expires=datetime.now(UTC) + timedelta(hours=1)).expired()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602])
def test_a_file_others_may_read_or_write_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "credentials.toml"
    credfile.save(path, login("http://a"))
    path.chmod(mode)
    with pytest.raises(
        Unauthorized, match=f"may be read or changed by others \\(mode {mode:04o}\\)"
    ):
        credfile.find(path, "http://a")


def test_someone_elses_file_and_what_is_no_file_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "credentials.toml"
    credfile.save(path, login("http://a"))
    os.chown(path, 65534, 65534)  # the tests run as root
    with pytest.raises(Unauthorized, match="belongs to uid 65534, not to you"):
        credfile.load(path)
    folder = tmp_path / "folder"
    folder.mkdir(mode=0o700)
    with pytest.raises(Unauthorized, match="is not a regular file"):
        credfile.load(folder)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("this is = = not toml", "is not a credentials file StratusLab can read"),
        ('["http://a"]\nuser = "bob"\n', "lacks one of user, session, cookie, expires"),
        ('["http://a"]\nuser = "b"\nsession = "s"\ncookie = "c"\nexpires = 3\n', "lacks one"),
        ('["http://a"]\nuser = "b"\nsession = "s"\ncookie = "c"\nexpires = "soon"\n', "expires"),
    ],
)
def test_a_damaged_file_is_an_error_that_says_so(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "credentials.toml"
    path.write_text(text)
    path.chmod(0o600)
    with pytest.raises(Invalid, match=message):
        credfile.load(path)
