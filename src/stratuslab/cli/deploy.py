"""`stratus deploy`: deploy an application, watch it, and say how it ended.

Exit codes are what a CI job needs: 0 when the run ends well (Done, or Ready with its
instances kept), 1 when it was aborted (the reason is printed), 2 when it timed out.
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from stratuslab.cli.bake import bake_application, baked_lines
from stratuslab.cli.output import emit_json, err, escaped, out, output_option
from stratuslab.cli.runtime import LocalClient, Runtime, pass_runtime
from stratuslab.deploy.agent.protocol import FINAL_STATES
from stratuslab.errors import EXIT_RUN_ABORTED, EXIT_RUN_TIMEOUT, BackendError, Invalid

KEEP = ("always", "on-success", "on-error", "never")
RECONNECT_FOR = 300.0  # seconds to wait for a server that went away mid-run


@click.command("deploy")
@click.argument("target")
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="NODE:NAME=VALUE",
    help="an input of a node (web:greeting=hi) or a run global (ss:site=lab); repeatable",
)
@click.option(
    "--multiplicity", "multiplicities", multiple=True, metavar="NODE=N", help="instances of a node"
)
@click.option(
    "--keep-running",
    type=click.Choice(KEEP),
    default="on-success",
    show_default=True,
    help="when to keep the instances once the run has done its work",
)
@click.option("--tags", default="", help="comma-separated tags")
@click.option(
    "--wait",
    "wait_minutes",
    type=float,
    default=60.0,
    show_default=True,
    help="abort the run if it is not Ready within this many minutes (exit 2)",
)
@click.option(
    "--mutable", is_flag=True, help="scalable: add and remove instances later (stays Ready)"
)
@click.option(
    "--get-reports",
    "reports_dir",
    type=click.Path(path_type=Path),
    help="download and unpack every node's report into this directory",
)
@click.option(
    "--junit",
    "junit_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="write the run as JUnit XML to this file once it ends, whatever its end",
)
@click.option("--bake", is_flag=True, help="bake every node that lacks a baked image first")
@click.option(
    "--pristine", is_flag=True, help="start every node from its pristine image, baked or not"
)
@output_option
@pass_runtime
def deploy(
    rt: Runtime,
    target: str,
    params: tuple[str, ...],
    multiplicities: tuple[str, ...],
    keep_running: str,
    tags: str,
    wait_minutes: float,
    mutable: bool,
    reports_dir: Path | None,
    junit_file: Path | None,
    bake: bool,
    pristine: bool,
    output: str,
) -> None:
    """Deploy TARGET: a module directory or file in this repository (pushed first), or a module
    already on the server (path or path/N). Shows each node's state live and ends with a summary.
    """
    quiet = output == "json"
    given = dict(_pair(p, ":", "=", "--param NODE:NAME=VALUE") for p in params)
    counts = {
        node: _count(n)
        for node, n in (_pair(m, "=", None, "--multiplicity NODE=N") for m in multiplicities)
    }
    if bake and pristine:
        raise Invalid("--bake and --pristine: choose one")
    module = _push_if_local(rt, target, quiet=quiet)
    started = time.monotonic()
    if bake:
        bake_application(rt, module, quiet=quiet)
    run = rt.client.create_run(
        {
            "module": module,
            "params": given,
            "multiplicity": counts,
            "keep_running": keep_running,
            "tags": [t for t in tags.split(",") if t],
            "timeout_s": max(int(wait_minutes * 60), 1),
            "mutable": mutable,
            "pristine": pristine,
        }
    )
    if not quiet:
        err.print(f"run [bold]{run['id']}[/bold] of {run['module']} started")
        for line in baked_lines(run):
            err.print(escaped(line), highlight=False)
    follow(rt, run["id"], quiet=quiet)
    final = rt.client.run(run["id"])
    if reports_dir is not None:
        _download_reports(rt, final["id"], reports_dir, quiet=quiet)
    if junit_file is not None:
        write_junit(rt, final["id"], junit_file, quiet=quiet)
    if isinstance(rt.client, LocalClient) and rt.client.started_server:
        rt.client.exit_when_idle()  # the server this command started goes when it has no more to do
    final["seconds"] = round(time.monotonic() - started, 1)
    if quiet:
        emit_json(final)
    else:
        _summary(final)
    code = _exit_code(final)
    if code:
        raise click.exceptions.Exit(code)


def follow(rt: Runtime, run_id: str, *, quiet: bool, after: int = 0) -> None:
    """Print the run's events as they happen, until it has settled; in a terminal, with a live
    table of what every node instance is doing. A server that goes away (restarted, or killed
    and started again) is waited for, and the stream picks up after the last event seen."""
    if quiet or not err.is_terminal:
        stream_events(
            rt, run_id, lambda e: None if quiet else _print_event(e), quiet=quiet, after=after
        )
        return
    from rich.live import Live

    from stratuslab.cli.board import Board

    board = Board(rt.client.run(run_id))
    with Live(board, console=err, refresh_per_second=8) as live:

        def show(event: dict[str, Any]) -> None:
            board.apply(event)
            _print_event(event, console=live.console)
            live.refresh()

        stream_events(rt, run_id, show, after=after)


def stream_events(
    rt: Runtime,
    run_id: str,
    on_event: Callable[[dict[str, Any]], None],
    *,
    quiet: bool = False,
    after: int = 0,
    until_final: bool = False,
) -> None:
    """Hand each of the run's events to ``on_event`` as they happen, until the run has
    settled (or ended, with ``until_final``). A watch the server ends (it lasts an hour at
    most) is asked again; a server that goes away is waited for, and the stream picks up
    after the last event seen."""
    last = after
    lost_since: float | None = None
    while True:
        try:
            for event in rt.client.watch_run(run_id, after=last):
                last, lost_since = event["id"], None
                on_event(event)
            run = rt.client.run(run_id)
            if run["state"] in FINAL_STATES or (settled(run) and not until_final):
                return
            if until_final and settled(run):
                time.sleep(0.2)  # a kept run in Ready settles the watch: poll for its end
        except BackendError as exc:
            if lost_since is None:
                lost_since = time.monotonic()
                if not quiet:
                    err.print(f"[yellow]lost the server ({exc.message}); waiting for it[/yellow]")
            if time.monotonic() - lost_since > RECONNECT_FOR:
                raise
            time.sleep(1)


def settled(run: dict[str, Any]) -> bool:
    """Ended, or waiting in Ready with every node done (its instances kept)."""
    if run["state"] in FINAL_STATES:
        return True
    # Who still takes part, as the server's barrier counts them: a node instance whose
    # machine never started (an aborted run keeping its instances) will complete nothing.
    working = [
        n
        for n in run["nodes"]
        if not n["removed"] and not n["lost"] and n.get("provisioning") != "failed"
    ]
    if run["state"] != "Ready" or run.get("scaling"):  # a scale action under way goes round again
        return False
    return all(n["completed"] == "Ready" for n in working)


def _print_event(event: dict[str, Any], *, console: Any = None) -> None:
    from rich.markup import escape

    who = f"{event['node_instance']}: " if event.get("node_instance") else ""
    style = {"abort": "bold red", "lost": "red", "provisioning-failed": "red", "state": "bold"}.get(
        event["kind"]
    )
    text = escape(f"{who}{event['message']}")
    clock = f"[dim]{event['at'][11:19]}[/dim]"
    (console or err).print(
        f"{clock} [{style}]{text}[/{style}]" if style else f"{clock} {text}", highlight=False
    )


def _summary(run: dict[str, Any]) -> None:
    from stratuslab.cli.output import table

    state = run["state"]
    if run["timed_out"]:
        headline = f"[bold red]{state}: timed out[/bold red] ({escaped(run['abort_reason'])})"
    elif run["abort_reason"]:
        headline = f"[bold red]{state}[/bold red]: {escaped(run['abort_reason'])}"
    else:
        headline = f"[bold green]{state}[/bold green]"
    out.print(f"Run {run['id']} of {run['module']}: {headline} after {run['seconds']} s")
    if run.get("service_url"):
        out.print(f"  service: {escaped(run['service_url'])}")
    for line in baked_lines(run):
        out.print(f"  {escaped(line)}", highlight=False)
    rows = [
        (
            n["name"],
            "removed"
            if n["removed"]
            else "lost"
            if n["lost"]
            else n["completed"] or n["provisioning"],
            n["hostname"] or "",
            n["statecustom"] or "",
            n["abort"] or "",
        )
        for n in run["nodes"]
    ]
    table(None, ("NODE", "LAST COMPLETED", "ADDRESS", "STATUS", "ABORT"), rows)
    if state == "Ready":
        out.print(f"  instances kept: `stratus run terminate {run['id'][:8]}` tears them down")


def _exit_code(run: dict[str, Any]) -> int:
    if run["timed_out"]:
        return EXIT_RUN_TIMEOUT
    if run["abort_reason"] or run["state"] in ("Aborted", "Cancelled"):
        return EXIT_RUN_ABORTED
    return 0


def _push_if_local(rt: Runtime, target: str, *, quiet: bool) -> str:
    """A module in this repository is checked here and pushed (a new version only where it
    changed); anything else names a module on the server."""
    from stratuslab.deploy.tree import load_tree

    path = Path(target)
    if not (path.is_dir() or path.is_file() or path.with_suffix(".yaml").is_file()):
        return target
    root = Path.cwd()
    absolute = path.resolve()
    if not absolute.is_relative_to(root):
        root = absolute.parent
    relative = str(absolute.relative_to(root)).removesuffix(".yaml")
    texts = load_tree(root, relative)
    stored = rt.client.push_modules(
        [{"path": t.path, "file": t.file, "text": t.text} for t in texts], only_changed=True
    )
    application = next(m for m in stored if m["path"] == texts[0].path)
    if not quiet:
        err.print(
            f"pushed {len(stored)} module(s); "
            f"deploying {application['path']}/{application['version']}"
        )
    return f"{application['path']}/{application['version']}"


def write_junit(rt: Runtime, run_id: str, target: Path, *, quiet: bool) -> None:
    """The run's JUnit XML in ``target``, whole or not at all (written beside it, then moved
    in place, so that a CI tool never reads half of it)."""
    data = rt.client.run_junit(run_id)
    partial = target.with_name(f".{target.name}.part")
    try:
        partial.write_bytes(data)
        partial.replace(target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise Invalid(f"cannot write the JUnit report to {target}: {exc.strerror}") from None
    if not quiet:
        err.print(f"JUnit report in {escaped(str(target))}")


def _download_reports(rt: Runtime, run_id: str, folder: Path, *, quiet: bool) -> None:
    target = folder / run_id
    for report in rt.client.run_reports(run_id):
        data = rt.client.run_report(run_id, report["node_instance"])
        where = target / report["node_instance"]
        where.mkdir(parents=True, exist_ok=True)
        unpack(data, where)
        if not quiet:
            err.print(f"report of {report['node_instance']} in {where}")


def unpack(data: bytes, where: Path) -> None:
    """Unpack a report archive, refusing anything that would land outside ``where`` (an
    archive comes from a node, which is not to be trusted with the host's files). Written out
    because ``extractall(filter=...)`` needs Python 3.11.4 and Debian 12 has 3.11.2."""
    root = where.resolve()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member in archive.getmembers():
            target = (root / member.name).resolve()
            if not target.is_relative_to(root):
                raise Invalid(f"report archive entry {member.name!r} points outside {where}")
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                source = archive.extractfile(member)
                if source is not None:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(source.read())
            # links, devices and fifos are skipped: a report is made of plain files


def _pair(text: str, first: str, second: str | None, form: str) -> tuple[str, str]:
    separator = second or first
    left, found, right = text.partition(separator)
    if not found or not left or (second is not None and first not in left):
        raise Invalid(f"{text!r}: write it as {form}")
    return left, right


def _count(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise Invalid(f"multiplicity {text!r} is not a number") from None
