"""`stratus usage`: what instances ran, in instance-, vCPU- and memory-hours, for billing."""

from __future__ import annotations

from typing import Any

import click

from stratuslab.cli.output import emit_json, err, output_option, table
from stratuslab.cli.runtime import Runtime, pass_runtime


@click.command(name="usage")
@click.option("--since", help="ISO 8601 date or time (UTC when no zone); default: this month")
@click.option("--until", help="ISO 8601 date or time; default: now")
@click.option("--user", "user", help="another user's (administrators); default: yours")
@click.option("--all", "all_users", is_flag=True, help="every user's (administrators)")
@click.option(
    "--by",
    type=click.Choice(["user", "cloud", "run"]),
    default="user",
    show_default=True,
    help="one line per user, per cloud or per run",
)
@output_option
@pass_runtime
def usage(
    rt: Runtime,
    since: str | None,
    until: str | None,
    user: str | None,
    all_users: bool,
    by: str,
    output: str,
) -> None:
    """Instance-hours, vCPU-hours and memory GiB-hours (MiB / 1024 x hours) of your
    instances (or USER's, or with --all everybody's), each running interval clipped to
    [--since, --until). A stopped instance costs nothing. `-o json` is stable for billing
    scripts: numbers are numbers and the window is echoed.
    """
    if all_users and user:
        raise click.UsageError("--all or --user, not both")
    params = {"since": since, "until": until, "by": by, "user": user, "all": all_users or None}
    report: dict[str, Any] = rt.client.request("GET", "/api/usage", params=params)
    if output == "json":
        emit_json(report)
        return
    window = f"{report['since']} to {report['until']}"
    if not report["rows"]:
        err.print(f"No instance ran from {window}.", highlight=False)
        return
    label = {"user": "USER", "cloud": "CLOUD", "run": "RUN"}[by]
    rows: list[list[Any]] = [
        [
            row["run"] or "(no run)" if by == "run" else row[by],
            *([row["user"]] if by == "run" else []),
            f"{row['instance_hours']:.3f}",
            f"{row['vcpu_hours']:.3f}",
            f"{row['memory_gib_hours']:.3f}",
            row["intervals"],
        ]
        for row in report["rows"]
    ]
    total = report["total"]
    rows.append(
        [
            "total",
            *([""] if by == "run" else []),
            f"{total['instance_hours']:.3f}",
            f"{total['vcpu_hours']:.3f}",
            f"{total['memory_gib_hours']:.3f}",
            total["intervals"],
        ]
    )
    table(
        f"usage from {window}",
        (
            label,
            *(["USER"] if by == "run" else []),
            "INSTANCE-H",
            "VCPU-H",
            "MEMORY GIB-H",
            "INTERVALS",
        ),
        rows,
    )
