"""Contextualization: what an instance is told when it first boots.

Two things travel to every instance: the ssh keys that may log in as root and the user-data.
User-data is either a script (``#!``), run once at first boot, or a ``#cloud-config`` document.
cloud-init understands both; the base images this project builds carry a small
``stratus-context`` service that understands scripts and the cloud-config subset below. Both are
checked here, on the user's side, so that a mistake is reported before anything is created.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from stratuslab.errors import Invalid

MAX_USER_DATA = 64 * 1024
_KEY = re.compile(
    r"^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com)"
    r" [A-Za-z0-9+/]+={0,3}( .*)?$"
)
_CLOUD_CONFIG_KEYS = {
    "ssh_authorized_keys": "a list of public keys",
    "write_files": "a list of {path, content, permissions}",
    "runcmd": "a list of commands (strings or argument lists)",
    "packages": "a list of Debian package names",
    "package_update": "true or false",
}


def read_ssh_keys(path: Path) -> tuple[str, ...]:
    """The public keys in ``path`` (an ``authorized_keys``-style file)."""
    try:
        text = path.expanduser().read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise Invalid(
            f"cannot read the key file {path}: {getattr(exc, 'strerror', None) or exc}",
            hint="give the path of a public key, e.g. ~/.ssh/id_ed25519.pub",
        ) from exc
    return parse_ssh_keys(text, source=str(path))


def parse_ssh_keys(text: str, *, source: str = "key") -> tuple[str, ...]:
    keys = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "PRIVATE KEY" in line:
            raise Invalid(f"{source}: this is a private key; give the public one (.pub)")
        if not _KEY.match(line):
            raise Invalid(
                f"{source}:{number}: not an OpenSSH public key",
                hint="expected e.g. 'ssh-ed25519 AAAA... user@host'",
            )
        keys.append(line)
    if not keys:
        raise Invalid(f"{source}: no public key found")
    return tuple(keys)


def read_user_data(path: Path) -> str:
    try:
        data = path.expanduser().read_bytes()
    except OSError as exc:
        raise Invalid(f"cannot read the user-data file {path}: {exc.strerror or exc}") from exc
    return normalise_user_data(data, source=str(path))


def normalise_user_data(data: bytes, *, source: str = "user-data") -> str:
    """Check user-data and return it as it will be delivered.

    A ``#cloud-config`` document is re-written as JSON (which is YAML), so that the image's
    context service needs no YAML parser.
    """
    if len(data) > MAX_USER_DATA:
        raise Invalid(f"{source}: user-data is {len(data)} bytes, the limit is {MAX_USER_DATA}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Invalid(
            f"{source}: user-data must be UTF-8 text (compressed or binary data is not supported)"
        ) from exc
    first = text.split("\n", 1)[0].strip()
    if first.startswith("#!"):
        return text
    if first == "#cloud-config":
        return "#cloud-config\n" + json.dumps(_check_cloud_config(text, source), sort_keys=True)
    raise Invalid(
        f"{source}: user-data must start with '#!' (a script) or '#cloud-config'",
        hint=f"its first line is {first[:40]!r}",
    )


def _check_cloud_config(text: str, source: str) -> dict[str, Any]:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f":{where.line + 1}" if where is not None else ""
        raise Invalid(
            f"{source}{line}: cloud-config is not valid YAML: {getattr(exc, 'problem', exc)}"
        ) from exc
    document = document or {}
    if not isinstance(document, dict):
        raise Invalid(f"{source}: cloud-config must be a mapping")
    for key, value in document.items():
        if key not in _CLOUD_CONFIG_KEYS:
            raise Invalid(
                f"{source}: cloud-config key {key!r} is not supported",
                hint="supported: " + ", ".join(sorted(_CLOUD_CONFIG_KEYS)),
            )
        if not _valid(key, value):
            raise Invalid(f"{source}: cloud-config {key!r} must be {_CLOUD_CONFIG_KEYS[key]}")
    if "ssh_authorized_keys" in document:
        parse_ssh_keys(
            "\n".join(document["ssh_authorized_keys"]), source=f"{source}: ssh_authorized_keys"
        )
    return document


def _valid(key: str, value: Any) -> bool:
    if key == "package_update":
        return isinstance(value, bool)
    if not isinstance(value, list):
        return False
    if key in ("ssh_authorized_keys", "packages"):
        return all(isinstance(v, str) for v in value)
    if key == "runcmd":
        return all(
            isinstance(v, str) or (isinstance(v, list) and all(isinstance(a, str) for a in v))
            for v in value
        )
    return all(
        isinstance(f, dict)
        and isinstance(f.get("path"), str)
        and f["path"].startswith("/")
        and isinstance(f.get("content", ""), str)
        and set(f) <= {"path", "content", "permissions"}
        for f in value
    )
