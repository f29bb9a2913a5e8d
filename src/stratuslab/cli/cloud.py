"""`stratus cloud`: the site's clouds. `init` and `status` set up and inspect the local cloud on
this host; add, list, show, set, disable, enable and remove go through the server
(`cli/cloud_registry.py`)."""

from __future__ import annotations

from typing import Any

import click

from stratuslab.cli.output import emit_json, err, out, output_option, progress_lines, table
from stratuslab.cli.passwords import read_password
from stratuslab.cli.runtime import Runtime, pass_runtime


@click.group(name="cloud", no_args_is_help=True)
def group() -> None:
    """Set up the local cloud (LXD) and manage the site's clouds."""


@group.command("init")
@click.option("--subnet", help="bridge gateway address and prefix, e.g. 10.210.0.1/24")
@click.option("--bridge", help="name of the LXD bridge")
@click.option("--pool", help="name of the btrfs storage pool")
@click.option("--pool-size", type=int, help="size of the loop-backed pool, GiB")
@click.option(
    "--admin-password-stdin",
    is_flag=True,
    help="the first administrator's password, from stdin (else a random one is printed once)",
)
@output_option
@pass_runtime
def init(
    rt: Runtime,
    subnet: str | None,
    bridge: str | None,
    pool: str | None,
    pool_size: int | None,
    admin_password_stdin: bool,
    output: str,
) -> None:
    """Start LXD if needed, create the bridge, storage pool and profile, record the local cloud,
    and make the first administrator (setting `user`) when there is none.

    Running it again changes nothing unless the settings changed.
    """
    from stratuslab.cloud import clouds, site

    overrides: dict[str, Any] = {
        key: value
        for key, value in (
            ("lxd_subnet", subnet),
            ("lxd_bridge", bridge),
            ("lxd_pool", pool),
            ("lxd_pool_size_gib", pool_size),
        )
        if value is not None
    }
    settings = rt.settings.with_overrides(**overrides) if overrides else rt.settings
    say = progress_lines(output == "json")
    report = site.initialise(settings, on_step=lambda what, outcome: say(f"{what}: {outcome}"))
    recorded = clouds.record(
        rt.engine,
        name=clouds.DEFAULT_CLOUD,
        connector="lxd",
        options=site.connector_options(settings),
    )
    say(f"cloud {clouds.DEFAULT_CLOUD!r} in the store: {recorded}")
    report.steps.append((f"cloud {clouds.DEFAULT_CLOUD}", recorded))
    admin, password = _first_admin(rt, from_stdin=admin_password_stdin)
    say(f"administrator: {admin}")
    report.steps.append(("administrator", admin))
    changed = report.changed or recorded != "present" or admin.startswith("created")
    if output == "json":
        made = {"name": rt.settings.user, "password": password} if password else None
        emit_json({"changed": changed, "steps": dict(report.steps), "administrator": made})
        return
    out.print("The local cloud is ready." + ("" if changed else " Nothing needed changing."))
    if password:
        out.print(
            f"The administrator {rt.settings.user} has the password: {password}",
            markup=False,
            highlight=False,
        )
        err.print(
            "It is shown only now: it will not be shown again. Change it with "
            "`stratus user passwd`.",
            markup=False,
            highlight=False,
        )


@group.command("status")
@output_option
@pass_runtime
def status(rt: Runtime, output: str) -> None:
    """Show the daemon, bridge, pool, images, instances and free capacity."""
    from stratuslab.cloud import site

    report = site.status(rt.settings)
    if output == "json":
        emit_json(report)
        return
    daemon, bridge, pool, cap = (
        report["daemon"],
        report["bridge"],
        report["pool"],
        report["capacity"],
    )
    instances = report["instances"]
    rows = [
        ("daemon", f"LXD {daemon['version']} on {daemon['endpoint']}"),
        (
            "bridge",
            _present(
                bridge,
                f"{bridge['name']} {bridge.get('ipv4.address')}, NAT {bridge.get('ipv4.nat')}",
            ),
        ),
        (
            "pool",
            _present(
                pool,
                f"{pool['name']} ({pool.get('driver')}), "
                f"{pool.get('free_mb')} of {pool.get('size_mb')} MiB free",
            ),
        ),
        ("profile", _present(report["profile"], report["profile"]["name"])),
        (
            "site CA",
            f"SHA-256 {report['site_ca']['sha256']}"
            if report["site_ca"]["present"]
            else "missing (run `stratus cloud init`)",
        ),
        (
            "images",
            ", ".join(a for i in report["images"] for a in i["aliases"])
            or "none: stratus image build debian-12",
        ),
        (
            "instances",
            f"{instances['total']} ({instances['stratuslab']} made by StratusLab) "
            + " ".join(f"{k.lower()} {v}" for k, v in sorted(instances["by_status"].items())),
        ),
        (
            "capacity",
            f"{cap['cpus']} CPUs, "
            f"{cap['memory_free_mb']} of {cap['memory_total_mb']} MiB memory free, "
            f"{cap['disk_free_mb']} MiB disk free",
        ),
    ]
    table(None, ("", ""), rows)


def _first_admin(rt: Runtime, *, from_stdin: bool) -> tuple[str, str | None]:
    """Make the user named by the setting `user` an administrator if there is none yet: what
    was done, and the password when it was made up here (to be printed, once)."""
    import secrets

    from stratuslab.accounts.users import Accounts
    from stratuslab.errors import Conflict, Invalid
    from stratuslab.principal import SERVER

    accounts = Accounts(rt.engine)
    if accounts.any_admin():
        return ("present (the password given was not used)" if from_stdin else "present"), None
    name = rt.settings.user
    given = read_password(stdin=True, confirm=False) if from_stdin else None
    password = given or secrets.token_urlsafe(18)
    try:
        accounts.add_user(name, caller=SERVER, admin=True, password=password)
    except Conflict:
        return (
            f"none: the user {name} exists and is not one; "
            "make one with `stratus user add NAME --admin` (the site token may)",
            None,
        )
    except Invalid as exc:
        if given is not None:
            raise
        return f"none: {exc.message}; make one with `stratus user add NAME --admin`", None
    return f"created {name}", None if given else password


def _present(part: dict[str, Any], text: str) -> str:
    return text if part.get("present") else f"{part['name']}: missing (run `stratus cloud init`)"


def _add_registry_commands() -> None:
    from stratuslab.cli.cloud_registry import COMMANDS

    for command in COMMANDS:
        group.add_command(command)


_add_registry_commands()
