"""`stratus run`: the runs of deployments, their parameters, events, logs and reports."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from stratuslab.cli.output import age, emit_json, err, escaped, out, output_option, table
from stratuslab.cli.runtime import Runtime, pass_runtime


@click.group(name="run", no_args_is_help=True)
def group() -> None:
    """List, inspect and terminate deployment runs."""


@group.command("list")
@click.option("--active", is_flag=True, help="only runs that have not ended")
@click.option("--all", "all_owners", is_flag=True, help="every user's runs")
@click.option("-n", "--limit", type=int, default=20, show_default=True)
@output_option
@pass_runtime
def list_runs(rt: Runtime, active: bool, all_owners: bool, limit: int, output: str) -> None:
    """Your most recent runs."""
    runs = rt.client.runs(active=active, all_owners=all_owners, limit=limit)
    if output == "json":
        emit_json(runs)
    elif not runs:
        err.print("No runs. Deploy one with `stratus deploy examples/webapp`.")
    else:
        table(
            None,
            ("ID", "MODULE", "STATE", "AGE", "ABORT"),
            (
                (
                    r["id"][:8],
                    r["module"],
                    r["state"],
                    age(r["created_at"]),
                    r["abort_reason"] or "",
                )
                for r in runs
            ),
        )


@group.command("show")
@click.argument("run_id")
@output_option
@pass_runtime
def show(rt: Runtime, run_id: str, output: str) -> None:
    """A run and its node instances."""
    run = rt.client.run(run_id)
    if output == "json":
        emit_json(run)
        return
    out.print(
        f"Run {run['id']} of {run['module']}: [bold]{run['state']}[/bold] "
        f"(keep-running {run['keep_running']})"
    )
    if run["abort_reason"]:
        timed_out = " (timed out)" if run["timed_out"] else ""
        out.print(f"  abort: {escaped(run['abort_reason'])}{timed_out}")
    if run.get("service_url"):
        out.print(f"  service: {escaped(run['service_url'])}")
    from stratuslab.cli.bake import baked_lines

    for line in baked_lines(run):
        out.print(f"  {escaped(line)}", highlight=False)
    teardown = run.get("teardown")
    if teardown and run["state"] == "Finalizing":
        if teardown["retry_at"]:
            then = f"trying again at {teardown['retry_at'][11:19]}"
        else:
            then = f"gave up; `stratus run terminate {run['id'][:8]}` tries again, --force ends it"
        out.print(
            f"  teardown: {teardown['attempts']} attempt(s) failed: "
            f"{escaped(teardown['error'])}; {then}"
        )
    for line in placement_lines(run["nodes"]):
        out.print(f"  {escaped(line)}", highlight=False)
    table(
        None,
        ("NODE", "CLOUD", "PROVISIONING", "COMPLETED", "ADDRESS", "INSTANCE", "STATUS"),
        (
            (
                n["name"],
                n.get("cloud") or "",
                "removed" if n["removed"] else "lost" if n["lost"] else n["provisioning"],
                n["completed"] or "",
                n["hostname"] or "",
                n["instance_id"] or "",
                n["statecustom"] or "",
            )
            for n in run["nodes"]
        ),
    )
    mounted = [(n["name"], v) for n in run["nodes"] for v in n.get("volumes") or ()]
    if mounted:
        table(
            None,
            ("NODE", "VOLUME", "REF", "PATH", "MODE", "KIND", "STATE"),
            (
                (
                    name,
                    v["name"],
                    v["ref"],
                    v["path"],
                    "ro" if v["read_only"] else "rw",
                    "fresh" if v["fresh"] else "bound",
                    v["state"] or "not made",
                )
                for name, v in mounted
            ),
        )


@group.command("params")
@click.argument("run_id")
@click.option("--node", help="only this node or node instance (web, web.2)")
@click.option(
    "--show-secrets",
    is_flag=True,
    help="show the values of secret parameters (type: password) instead of ********",
)
@output_option
@pass_runtime
def params(rt: Runtime, run_id: str, node: str | None, show_secrets: bool, output: str) -> None:
    """The run's runtime parameters; secret ones are masked unless --show-secrets (the run's
    owner only)."""
    values = rt.client.run_params(run_id, show_secrets=show_secrets)
    if node:
        values = {
            k: v
            for k, v in values.items()
            if k.split(":", 1)[0] in (node,) or k.startswith(f"{node}.")
        }
    if output == "json":
        emit_json(values)
    else:
        table(None, ("KEY", "VALUE"), ((k, "" if v is None else v) for k, v in values.items()))


@group.command("events")
@click.argument("run_id")
@click.option("-f", "--follow", is_flag=True, help="keep printing events until the run settles")
@output_option
@pass_runtime
def events(rt: Runtime, run_id: str, follow: bool, output: str) -> None:
    """What happened to the run, in order: states, completions, aborts, provisioning."""

    def show(event: dict[str, Any]) -> None:
        if output == "json":
            emit_json(event)
            return
        who = f"{event['node_instance']}: " if event.get("node_instance") else ""
        out.print(
            escaped(f"{event['at'][:19]} {event['kind']:<18} {who}{event['message']}"),
            highlight=False,
        )

    if follow:
        from stratuslab.cli.deploy import stream_events

        stream_events(rt, rt.client.run(run_id)["id"], show, quiet=output == "json")
        return
    found = rt.client.run_events(run_id)
    if output == "json":
        emit_json(found)
        return
    for event in found:
        show(event)


@group.command("logs")
@click.argument("run_id")
@click.option("--node", help="only this node instance (web.2)")
@click.option("-f", "--follow", is_flag=True, help="keep printing lines until the run ends")
@pass_runtime
def logs(rt: Runtime, run_id: str, node: str | None, follow: bool) -> None:
    """What the recipes printed, as the nodes streamed it."""

    def show(line: dict[str, Any]) -> None:
        target = sys.stderr if line["stream"] == "stderr" else sys.stdout
        target.write(f"{line['node_instance']} {line['state']}/{line['recipe']}: {line['text']}\n")

    if not follow:
        for line in rt.client.run_logs(run_id, node=node):
            show(line)
        return
    run_id = rt.client.run(run_id)["id"]
    last = 0
    while True:  # one follow lasts at most an hour on the server: ask again until the end
        for line in rt.client.follow_run_logs(run_id, node=node, after=last):
            last = line["id"]
            show(line)
        if rt.client.run(run_id)["state"] in ("Done", "Aborted", "Cancelled"):
            return


@group.command("junit")
@click.argument("run_id")
@click.option(
    "-o",
    "--output-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="write it to this file rather than to standard output",
)
@pass_runtime
def junit(rt: Runtime, run_id: str, output_file: Path | None) -> None:
    """The run as JUnit XML: a test suite per node, a test case per recipe phase of each node
    instance, and the nodes' own JUnit report files."""
    if output_file is None:
        click.echo(rt.client.run_junit(run_id), nl=False)
        return
    from stratuslab.cli.deploy import write_junit

    write_junit(rt, rt.client.run(run_id)["id"], output_file, quiet=False)


