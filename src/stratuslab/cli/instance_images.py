"""`stratus instance save` and `stratus instance snapshot`: images and snapshots of instances."""

from __future__ import annotations

from typing import Any

import click

from stratuslab.cli.default_group import DefaultGroup
from stratuslab.cli.output import age, emit_json, err, out, output_option, table
from stratuslab.cli.runtime import Runtime, pass_runtime


@click.command("save")
@click.argument("ref")
@click.option("--name", required=True, help="the image's name: it is called <you>/NAME")
@click.option("--public", is_flag=True, help="let every user start it (default: yours alone)")
@click.option("--description", default="", help="what the image holds")
@output_option
@pass_runtime
def save(rt: Runtime, ref: str, name: str, public: bool, description: str, output: str) -> None:
    """Make an image of instance REF, stopped or running (a running one keeps running)."""
    if output == "json":
        emit_json(rt.client.save_instance(ref, name=name, public=public, description=description))
        return
    with err.status(f"saving {ref} as an image...", spinner="dots"):
        made = rt.client.save_instance(ref, name=name, public=public, description=description)
    out.print(
        f"{made['name']}: saved from {made['instance']} in {made['seconds']:.1f} s, "
        f"fingerprint {made['fingerprint'][:12]}, {made['size_bytes'] / 2**20:.0f} MiB"
        + (", public" if made["public"] else ""),
        highlight=False,
        markup=False,
    )


@click.group("snapshot", cls=DefaultGroup, no_args_is_help=True)
def snapshot() -> None:
    """Snapshot an instance (`snapshot ID [--name S]`), list, restore and delete snapshots."""


@snapshot.command("create")
@click.argument("ref")
@click.option("--name", help="the snapshot's name (default: the time, as 20250131-142501)")
@output_option
@pass_runtime
def create(rt: Runtime, ref: str, name: str | None, output: str) -> None:
    """Snapshot instance REF's root filesystem, running or stopped."""
    taken = rt.client.take_snapshot(ref, name)
    if output == "json":
        emit_json(taken)
    else:
        out.print(f"{taken['instance']}: snapshot {taken['name']} taken", markup=False)


@snapshot.command("list")
@click.argument("ref")
@output_option
@pass_runtime
def list_snapshots(rt: Runtime, ref: str, output: str) -> None:
    """Instance REF's snapshots, oldest first."""
    found = rt.client.snapshots(ref)
    if output == "json":
        emit_json(found)
    elif not found:
        err.print(f"No snapshot of {ref}: take one with `stratus instance snapshot {ref}`.")
    else:
        table(None, ("NAME", "AGE", "SIZE"), (_row(s) for s in found))


@snapshot.command("restore")
@click.argument("ref")
@click.argument("name")
@output_option
@pass_runtime
def restore(rt: Runtime, ref: str, name: str, output: str) -> None:
    """Put instance REF back as it was at snapshot NAME (a running one restarts)."""
    view = rt.client.restore_snapshot(ref, name)
    if output == "json":
        emit_json(view)
    else:
        out.print(f"{view['id']}: restored to {name}, {view['state']}", markup=False)


@snapshot.command("delete")
@click.argument("ref")
@click.argument("name")
@output_option
@pass_runtime
def delete(rt: Runtime, ref: str, name: str, output: str) -> None:
    """Delete snapshot NAME of instance REF (deleting one that is gone succeeds)."""
    rt.client.delete_snapshot(ref, name)
    if output == "json":
        emit_json({"instance": ref, "name": name, "deleted": True})
    else:
        out.print(f"{ref}: snapshot {name} deleted", markup=False)


def _row(found: dict[str, Any]) -> tuple[str, str, str]:
    size = found.get("size_bytes")
    return found["name"], age(found["created_at"]), f"{size / 2**20:.0f} MiB" if size else "-"
