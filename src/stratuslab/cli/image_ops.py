"""`stratus image import` and `stratus image delete`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from stratuslab.cli.output import emit_json, err, out, output_option
from stratuslab.cli.runtime import Runtime, pass_runtime
from stratuslab.errors import BackendError, CommandFailed, Invalid, TooLarge, by_name

MAX_ENTRY = 1 << 20  # bytes of a signed entry (the server's bound too)


@click.command("import")
@click.argument("source")
@click.option(
    "--entry",
    "entry",
    help="the image's signed Marketplace entry: a file, or an identifier this server serves",
)
@click.option("--name", help="the image's name (<you>/NAME; default: from the file name)")
@click.option("--cloud", default="local", show_default=True, help="the cloud to import into")
@click.option("--public", is_flag=True, help="let every user start it (default: yours alone)")
@click.option("--description", default="", help="what the image holds")
@output_option
@pass_runtime
def import_image(
    rt: Runtime,
    source: str,
    entry: str | None,
    name: str | None,
    cloud: str,
    public: bool,
    description: str,
    output: str,
) -> None:
    """Import the image at SOURCE (an http(s) URL the server downloads, or for an
    administrator a file on the server's host), checked against its entry first.

    A download cut off is resumed, by this command and by the next one for the same URL.
    """
    body: dict[str, Any] = {
        "source": source if "://" in source else str(Path(source).resolve()),
        "name": name,
        "cloud": cloud,
        "public": public,
        "description": description,
    }
    if entry is not None:
        body.update(_entry(entry))
    events = rt.client.import_image(body)
    if output == "json":
        emit_json(_last(events, lambda _event: None))
        return
    made = _with_bar(events) if err.is_terminal else _last(events, _lines())
    stripped = made.get("stripped") or []
    out.print(
        f"{made['name']}: imported in {made['seconds']:.1f} s, fingerprint "
        f"{made['fingerprint'][:12]}, {made['size_bytes'] / 2**20:.0f} MiB"
        + (f", resumed from byte {made['resumed_from']}" if made.get("resumed_from") else "")
        + (f"; removed the server's properties {', '.join(stripped)}" if stripped else ""),
        highlight=False,
        markup=False,
    )


@click.command("delete")
@click.argument("name")
@click.option("--cloud", default="local", show_default=True, help="the cloud to delete it from")
@click.option("--site", is_flag=True, help="the site's image NAME (administrators only)")
@output_option
@pass_runtime
def delete(rt: Runtime, name: str, cloud: str, site: bool, output: str) -> None:
    """Delete image NAME: yours (NAME or <you>/NAME), any user's for an administrator, or
    with --site the site's. Instances started from it are not affected."""
    gone = rt.client.delete_image(name, cloud=cloud, site=site)
    if output == "json":
        emit_json(gone)
    else:
        out.print(f"{gone['name']} ({gone['fingerprint'][:12]}) deleted from {cloud}", markup=False)


def _entry(given: str) -> dict[str, Any]:
    from stratuslab.cloud.marketplace.identifier import IDENTIFIER_RE

    path = Path(given)
    if path.is_file():
        if path.stat().st_size > MAX_ENTRY:
            raise TooLarge(f"--entry {given}: an entry is at most {MAX_ENTRY} bytes")
        data = path.read_bytes()
    elif IDENTIFIER_RE.fullmatch(given):
        # The server checks the import against its own Marketplace's entry of it.
        return {"identifier": given}
    else:
        raise Invalid(f"--entry {given[:200]!r}: neither a file nor a Marketplace identifier")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid("--entry: the entry is not UTF-8 XML") from None
    return {"entry": text}


def _last(events: Any, show: Any) -> dict[str, Any]:
    for event in events:
        if event["what"] == "done":
            made: dict[str, Any] = event["image"]
            return made
        if event["what"] == "error":
            error = event["error"]
            kind = by_name(error.get("type", ""))
            if issubclass(kind, CommandFailed):  # its constructor wants the command: not sent
                kind = BackendError
            raise kind(error.get("message", "error"), hint=error.get("hint"))
        show(event)
    raise BackendError("the server ended the import's stream without saying how it went")


def _lines() -> Any:
    last = [""]

    def show(event: dict[str, Any]) -> None:
        if event["stage"] != last[0]:
            err.print(f"{event['stage']}...", highlight=False, markup=False)
        last[0] = event["stage"]

    return show


def _with_bar(events: Any) -> dict[str, Any]:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn("{task.description:<9}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task("download", total=None)

        def show(event: dict[str, Any]) -> None:
            bar.update(
                task, description=event["stage"], completed=event["done"], total=event["total"]
            )

        return _last(events, show)
