from __future__ import annotations

import json
from pathlib import Path

import pytest

from stratuslab.cloud.context import (
    normalise_user_data,
    parse_ssh_keys,
    read_ssh_keys,
    read_user_data,
)
from stratuslab.errors import Invalid

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHd8m5hLrq1vXbU3lY4D2v5b5nK0q0s7b1tQm1c2a3b4 alice@lab"


def test_public_keys_are_read_line_by_line_ignoring_comments(tmp_path: Path) -> None:
    path = tmp_path / "keys.pub"
    path.write_text(f"# mine\n{KEY}\n\n{KEY.replace('alice', 'bob')}\n")
    assert read_ssh_keys(path) == (KEY, KEY.replace("alice", "bob"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-----BEGIN OPENSSH PRIVATE KEY-----", "private key"),
        ("ssh-ed25519", "not an OpenSSH public key"),
        ("hello world", "keys.pub:1: not an OpenSSH public key"),
        ("# only a comment", "no public key"),
    ],
)
def test_bad_key_files_are_explained(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "keys.pub"
    path.write_text(text + "\n")
    with pytest.raises(Invalid, match=message):
        read_ssh_keys(path)


def test_an_unreadable_key_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(Invalid, match=r"cannot read the key file .*nope\.pub"):
        read_ssh_keys(tmp_path / "nope.pub")


def test_scripts_pass_through_untouched() -> None:
    script = "#!/bin/sh\necho hi\n"
    assert normalise_user_data(script.encode()) == script


def test_cloud_config_is_checked_and_delivered_as_json() -> None:
    document = (
        "#cloud-config\npackages: [nginx]\nruncmd:\n  - echo hi\n  - [touch, /x]\n"
        "ssh_authorized_keys:\n  - " + KEY
    )
    delivered = normalise_user_data(document.encode())
    first, body = delivered.split("\n", 1)
    assert first == "#cloud-config"
    assert json.loads(body) == {
        "packages": ["nginx"],
        "runcmd": ["echo hi", ["touch", "/x"]],
        "ssh_authorized_keys": [KEY],
    }
    assert normalise_user_data(delivered.encode()) == delivered  # checking twice changes nothing


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"echo hi", "must start with '#!'"),
        (b"\x1f\x8b\x08binary", "UTF-8 text"),
        (b"#cloud-config\nusers: []", "'users' is not supported"),
        (b"#cloud-config\npackages: nginx", "'packages' must be a list"),
        (b"#cloud-config\nwrite_files: [{path: relative}]", "'write_files' must be"),
        (b"#cloud-config\n  bad: [yaml", r"user-data:\d+: cloud-config is not valid YAML"),
        (b"#cloud-config\n- a\n- b", "must be a mapping"),
        (b"#!/bin/sh\n" + b"x" * 70000, "the limit is 65536"),
    ],
)
def test_bad_user_data_is_refused_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(Invalid, match=message):
        normalise_user_data(data)


def test_user_data_files_are_named_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "boot.txt"
    path.write_text("plain text\n")
    with pytest.raises(Invalid, match=r"boot\.txt: user-data must start"):
        read_user_data(path)


def test_keys_in_cloud_config_are_checked_like_key_files() -> None:
    with pytest.raises(Invalid, match="ssh_authorized_keys"):
        parse_ssh_keys("ssh-rsa", source="user-data: ssh_authorized_keys")
    with pytest.raises(Invalid, match="ssh_authorized_keys"):
        normalise_user_data(b"#cloud-config\nssh_authorized_keys: [nonsense]")
