"""`stratus volume`: persistent volumes, made on their own, attached to running instances,
kept when instances die.

StratusLab users knew these as stratus-create-volume, stratus-describe-volumes,
stratus-attach-volume, stratus-detach-volume and stratus-delete-volume (its persistent disk
service). A volume is named NAME (yours), OWNER/NAME (anybody's public one) or by its id.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import click

from stratuslab.cli.output import age, emit_json, err, out, output_option, plain, table
from stratuslab.cli.runtime import Runtime, pass_runtime
from stratuslab.cloud.volume_values import format_size
from stratuslab.errors import Invalid


@click.group(name="volume", no_args_is_help=True)
def group() -> None:
    """Make, list, attach, detach, resize, snapshot and delete persistent volumes."""


@group.command("create")
@click.argument("name")
@click.option("--size", help="2GiB, 500MiB, 1TiB... (with --from: at least the source's)")
@click.option("--public", is_flag=True, help="let every user attach it, read-only")
@click.option("--description", default="", help="what the volume holds")
@click.option(
    "--from",
    "source",
    metavar="VOLUME[/SNAPSHOT]",
    help="a copy of a volume (OWNER/NAME) or of one of its snapshots (OWNER/NAME/SNAPSHOT)",
)
@click.option("--cloud", default="local", show_default=True, help="the cloud to make it on")
@output_option
@pass_runtime
def create(
    rt: Runtime,
    name: str,
    size: str | None,
    public: bool,
    description: str,
    source: str | None,
    cloud: str,
    output: str,
) -> None:
    """Make volume NAME: empty, or with --from a copy-on-write copy of another volume or of
    one of its snapshots. The size counts against your storage quota."""
    if size is None and source is None:
        raise click.UsageError("give --size (or --from, to copy a volume at its size)")
    with _working(output, f"making volume {name}..."):
        made = rt.client.create_volume(
            name,
            size=size,
            public=public,
            description=description,
            source=source,
            cloud=cloud,
        )
    if output == "json":
        emit_json(made)
        return
    _say(
        f"{made['ref']}: made, {format_size(made['size_bytes'])} on {made['cloud']}"
        + (", public" if made["public"] else "")
        + (f", a copy of {made['source']}" if made.get("source") else "")
    )


@group.command("list")
@click.option("--public", is_flag=True, help="every user's public volumes too")
@click.option("--all", "all_owners", is_flag=True, help="every user's volumes (administrators)")
@output_option
@pass_runtime
def list_volumes(rt: Runtime, public: bool, all_owners: bool, output: str) -> None:
    """Your volumes (with --public, the public volumes of every user too)."""
    views = rt.client.volumes(public=public, all_owners=all_owners)
    if output == "json":
        emit_json(views)
    elif views:
        table(
            None,
            ("VOLUME", "SIZE", "STATE", "ATTACHED TO", "ACCESS", "CLOUD", "AGE"),
            (_row(v) for v in views),
        )
    else:
        err.print(
            "No volumes. Make one with `stratus volume create NAME --size 2GiB`.",
            markup=False,
            highlight=False,
        )


@group.command("show")
@click.argument("ref", metavar="NAME")
@output_option
@pass_runtime
def show(rt: Runtime, ref: str, output: str) -> None:
    """Everything known about volume NAME (NAME, OWNER/NAME or its id)."""
    view = rt.client.volume(ref)
    if output == "json":
        emit_json(view)
        return
    shown = {
        "ref": view["ref"],
        "id": view["id"],
        "size": format_size(view["size_bytes"]),
        "state": view["state"] + (f": {view['error']}" if view.get("error") else ""),
        "access": _access(view),
        "cloud": view["cloud"],
        "description": view["description"],
        "source": view.get("source"),
        "run": view.get("run_id"),
        "attached to": "\n".join(attachment(a) for a in view["attachments"]) or "nothing",
        "created": view["created_at"],
    }
    table(None, ("", ""), ((k, v) for k, v in shown.items() if v not in (None, "")))


@group.command("delete")
@click.argument("ref", metavar="NAME")
@output_option
@pass_runtime
def delete(rt: Runtime, ref: str, output: str) -> None:
    """Delete volume NAME and its snapshots (refused while it is attached anywhere)."""
    with _working(output, f"deleting volume {ref}..."):
        gone = rt.client.delete_volume(ref)
    if output == "json":
        emit_json(gone)
    else:
        _say(f"{gone['ref']}: deleted ({format_size(gone['size_bytes'])} freed)")


@group.command("attach")
@click.argument("ref", metavar="NAME")
@click.argument("instance")
@click.option("--path", help="where it is mounted in the instance  [default: /mnt/NAME]")
@click.option("--read-only", is_flag=True, help="mounted read-only (another user's: always)")
@output_option
@pass_runtime
def attach(
    rt: Runtime, ref: str, instance: str, path: str | None, read_only: bool, output: str
) -> None:
    """Attach volume NAME to running INSTANCE: it is mounted when this returns."""
    with _working(output, f"attaching {ref} to {instance}..."):
        view = rt.client.attach_volume(ref, instance, path=path, read_only=read_only)
    if output == "json":
        emit_json(view)
        return
    found = _attached_to(view, instance)
    where = attachment(found) if found else instance
    _say(f"{view['ref']}: attached to {where}")


@group.command("detach")
@click.argument("ref", metavar="NAME")
@click.argument("instance")
@output_option
@pass_runtime
def detach(rt: Runtime, ref: str, instance: str, output: str) -> None:
    """Detach volume NAME from INSTANCE (unmounted when this returns; its files are kept)."""
    with _working(output, f"detaching {ref} from {instance}..."):
        view = rt.client.detach_volume(ref, instance)
    if output == "json":
        emit_json(view)
        return
    left = len(view["attachments"])
    still = f"; still attached to {left} other instance(s)" if left else ""
    _say(f"{view['ref']}: detached from {instance}{still}")


@group.command("resize")
@click.argument("ref", metavar="NAME")
@click.option("--size", required=True, help="the new size: 4GiB, 500MiB...")
@output_option
@pass_runtime
def resize(rt: Runtime, ref: str, size: str, output: str) -> None:
    """Set volume NAME's size, attached or not (it can shrink down to what its files take)."""
    with _working(output, f"resizing {ref}..."):
        view = rt.client.resize_volume(ref, size)
    if output == "json":
        emit_json(view)
    else:
        _say(f"{view['ref']}: {format_size(view['size_bytes'])} now")


