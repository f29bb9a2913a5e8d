"""`stratus marketplace`: signed entries about images, as StratusLab's Marketplace kept them.

``sign`` makes an entry of an image (a local file, or an image on a cloud) and endorses it with
your certificate and key (the key is read here and sent nowhere); ``upload`` gives it to the
server's Marketplace, which keeps every entry forever; ``list``, ``search`` and ``show`` read
them; ``deprecate`` endorses your latest entry of an image again, deprecated with a reason.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from stratuslab.cli.marketplace_sign import deprecate, sign, write_bytes
from stratuslab.cli.output import emit_json, err, out, output_option, table
from stratuslab.cli.runtime import Runtime, pass_runtime
from stratuslab.errors import TooLarge

MAX_XML = 1 << 20  # xmlsafe.MAX_XML: an entry is at most this many bytes


@click.group(name="marketplace", no_args_is_help=True)
def group() -> None:
    """Signed entries about images: sign, upload, list, search, show, deprecate."""


group.add_command(sign)
group.add_command(deprecate)


@group.command("upload")
@click.argument("path", metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True))
@output_option
@pass_runtime
def upload(rt: Runtime, path: str, output: str) -> None:
    """Upload the signed entry in FILE (- for standard input). The Marketplace keeps it
    forever, and refuses one not newer than your latest entry of the same image."""
    xml = read_entry(path)
    kept = rt.client.marketplace_upload(xml)
    if output == "json":
        emit_json(kept)
        return
    say_uploaded(kept)


def read_entry(path: str) -> bytes:
    if path == "-":
        data = sys.stdin.buffer.read(MAX_XML + 1)
    else:
        with Path(path).open("rb") as handle:
            data = handle.read(MAX_XML + 1)
    if len(data) > MAX_XML:
        raise TooLarge(f"{path}: a Marketplace entry is at most {MAX_XML} bytes")
    return data


def say_uploaded(kept: dict[str, Any]) -> None:
    endorser = kept["endorser"] or {}
    out.print(
        f"Uploaded {kept['identifier']} ({kept['title']}), endorsed by {endorser.get('email')}"
        f" at {endorser.get('created')}: {kept['href']}",
        markup=False,
        highlight=False,
    )


@group.command("list")
@click.option("--endorser", metavar="EMAIL", help="only entries endorsed by EMAIL")
@click.option("--os", "os_name", metavar="OS", help="only images of this os (e.g. debian)")
@click.option("--tag", help="only entries tagged so")
@click.option("--all", "include_all", is_flag=True, help="deprecated and expired entries too")
@click.option("--limit", type=click.IntRange(1, 500), default=100, show_default=True)
@output_option
@pass_runtime
def list_entries(
    rt: Runtime,
    endorser: str | None,
    os_name: str | None,
    tag: str | None,
    include_all: bool,
    limit: int,
    output: str,
) -> None:
    """Each endorser's latest entry of each image, newest first."""
    found = rt.client.marketplace_search(
        os=os_name, email=endorser, tag=tag, include_all=include_all, limit=limit
    )
    show_list(found, output, empty="No entries yet: `stratus marketplace sign IMAGE ...`.")


@group.command("search")
@click.argument("text")
@click.option("--all", "include_all", is_flag=True, help="deprecated and expired entries too")
@click.option("--limit", type=click.IntRange(1, 500), default=100, show_default=True)
@output_option
@pass_runtime
def search(rt: Runtime, text: str, include_all: bool, limit: int, output: str) -> None:
    """Entries whose title, description, os, creator or tags hold TEXT (any case), or whose
    identifier is TEXT."""
    found = rt.client.marketplace_search(text=text, include_all=include_all, limit=limit)
    show_list(found, output, empty=f"No entry matches {text!r}.")


def show_list(found: list[dict[str, Any]], output: str, *, empty: str) -> None:
    if output == "json":
        emit_json(found)
    elif not found:
        err.print(empty, markup=False, highlight=False)
    else:
        table(
            None,
            ("IDENTIFIER", "TITLE", "OS", "ENDORSER", "ENDORSED", "STATE"),
            (
                (
                    e["identifier"],
                    e["title"],
                    " ".join(p for p in (e["os"], e["os_version"], e["os_arch"]) if p),
                    (e["endorser"] or {}).get("email", ""),
                    str((e["endorser"] or {}).get("created", ""))[:10],
                    state(e),
                )
                for e in found
            ),
        )


def state(entry: dict[str, Any]) -> str:
    if entry["deprecated"]:
        return f"deprecated: {entry['deprecated']}"
    valid = str(entry["valid"])[:10]
    return f"expired {valid}" if entry["expired"] else f"valid until {valid}"


@group.command("show")
@click.argument("identifier", metavar="ID")
@click.option("--endorser", metavar="EMAIL", help="that endorser's latest entry only")
@click.option("--xml", "as_xml", is_flag=True, help="the signed XML, as uploaded")
@output_option
@pass_runtime
def show(rt: Runtime, identifier: str, endorser: str | None, as_xml: bool, output: str) -> None:
    """Every endorser's latest entry of image ID (or ENDORSER's). With --xml, the signed
    entry byte for byte, which anyone can verify (every endorser's: StratusLab's list)."""
    if as_xml:
        write_bytes(rt.client.marketplace_xml(identifier, email=endorser))
        return
    found = rt.client.marketplace_entries(identifier, email=endorser)
    if output == "json":
        emit_json(found if endorser is None else found[0])
        return
    out.print("\n\n".join(describe(e) for e in found), markup=False, highlight=False)


def describe(e: dict[str, Any]) -> str:
    who = e["endorser"] or {}
    sums = e["checksums"]
    lines = [
        f"{e['identifier']}  {e['title']}",
        f"  state        {state(e)}",
        f"  endorser     {who.get('email')} ({who.get('subject')})",
        f"  issuer       {who.get('issuer')}",
        f"  endorsed     {who.get('created')}; uploaded {e['uploaded_at']}",
        f"  image        {e['os']} {e['os_version']} {e['os_arch']}, {e['format']},"
        f" {e['bytes']} bytes",
        f"  created      {e['created']} by {e['creator']}; valid until {e['valid']}",
        f"  SHA-256      {sums['SHA-256']}",
        f"  SHA-1        {sums['SHA-1']}",
    ]
    optional = (
        ("tags", ", ".join(e["tags"])),
        ("locations", ", ".join(e["locations"])),
        ("replaces", e["replaces"]),
        ("replaced by", e["is_replaced_by"]),
        ("description", e["description"]),
    )
    lines.extend(f"  {label:<12} {value}" for label, value in optional if value)
    lines.append(f"  {'entry':<12} {e['href']}")
    return "\n".join(lines)
