"""`stratus apikey`: your API keys, for scripts and CI jobs. A key's secret is shown once, when
it is made; the server keeps only its SHA-256. Use it as ``STRATUS_TOKEN=<id>.<secret>`` (or
``Authorization: Bearer``, HTTP Basic, or SlipStream's ``session-template/api-key``)."""

from __future__ import annotations

import click

from stratuslab.cli.output import age, emit_json, err, out, output_option, table
from stratuslab.cli.runtime import Runtime, pass_runtime


@click.group(name="apikey", no_args_is_help=True)
def group() -> None:
    """Create, list and revoke your API keys."""


@group.command("create")
@click.option("--name", default="", help="what the key is for (e.g. the CI job using it)")
@click.option("--expires", "days", type=int, metavar="DAYS", help="it stops working after DAYS")
@output_option
@pass_runtime
def create(rt: Runtime, name: str, days: int | None, output: str) -> None:
    """Make a new key. Its secret is shown now and never again."""
    key = rt.client.create_apikey(name=name, expires_days=days)
    if output == "json":
        emit_json(key)
        return
    expires = key["expires_at"] or "never"
    out.print(f"Created {key['id']} (name {key['name']!r}, expires {expires}).", markup=False)
    out.print(f"token: {key['token']}", markup=False, highlight=False)  # one line, to copy whole
    err.print(
        "The token (the key's id, a dot and its secret) is shown only now: it will not be "
        "shown again. Keep it as you would a password; scripts send it as STRATUS_TOKEN.",
        markup=False,
        highlight=False,
    )


@group.command("list")
@click.option("--all", "all_owners", is_flag=True, help="every user's keys (administrators)")
@output_option
@pass_runtime
def list_keys(rt: Runtime, all_owners: bool, output: str) -> None:
    """Your keys (never their secrets)."""
    keys = rt.client.apikeys(all_owners=all_owners)
    if output == "json":
        emit_json(keys)
    elif not keys:
        err.print("No API keys. Make one with `stratus apikey create --name NAME`.")
    else:
        table(
            None,
            ("ID", "USER", "NAME", "STATE", "CREATED", "EXPIRES", "LAST USED"),
            (
                (
                    k["id"],
                    k["user"],
                    k["name"],
                    k["state"],
                    age(k["created_at"]),
                    k["expires_at"] or "never",
                    age(k["last_used_at"]) or "never",
                )
                for k in keys
            ),
        )


@group.command("revoke")
@click.argument("key_id", metavar="ID")
@output_option
@pass_runtime
def revoke(rt: Runtime, key_id: str, output: str) -> None:
    """Revoke the key ID (``credential/<hex>`` or the hex alone): it stops working at once."""
    key = rt.client.revoke_apikey(key_id)
    if output == "json":
        emit_json(key)
    else:
        out.print(f"Revoked {key['id']}.", markup=False, highlight=False)
