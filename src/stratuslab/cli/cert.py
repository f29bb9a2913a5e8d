"""`stratus cert`: the X.509 certificate DNs that log a user in over TLS."""

from __future__ import annotations

from pathlib import Path

import click

from stratuslab.cli.output import age, emit_json, out, output_option, table
from stratuslab.cli.runtime import Runtime, pass_runtime
from stratuslab.errors import Invalid


@click.group(name="cert", no_args_is_help=True)
def group() -> None:
    """Register the certificate you hold (a grid certificate's DN) to log in with it."""


@group.command("add")
@click.argument("dn", required=False)
@click.option(
    "--file",
    "pem_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="read the DN from this certificate (PEM; never give the key)",
)
@click.option("--user", "user", help="for this user (administrators only)")
@output_option
@pass_runtime
def add(rt: Runtime, dn: str | None, pem_file: Path | None, user: str | None, output: str) -> None:
    """Register DN (/DC=org/O=Grid/CN=Alice, or RFC 4514's CN=Alice,O=Grid,DC=org) or the
    subject of the certificate in --file."""
    if (dn is None) == (pem_file is None):
        raise Invalid("give a DN or --file CERT.pem, one of the two")
    body: dict[str, str] = {"dn": dn} if dn is not None else {"pem": _pem(pem_file)}
    if user:
        body["user"] = user
    found = rt.client.request("POST", "/api/certificates", json_body=body)
    if output == "json":
        emit_json(found)
    else:
        out.print(f"registered for {found['user']}: {found['dn']}", markup=False, highlight=False)


@group.command("list")
@click.option("--user", "user", help="this user's (administrators: anyone's)")
@output_option
@pass_runtime
def list_certificates(rt: Runtime, user: str | None, output: str) -> None:
    """The DNs registered (your own; an administrator sees everyone's)."""
    found = rt.client.request("GET", "/api/certificates", params={"user": user} if user else None)
    if output == "json":
        emit_json(found)
        return
    table(
        None,
        ("USER", "DN", "REGISTERED"),
        [(c["user"], c["dn"], age(c["created_at"])) for c in found],
    )


@group.command("remove")
@click.argument("dn")
@pass_runtime
def remove(rt: Runtime, dn: str) -> None:
    """Stop DN from logging anybody in."""
    rt.client.request("DELETE", "/api/certificates", params={"dn": dn})
    out.print(f"removed: {dn}", markup=False, highlight=False)


def _pem(path: Path | None) -> str:
    assert path is not None
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise Invalid(f"{path}: cannot read the certificate: {exc}") from None
    if "PRIVATE KEY" in text:
        raise Invalid(f"{path} holds a private key: give the certificate alone")
    return text
