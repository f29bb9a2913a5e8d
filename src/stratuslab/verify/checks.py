"""What a watch may be given, checked where it is written: names, paths, branches, values,
notification targets, deploy keys, each with its bound."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from stratuslab.deploy.states import KeepRunning
from stratuslab.errors import Invalid

MAX_BRANCHES = 20  # branches of one watch
MAX_NOTIFY = 20  # targets of one watch
MAX_PARAMS = 200  # deploy-time values of one watch
KEEP = tuple(policy.value for policy in KeepRunning)
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_BRANCH = re.compile(r"[A-Za-z0-9._/-]{1,255}")
_MODULE = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_./-]{0,254}")
_MAIL = re.compile(r"mailto:[^@\s<>,;]{1,64}@[A-Za-z0-9.-]{1,253}")


def name_from(repository: str) -> str:
    tail = repository.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    tail = tail.lower().removesuffix(".git")
    # A name starts with a letter or digit: what a repository's name may start with is cut.
    cleaned = re.sub(r"[^a-z0-9_.-]", "-", tail).strip("-._") or "watch"
    return cleaned[:64]


def checked_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise Invalid(
            f"watch name {name[:80]!r}: lowercase letters, digits, '.', '_' and '-', "
            "at most 64, starting with a letter or digit"
        )
    return name


def checked_module(module: str) -> str:
    if not _MODULE.fullmatch(module) or ".." in module.split("/"):
        raise Invalid(
            f"--module {module[:80]!r}: a module's path in the repository (examples/webapp)"
        )
    return module.strip("/")


def checked_branches(branches: Sequence[str]) -> list[str]:
    kept = list(dict.fromkeys(branches)) or ["main"]
    if len(kept) > MAX_BRANCHES:
        raise Invalid(f"{len(kept)} branches: at most {MAX_BRANCHES} per watch")
    for branch in kept:
        if not _BRANCH.fullmatch(branch) or branch.startswith(("-", "/")) or ".." in branch:
            raise Invalid(f"--branch {branch[:80]!r} is not a branch name")
    return kept


def checked_params(params: Mapping[str, str]) -> dict[str, str]:
    if len(params) > MAX_PARAMS:
        raise Invalid(f"{len(params)} --param values: at most {MAX_PARAMS}")
    for key, value in params.items():
        if ":" not in key or len(key) > 255 or not isinstance(value, str) or len(value) > 4096:
            raise Invalid(f"--param {key[:80]!r}: NODE:NAME=VALUE, a value of at most 4 KiB")
    return dict(params)


def checked_notify(targets: Sequence[str]) -> list[str]:
    kept = list(dict.fromkeys(targets))
    if len(kept) > MAX_NOTIFY:
        raise Invalid(f"{len(kept)} --notify targets: at most {MAX_NOTIFY}")
    for target in kept:
        if target.startswith("mailto:"):
            if not _MAIL.fullmatch(target):
                raise Invalid(f"--notify {target[:80]!r}: mailto:ADDRESS, one address")
        elif not re.fullmatch(r"https?://[^\s]{1,2040}", target):
            raise Invalid(
                f"--notify {target[:80]!r}: mailto:ADDRESS or an http(s):// URL",
                hint="a URL receives a signed JSON document per verdict",
            )
    return kept


def checked_keep(keep: str) -> str:
    if keep not in KEEP:
        raise Invalid(f"--keep-running {keep[:20]!r}: one of {', '.join(KEEP)}")
    return keep


def checked_key(key: str | None) -> str | None:
    if key is None:
        return None
    if len(key) > 16384 or "PRIVATE KEY-----" not in key:
        raise Invalid("--deploy-key: an ssh private key (OpenSSH or PEM), at most 16 KiB")
    return key
