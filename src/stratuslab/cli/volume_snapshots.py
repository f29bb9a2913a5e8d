"""`stratus volume snapshot`: saved states of a volume's files, kept with the volume."""

from __future__ import annotations

from typing import Any

import click

from stratuslab.cli.default_group import DefaultGroup
from stratuslab.cli.output import age, emit_json, err, out, output_option, plain, table
from stratuslab.cli.runtime import Runtime, pass_runtime


@click.group("snapshot", cls=DefaultGroup, no_args_is_help=True)
def snapshot() -> None:
    """Snapshot a volume (`snapshot NAME [--name S]`), list, restore and delete snapshots.

    Make a new volume from one with `stratus volume create NEW --from NAME/S`."""


@snapshot.command("create")
@click.argument("ref", metavar="NAME")
@click.option("--name", help="the snapshot's name (default: the time, as 20250131-142501)")
@output_option
@pass_runtime
def create(rt: Runtime, ref: str, name: str | None, output: str) -> None:
    """Snapshot volume NAME's files, attached or not."""
    taken = rt.client.take_volume_snapshot(ref, name)
    if output == "json":
        emit_json(taken)
    else:
        out.print(plain(f"{taken['volume']}: snapshot {taken['name']} taken"))


@snapshot.command("list")
@click.argument("ref", metavar="NAME")
@output_option
@pass_runtime
def list_snapshots(rt: Runtime, ref: str, output: str) -> None:
    """Volume NAME's snapshots, oldest first."""
    found = rt.client.volume_snapshots(ref)
    if output == "json":
        emit_json(found)
    elif not found:
        err.print(
            f"No snapshot of {ref}: take one with `stratus volume snapshot {ref}`.",
            markup=False,
            highlight=False,
        )
    else:
        table(None, ("SNAPSHOT", "AGE", "TAKEN AT"), (_row(s) for s in found))


@snapshot.command("restore")
@click.argument("ref", metavar="NAME")
@click.argument("name", metavar="SNAPSHOT")
@output_option
@pass_runtime
def restore(rt: Runtime, ref: str, name: str, output: str) -> None:
    """Put volume NAME's files back as they were at SNAPSHOT (which is kept). Detach it from
    running instances first."""
    view = rt.client.restore_volume_snapshot(ref, name)
    if output == "json":
        emit_json(view)
    else:
        out.print(plain(f"{view['ref']}: restored to snapshot {name}"))


@snapshot.command("delete")
@click.argument("ref", metavar="NAME")
@click.argument("name", metavar="SNAPSHOT")
@output_option
@pass_runtime
def delete(rt: Runtime, ref: str, name: str, output: str) -> None:
    """Delete snapshot SNAPSHOT of volume NAME (deleting one that is gone succeeds)."""
    rt.client.delete_volume_snapshot(ref, name)
    if output == "json":
        emit_json({"volume": ref, "name": name, "deleted": True})
    else:
        out.print(plain(f"{ref}: snapshot {name} deleted"))


def _row(found: dict[str, Any]) -> tuple[str, str, str]:
    taken = found.get("created_at")
    return found["name"], age(taken), taken or "-"