@group.command("reports")
@click.argument("run_id")
@click.option(
    "--get",
    "folder",
    type=click.Path(path_type=Path),
    help="download and unpack them into this directory",
)
@output_option
@pass_runtime
def reports(rt: Runtime, run_id: str, folder: Path | None, output: str) -> None:
    """The reports the node instances sent (their logs and $SLIPSTREAM_REPORT_DIR)."""
    from stratuslab.cli.deploy import _download_reports

    found = rt.client.run_reports(run_id)
    if folder is not None:
        _download_reports(rt, run_id, folder, quiet=output == "json")
    if output == "json":
        emit_json(found)
    elif not found:
        err.print("No reports (yet).")
    else:
        table(
            None,
            ("NODE", "SIZE", "SENT"),
            ((r["node_instance"], f"{r['size']} B", age(r["uploaded_at"])) for r in found),
        )


@group.command("add")
@click.argument("run_id")
@click.argument("node")
@click.option("-n", "--count", type=int, default=1, show_default=True, help="how many to add")
@output_option
@pass_runtime
def add(rt: Runtime, run_id: str, node: str, count: int, output: str) -> None:
    """Add instances of NODE to a scalable run; the others run on-vm-add. Waits for Ready."""
    _scale(rt, run_id, output, lambda: rt.client.add_instances(run_id, node, count), "added")


@group.command("remove")
@click.argument("run_id")
@click.argument("node")
@click.argument("ids", nargs=-1, type=int, required=True)
@output_option
@pass_runtime
def remove(rt: Runtime, run_id: str, node: str, ids: tuple[int, ...], output: str) -> None:
    """Remove instances IDS of NODE from a scalable run; the others run on-vm-remove."""
    _scale(
        rt, run_id, output, lambda: rt.client.remove_instances(run_id, node, list(ids)), "removed"
    )


def _scale(
    rt: Runtime, run_id: str, output: str, action: Callable[[], list[str]], verb: str
) -> None:
    from stratuslab.cli.deploy import follow
    from stratuslab.errors import EXIT_RUN_ABORTED

    last = max((e["id"] for e in rt.client.run_events(run_id)), default=0)
    names = action()
    if output != "json":
        err.print(f"{verb} {', '.join(names)}")
    follow(rt, run_id, quiet=output == "json", after=last)
    run = rt.client.run(run_id)
    if output == "json":
        emit_json({verb: names, "run": run})
    else:
        aborted = f" ({run['abort_reason']})" if run["abort_reason"] else ""
        out.print(f"run {run['id'][:8]}: {run['state']}{aborted}")
    if run["abort_reason"]:
        raise click.exceptions.Exit(EXIT_RUN_ABORTED)


@group.command("terminate")
@click.argument("run_ids", nargs=-1, required=True)
@click.option(
    "--wait/--no-wait", default=True, show_default=True, help="wait until the run has ended"
)
@click.option(
    "--force",
    is_flag=True,
    help="end a run whose teardown gave up, leaving what is left among your instances",
)
@output_option
@pass_runtime
def terminate(rt: Runtime, run_ids: tuple[str, ...], wait: bool, force: bool, output: str) -> None:
    """Cancel runs that have not reached Ready; finalize the others (instances destroyed).
    A run whose teardown gave up tries again; with --force it ends at once."""
    from stratuslab.cli.deploy import stream_events

    ended = []
    for run_id in run_ids:
        run = rt.client.terminate_run(run_id, force=force)
        if wait:
            stream_events(rt, run["id"], lambda _event: None, quiet=True, until_final=True)
            run = rt.client.run(run["id"])
        ended.append(run)
        if output != "json":
            out.print(f"run {run['id'][:8]}: {run['state']}")
    if output == "json":
        emit_json(ended)


def placement_lines(nodes: list[dict[str, Any]]) -> list[str]:
    """Where the node instances went and why, one line per cloud and reason, when placement
    did more than keep every one on the first cloud (a burst, several clouds)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for n in nodes:
        if n.get("placement"):
            groups.setdefault((n.get("cloud") or "", n["placement"]), []).append(n["name"])
    if len({cloud for cloud, _ in groups}) < 2 and not any(
        reason.startswith("burst") for _, reason in groups
    ):
        return []
    return [
        f"placed: {', '.join(names)} on {cloud}: {reason}"
        for (cloud, reason), names in groups.items()
    ]
