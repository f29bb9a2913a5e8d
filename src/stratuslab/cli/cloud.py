"""`stratus cloud`: the site administrator's view of the local cloud."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from stratuslab.cli.output import OutputFormat, OutputOption, emit_json, err, out, progress_lines, table
from stratuslab.cli.runtime import runtime

app = typer.Typer(help="Install and inspect the local cloud (LXD).", no_args_is_help=True)


@app.command("init")
def init(
    ctx: typer.Context,
    subnet: Annotated[str | None, typer.Option(help="bridge gateway address and prefix, e.g. 10.210.0.1/24")] = None,
    bridge: Annotated[str | None, typer.Option(help="name of the LXD bridge")] = None,
    pool: Annotated[str | None, typer.Option(help="name of the btrfs storage pool")] = None,
    pool_size: Annotated[int | None, typer.Option(help="size of the loop-backed pool, GiB")] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Start LXD if needed, create the bridge, storage pool and profile, record the local cloud.

    Running it again changes nothing unless the settings changed.
    """
    from stratuslab.cloud import clouds, site

    rt = runtime(ctx)
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
    say = progress_lines(output == OutputFormat.json)
    report = site.initialise(settings, on_step=lambda what, outcome: say(f"{what}: {outcome}"))
    recorded = clouds.record(
        rt.engine, name=clouds.DEFAULT_CLOUD, connector="lxd", options=site.connector_options(settings)
    )
    report.steps.append((f"cloud {clouds.DEFAULT_CLOUD!r} in the store", recorded))
    if output == OutputFormat.json:
        emit_json({"changed": report.changed or recorded != "present", "steps": dict(report.steps)})
        return
    table(None, ("component", "state"), report.steps)
    changed = report.changed or recorded != "present"
    out.print("The local cloud is ready." + ("" if changed else " Nothing needed changing."))


@app.command("status")
def status(ctx: typer.Context, output: OutputOption = OutputFormat.table) -> None:
    """Show the daemon, bridge, pool, images, instances and free capacity."""
    from stratuslab.cloud import site

    report = site.status(runtime(ctx).settings)
    if output == OutputFormat.json:
        emit_json(report)
        return
    daemon, bridge, pool, cap = report["daemon"], report["bridge"], report["pool"], report["capacity"]
    rows = [
        ("daemon", f"LXD {daemon['version']} on {daemon['endpoint']}"),
        ("bridge", _present(bridge, f"{bridge['name']} {bridge.get('ipv4.address')} NAT={bridge.get('ipv4.nat')}")),
        ("pool", _present(pool, f"{pool['name']} ({pool.get('driver')}), {pool.get('free_mb')} of {pool.get('size_mb')} MiB free")),
        ("profile", _present(report["profile"], report["profile"]["name"])),
        ("images", ", ".join(a for i in report["images"] for a in i["aliases"]) or "none (stratus image build debian-12)"),
        ("instances", f"{report['instances']['total']} ({report['instances']['stratuslab']} by StratusLab) "
         + " ".join(f"{k.lower()}={v}" for k, v in sorted(report["instances"]["by_status"].items()))),
        ("capacity", f"{cap['cpus']} CPUs, {cap['memory_free_mb']} of {cap['memory_total_mb']} MiB memory free, "
         f"{cap['disk_free_mb']} MiB disk free"),
    ]
    table(None, ("", ""), rows)


@app.command("list")
def list_clouds(ctx: typer.Context, output: OutputOption = OutputFormat.table) -> None:
    """The clouds recorded in the store."""
    from stratuslab.cloud import clouds

    found = clouds.all_clouds(runtime(ctx).engine)
    if output == OutputFormat.json:
        emit_json([{"name": c.name, "connector": c.connector, "options": c.options} for c in found])
        return
    if not found:
        err.print("No cloud is recorded yet: run `stratus cloud init`.")
        return
    table(None, ("NAME", "CONNECTOR", "OPTIONS"), ((c.name, c.connector, c.options) for c in found))


def _present(part: dict[str, Any], text: str) -> str:
    return text if part.get("present") else f"{part['name']}: missing (run `stratus cloud init`)"
