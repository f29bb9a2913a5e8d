"""`stratus module`: check, push and read the modules applications are made of, and say who
may read, push and run them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from stratuslab.cli.output import age, emit_json, out, output_option, table
from stratuslab.cli.runtime import Runtime, pass_runtime
from stratuslab.errors import Invalid


@click.group(name="module", no_args_is_help=True)
def group() -> None:
    """Check, push and read modules (images, components, applications)."""


@group.command("check")
@click.argument("target")
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="NODE:NAME=VALUE",
    help="a value a run would be given (as for `stratus deploy`); repeatable",
)
@output_option
def check(target: str, params: tuple[str, ...], output: str) -> None:
    """Check TARGET and every module it refers to, here, without a server: each file, then the
    whole as the server resolves it when a run is created (parents, images for each node's
    cloud, mappings, required inputs not mapped nor given with --param)."""
    from stratuslab.deploy.check import check_tree

    given = dict(_param(p) for p in params)
    texts = check_tree(Path.cwd(), target.removesuffix(".yaml").rstrip("/"), given=given)
    if output == "json":
        emit_json([{"path": t.path, "file": t.file} for t in texts])
    else:
        out.print(f"{len(texts)} module(s) checked: " + ", ".join(t.path for t in texts))


@group.command("push")
@click.argument("target")
@output_option
@pass_runtime
def push(rt: Runtime, target: str, output: str) -> None:
    """Push TARGET and every module it refers to; each becomes a new version."""
    from stratuslab.deploy.tree import load_tree

    texts = load_tree(Path.cwd(), target.removesuffix(".yaml").rstrip("/"))
    stored = rt.client.push_modules(
        [{"path": t.path, "file": t.file, "text": t.text} for t in texts]
    )
    if output == "json":
        emit_json(stored)
    else:
        table(
            None,
            ("MODULE", "VERSION", "KIND"),
            ((m["path"], m["version"], m["kind"]) for m in stored),
        )


@group.command("list")
@output_option
@pass_runtime
def list_modules(rt: Runtime, output: str) -> None:
    """Every module you may read, at its newest version, with its owner and what you may do
    with it (r read, w push, x run)."""
    found = rt.client.modules()
    if output == "json":
        emit_json(found)
    else:
        table(
            None,
            ("MODULE", "KIND", "VERSIONS", "OWNER", "YOU", "PUSHED"),
            (_listed(m) for m in found),
        )


@group.command("show")
@click.argument("address")
@output_option
@pass_runtime
def show(rt: Runtime, address: str, output: str) -> None:
    """Module ADDRESS (path for the newest version, path/N for version N), as pushed."""
    found = rt.client.module(address)
    if output == "json":
        emit_json(found)
    else:
        out.print(
            f"# {found['path']} version {found['version']} of {found['versions'][-1]} "
            f"({found['kind']}), "
            f"from {found['file']}",
            highlight=False,
            markup=False,
        )
        out.print(f"# {_rights_line(found)}", highlight=False, markup=False)
        out.print(found["text"], highlight=False, markup=False)


@group.command("rights")
@click.argument("path")
@click.option("--group", "group_name", metavar="GROUP", help="the path's group: one of yours")
@click.option("--no-group", is_flag=True, help="the path has no group")
@click.option("--group-rights", metavar="RWX", help="what the group's members may do: r w x, or -")
@click.option("--public-rights", metavar="RWX", help="what every user may do: r w x, or -")
@output_option
@pass_runtime
def rights(
    rt: Runtime,
    path: str,
    group_name: str | None,
    no_group: bool,
    group_rights: str | None,
    public_rights: str | None,
    output: str,
) -> None:
    """Show, or with options change, who may read (r), push (w) and run (x) module PATH (a
    module or a project above modules). The owner may do everything; only the owner, the
    owner of a project above PATH, or an administrator changes rights. A path nobody holds
    is claimed as yours. Edit or run includes read."""
    if group_name is not None and no_group:
        raise click.UsageError("give --group or --no-group, not both")
    changes: dict[str, Any] = {}
    if group_name is not None or no_group:
        changes["group"] = group_name or ""
    if group_rights is not None:
        changes["group_rights"] = group_rights
    if public_rights is not None:
        changes["public_rights"] = public_rights
    found = rt.client.module_rights(path, changes or None)
    if output == "json":
        emit_json(found)
        return
    granted = found["rights"]
    out.print(found["path"], highlight=False, markup=False)
    table(
        None,
        ("", "WHO", "RIGHTS"),
        (
            ("owner", found["owner"], granted["owner"]),
            ("group", found["group"] or "-", granted["group"]),
            ("public", "everyone", granted["public"]),
        ),
    )
    for project in found["projects"]:
        out.print(
            f"also held by {project['owner']}, owner of {project['path']}",
            highlight=False,
            markup=False,
        )
    out.print(f"you may: {found['allowed']}", highlight=False, markup=False)


def _listed(module: dict[str, Any]) -> tuple[Any, ...]:
    shown = ("path", "kind", "versions", "owner", "allowed")
    return (*(module[key] for key in shown), age(module["created_at"]))


def _rights_line(found: dict[str, Any]) -> str:
    granted = found["rights"]
    group = f"group {found['group']} {granted['group']}" if found["group"] else "no group"
    return (
        f"owner {found['owner']}, {group}, public {granted['public']}; you may {found['allowed']}"
    )


def _param(text: str) -> tuple[str, str]:
    """``NODE:NAME=VALUE`` as (``NODE:NAME``, ``VALUE``), read as `stratus deploy --param` is."""
    key, equals, value = text.partition("=")
    if not equals or ":" not in key:
        raise Invalid(f"{text!r}: write it as --param NODE:NAME=VALUE")
    return key, value