def attachment(found: dict[str, Any]) -> str:
    """``inst-1234 at /mnt/data (rw)``."""
    mode = "ro" if found["read_only"] else "rw"
    pending = "" if found.get("state", "attached") == "attached" else f", {found['state']}"
    return f"{found['instance']} at {found['path']} ({mode}{pending})"


def mounted(found: dict[str, Any]) -> str:
    """A volume as an instance shows it: ``alice/data at /mnt/data (rw)``."""
    return f"{found['ref']} at {found['path']} ({'ro' if found['read_only'] else 'rw'})"


def mount_of(given: str) -> dict[str, Any]:
    """``--volume NAME[:PATH][:ro]`` as the API takes it (``rw`` may be said too)."""
    ref, *rest = given.split(":")
    path: str | None = None
    read_only = False
    for n, part in enumerate(rest):
        if part in ("ro", "rw") and n == len(rest) - 1:
            read_only = part == "ro"
        elif part.startswith("/") and n == 0:
            path = part
        else:
            raise Invalid(
                f"--volume {given[:120]!r}: write NAME, NAME:PATH, NAME:ro or NAME:PATH:ro "
                "(PATH absolute, such as /mnt/data)"
            )
    if not ref:
        raise Invalid(f"--volume {given[:120]!r}: name the volume first (NAME[:PATH][:ro])")
    return {"volume": ref, "path": path, "read_only": read_only}


def _attached_to(view: dict[str, Any], instance: str) -> dict[str, Any] | None:
    attachments: list[dict[str, Any]] = view["attachments"]
    for found in attachments:
        if instance in (found["instance"], found.get("instance_name")):
            return found
    # An id prefix: the one attachment whose id starts with it.
    prefixed = [a for a in attachments if a["instance"].startswith(instance)]
    return prefixed[0] if len(prefixed) == 1 else None


def _row(view: dict[str, Any]) -> list[Any]:
    state = view["state"] + (f": {view['error']}" if view.get("error") else "")
    attached = "\n".join(attachment(a) for a in view["attachments"]) or "-"
    return [
        view["ref"],
        format_size(view["size_bytes"]),
        state,
        attached,
        _access(view),
        view["cloud"],
        age(view["created_at"]),
    ]


def _access(view: dict[str, Any]) -> str:
    return "public" if view["public"] else "private"


def _say(line: str) -> None:
    out.print(plain(line))


@contextmanager
def _working(output: str, what: str) -> Iterator[None]:
    """A spinner on stderr while the server works (none for -o json)."""
    status = nullcontext() if output == "json" else err.status(what, spinner="dots")
    with status:
        yield


def _add_snapshot_commands() -> None:
    from stratuslab.cli.volume_snapshots import snapshot

    group.add_command(snapshot)


_add_snapshot_commands()
