"""`stratus module`: check, push and read the modules applications are made of."""

from __future__ import annotations

from pathlib import Path

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
    from stratuslab.deploy.model import load_tree

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
    """Every module on the server, at its newest version."""
    found = rt.client.modules()
    if output == "json":
        emit_json(found)
    else:
        table(
            None,
            ("MODULE", "KIND", "VERSIONS", "PUSHED"),
            ((m["path"], m["kind"], m["versions"], age(m["created_at"])) for m in found),
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
        )
        out.print(found["text"], highlight=False, markup=False)


def _param(text: str) -> tuple[str, str]:
    """``NODE:NAME=VALUE`` as (``NODE:NAME``, ``VALUE``), read as `stratus deploy --param` is."""
    key, equals, value = text.partition("=")
    if not equals or ":" not in key:
        raise Invalid(f"{text!r}: write it as --param NODE:NAME=VALUE")
    return key, value
