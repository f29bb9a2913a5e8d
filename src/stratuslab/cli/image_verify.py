"""`stratus image verify`: the site's trust policy on an image, without starting anything.

``stratus image verify IMAGE [--cloud C]`` asks the server (``GET /api/images/IMAGE/verify``)
about an image of a cloud. ``stratus image verify --file PATH --entry ENTRY.xml`` checks a
local image file against a signed Marketplace entry, here, with this host's settings: the
entry's signature first, then the file's size and checksums against the entry's, then the
site's policy with that entry. Either way the decision is shown with its rule and every
reason; the exit code is 0 when the image may start and 77 when it is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from stratuslab.cli.output import emit_json, err, out, output_option
from stratuslab.cli.runtime import Runtime, pass_runtime
from stratuslab.errors import Untrusted

_FILE = click.Path(exists=True, dir_okay=False, readable=True, path_type=Path)


@click.command("verify")
@click.argument("image", required=False)
@click.option("--cloud", default="local", show_default=True, help="the cloud the image is on")
@click.option("--file", "file", type=_FILE, help="a local image file, checked against --entry")
@click.option("--entry", type=_FILE, help="the signed Marketplace entry (XML) of --file")
@output_option
@pass_runtime
def verify(
    rt: Runtime,
    image: str | None,
    cloud: str,
    file: Path | None,
    entry: Path | None,
    output: str,
) -> None:
    """Show whether the site's policy lets IMAGE start, the rule that decides and why.

    Nothing is started. Exit code 0: it may start; 77: the site refuses it.
    """
    if (image is None) == (file is None):
        raise click.UsageError("give IMAGE, or --file PATH with --entry ENTRY.xml")
    if file is not None and entry is None:
        raise click.UsageError("--file needs --entry: the signed entry to check it against")
    if image is not None and entry is not None:
        raise click.UsageError("--entry goes with --file; an image of a cloud is looked up")
    if file is not None and entry is not None:
        answer = _file_decision(rt, file, entry, quiet=output == "json")
    else:
        assert image is not None
        answer = rt.client.verify_image(image, cloud)
    if output == "json":
        emit_json(answer)
    else:
        _show(answer)
    if not answer["allowed"]:
        raise click.exceptions.Exit(Untrusted.exit_code)


def _file_decision(rt: Runtime, file: Path, entry: Path, *, quiet: bool) -> dict[str, Any]:
    from stratuslab.cloud.marketplace.gate import ImagePolicy
    from stratuslab.cloud.marketplace.identifier import checksums
    from stratuslab.cloud.marketplace.policy import ImageFacts, refusal_message
    from stratuslab.cloud.marketplace.signing import verify as verify_signature
    from stratuslab.cloud.marketplace.xmlsafe import MAX_XML
    from stratuslab.errors import StratusError

    with entry.open("rb") as f:
        xml = f.read(MAX_XML + 1)
    try:
        endorsed = verify_signature(xml, trusted_cas=None)
    except StratusError as exc:
        raise type(exc)(f"{entry}: {exc.message}", hint=exc.hint) from None
    if not quiet:
        err.print(f"reading {file} ({file.stat().st_size / 2**20:.0f} MiB)", markup=False)
    with file.open("rb") as f:
        sums = checksums(f)
    facts = ImageFacts(
        cloud="file",
        name=file.name,
        fingerprint=sums.sha256,
        size_bytes=sums.size,
        checksums=sums,
    )
    decision = ImagePolicy.from_settings(rt.settings).decide(facts, [endorsed])
    return {
        "image": file.name,
        "file": str(file),
        "entry": str(entry),
        "fingerprint": sums.sha256,
        "size_bytes": sums.size,
        "checksums": sums.by_algorithm(),
        **decision.to_dict(),
        "message": None if decision.allowed else refusal_message(file.name, "file", decision),
    }


def _show(answer: dict[str, Any]) -> None:
    where = (
        f"file {answer['file']}" if "file" in answer else f"{answer['image']} on {answer['cloud']}"
    )
    verdict = "may start" if answer["allowed"] else "refused"
    lines = [
        f"{where}: {verdict} (rule {answer['rule']})",
        f"  sha256      {answer['fingerprint']}",
        f"  size        {answer['size_bytes']} bytes",
        "  identifier  "
        + (answer["identifier"] or "unknown: no Marketplace entry names these bytes"),
        f"  endorser    {answer['endorser'] or 'none accepted'}",
        "  reasons:",
        *(f"    - {reason}" for reason in answer["reasons"]),
    ]
    for line in lines:  # what endorsers and entries say is never read as markup
        out.print(line, markup=False, highlight=False)
