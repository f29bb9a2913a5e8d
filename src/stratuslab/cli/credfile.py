"""The CLI's logins: one session per server URL, in the user's own file, readable by them only.

``stratus login`` opens a session on a server (``POST /api/session``) and keeps what the server
answered here: the session's id, its cookie and when it expires, in a TOML table named after
the server's URL (``settings.credentials_file``, by default
``~/.config/stratuslab/credentials.toml``). The file is written with mode 0600, atomically;
one that others may read or write, or that belongs to someone else, is refused rather than
used, as ssh refuses such a key: its sessions may have been read. A session is sent only to
the URL it was opened on (the client is made for one URL, and looks its session up by it).
"""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NamedTuple

from stratuslab.errors import Invalid, Unauthorized

if TYPE_CHECKING:
    from pathlib import Path

_HEADER = (
    "# StratusLab CLI logins, one table per server URL (`stratus login`, `stratus logout`).\n"
    "# Each holds a session's cookie: keep this file private (mode 0600).\n"
)
_FIELDS = ("user", "session", "cookie", "expires")


class Login(NamedTuple):
    """A session the CLI holds on one server. (A named tuple: the CLI defines it on the way to
    its first request, where a dataclass costs a millisecond more.)"""

    server: str
    user: str
    session: str  # "session/<uuid>", the resource to DELETE on logout
    cookie: str
    expires: datetime | None

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires is not None and self.expires <= (now or datetime.now(UTC))


def server_key(url: str) -> str:
    """A server URL as logins are filed under it."""
    return url.strip().rstrip("/")


def find(path: Path, url: str) -> Login | None:
    return load(path).get(server_key(url))


def load(path: Path) -> dict[str, Login]:
    """Every login in the file (none when it does not exist). Refuses a file others may read."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise Invalid(f"cannot read {path}: {exc.strerror}") from exc
    _check_private(path, info)
    import tomllib  # imported here: `stratus --help` does not read this file

    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise Invalid(
            f"{path} is not a credentials file StratusLab can read: {exc}",
            hint="delete it and log in again",
        ) from exc
    return {server_key(url): _login(path, url, table) for url, table in raw.items()}


def save(path: Path, login: Login) -> None:
    """Add or replace the login for ``login.server``."""
    logins = load(path)
    logins[server_key(login.server)] = login
    _write(path, logins)


def forget(path: Path, url: str) -> Login | None:
    """Remove the login for ``url``; the one removed, if there was one. An empty file goes."""
    logins = load(path)
    gone = logins.pop(server_key(url), None)
    if gone is not None:
        if logins:
            _write(path, logins)
        else:
            path.unlink(missing_ok=True)
    return gone


def _check_private(path: Path, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise Unauthorized(f"{path} is not a regular file: not using it as a credentials file")
    if info.st_uid != os.geteuid():
        raise Unauthorized(
            f"{path} belongs to uid {info.st_uid}, not to you (uid {os.geteuid()}): "
            "not using the credentials in it",
            hint="delete it and log in again",
        )
    if info.st_mode & 0o077:
        mode = stat.S_IMODE(info.st_mode)
        raise Unauthorized(
            f"{path} may be read or changed by others (mode {mode:04o}): not using the "
            "credentials in it",
            hint=f"delete it and log in again (its sessions may have been read), "
            f"or `chmod 600 {path}`",
        )


def _login(path: Path, url: str, table: object) -> Login:
    if not isinstance(table, dict) or not all(isinstance(table.get(name), str) for name in _FIELDS):
        raise Invalid(
            f"{path}: the login for {url!r} lacks one of {', '.join(_FIELDS)}",
            hint="delete it and log in again",
        )
    try:
        expires = datetime.fromisoformat(table["expires"]) if table["expires"] else None
    except ValueError as exc:
        raise Invalid(f"{path}: the login for {url!r}: expires: {exc}") from exc
    if expires is not None and expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    return Login(url, table["user"], table["session"], table["cookie"], expires)


def _write(path: Path, logins: dict[str, Login]) -> None:
    """The whole file, replaced atomically by one made with mode 0600 from the start."""
    import tempfile  # only when writing: the CLI reads this file on most commands
    from pathlib import Path

    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    text = [_HEADER]
    for key, login in sorted(logins.items()):
        values = {
            "user": login.user,
            "session": login.session,
            "cookie": login.cookie,
            "expires": login.expires.isoformat() if login.expires else "",
        }
        text.append(f"\n[{_string(key)}]\n")
        text.extend(f"{name} = {_string(value)}\n" for name, value in values.items())
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".credentials-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:  # mkstemp made it 0600, owned by us
            handle.write("".join(text))
            handle.flush()
            os.fsync(handle.fileno())
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _string(value: str) -> str:
    """A TOML basic string: JSON's escapes (ASCII only) are TOML's."""
    return json.dumps(value, ensure_ascii=True)
