"""`stratus instance`: start machines from images and work with them.

StratusLab users knew these as stratus-run-instance, stratus-describe-instance,
stratus-shutdown-instance, stratus-kill-instance and stratus-connect-instance.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from stratuslab.cli.output import OutputFormat, OutputOption, age, emit_json, err, out, progress_lines, table
from stratuslab.cli.runtime import runtime

if TYPE_CHECKING:
    from stratuslab.cloud.instances import InstanceView

app = typer.Typer(help="Start, list, stop, start again, kill and enter instances.", no_args_is_help=True)
Ref = Annotated[str, typer.Argument(help="instance id (or a unique prefix of it) or name", show_default=False)]
Refs = Annotated[list[str], typer.Argument(help="instance ids or names", show_default=False)]


@app.command("run")
def run(
    ctx: typer.Context,
    image: Annotated[str, typer.Argument(help="image name, e.g. debian-12 (see `stratus image list`)")],
    count: Annotated[int, typer.Option("-n", "--count", help="how many to start, in parallel")] = 1,
    cpu: Annotated[int | None, typer.Option("--cpu", help="CPU limit per instance")] = None,
    ram: Annotated[int | None, typer.Option("--ram", help="memory limit per instance, MiB")] = None,
    key: Annotated[Path | None, typer.Option("--key", help="public key file: ssh in as root with it")] = None,
    user_data: Annotated[
        Path | None, typer.Option("--user-data", help="script (#!) or #cloud-config run once at first boot")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="instance name (NAME-1..NAME-N with -n)")] = None,
    cloud: Annotated[str, typer.Option("--cloud", help="the cloud to start on")] = "local",
    output: OutputOption = OutputFormat.table,
) -> None:
    """Start instances from an image and wait until each is running with an address."""
    from stratuslab.cloud.context import read_ssh_keys, read_user_data
    from stratuslab.cloud.instances import RunRequest

    request = RunRequest(
        image=image,
        count=count,
        cpu=cpu,
        ram_mb=ram,
        ssh_keys=read_ssh_keys(key) if key else (),
        user_data=read_user_data(user_data) if user_data else None,
        name=name,
        cloud=cloud,
    )
    say = progress_lines(output == OutputFormat.json)
    lock = threading.Lock()

    def event(view: InstanceView, what: str) -> None:
        with lock:
            detail = f" at {view.address}" if what == "running" and view.address else ""
            reason = f": {view.error}" if what == "failed" else ""
            say(f"{view.id} {view.name}: {what}{detail}{reason}")

    views = runtime(ctx).instances.run(request, on_event=event)
    failed = [v for v in views if v.state == "gone"]
    if output == OutputFormat.json:
        emit_json([v.to_dict() for v in views])
    else:
        _table(views)
        running = len(views) - len(failed)
        out.print(f"{running} of {len(views)} running." + (" Failures were cleaned up." if failed else ""))
    if failed:
        raise typer.Exit(70)


@app.command("list")
def list_instances(
    ctx: typer.Context,
    all_owners: Annotated[bool, typer.Option("--all", help="every user's instances")] = False,
    gone: Annotated[bool, typer.Option("--gone", help="include instances that are gone")] = False,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Your instances, checked against the cloud (vanished ones show as gone)."""
    views = runtime(ctx).instances.list(all_owners=all_owners, include_gone=gone)
    if output == OutputFormat.json:
        emit_json([v.to_dict() for v in views])
    elif views:
        _table(views, owners=all_owners)
    else:
        err.print("No instances. Start one with `stratus instance run debian-12`.")


@app.command("show")
def show(ctx: typer.Context, ref: Ref, output: OutputOption = OutputFormat.table) -> None:
    """Everything known about one instance."""
    view = runtime(ctx).instances.get(ref)
    if output == OutputFormat.json:
        emit_json(view.to_dict())
        return
    data = view.to_dict()
    data["addresses"] = ", ".join(view.addresses)
    table(None, ("", ""), ((k, v) for k, v in data.items() if v not in (None, "", [])))


@app.command("stop")
def stop(ctx: typer.Context, refs: Refs, output: OutputOption = OutputFormat.table) -> None:
    """Shut instances down cleanly (they can be started again)."""
    _each(ctx, refs, "stop", output)


@app.command("start")
def start(ctx: typer.Context, refs: Refs, output: OutputOption = OutputFormat.table) -> None:
    """Start stopped instances again."""
    _each(ctx, refs, "start", output)


@app.command("kill")
def kill(ctx: typer.Context, refs: Refs, output: OutputOption = OutputFormat.table) -> None:
    """Destroy instances and their disks. Killing what is already gone succeeds."""
    _each(ctx, refs, "kill", output)


@app.command("exec", context_settings={"allow_interspersed_args": False})
def exec_command(
    ctx: typer.Context,
    ref: Ref,
    command: Annotated[list[str], typer.Argument(help="the command, after --", show_default=False)],
) -> None:
    """Run a command in an instance as root; exits with the command's exit code."""
    from stratuslab.errors import Invalid

    command = _after_dashes(command)
    if not command:
        raise Invalid("no command given", hint="stratus instance exec ID -- COMMAND [ARGS...]")
    result = runtime(ctx).instances.exec(ref, command)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    raise typer.Exit(result.exit_code)


@app.command("ssh", context_settings={"allow_interspersed_args": False})
def ssh(
    ctx: typer.Context,
    ref: Ref,
    identity: Annotated[Path | None, typer.Option("-i", "--identity", help="private key file")] = None,
    user: Annotated[str, typer.Option("-l", "--user", help="remote user")] = "root",
    command: Annotated[list[str] | None, typer.Argument(help="a command to run instead of a shell")] = None,
) -> None:
    """Open an ssh session to an instance (or run one command over ssh)."""
    from stratuslab import proc
    from stratuslab.errors import Conflict

    view = runtime(ctx).instances.get(ref)
    if view.address is None:
        raise Conflict(f"instance {view.id} has no address (it is {view.state})")
    argv = ["ssh", "-o", "StrictHostKeyChecking=accept-new", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR"]
    if identity:
        argv += ["-i", str(identity)]
    argv += [f"{user}@{view.address}", *_after_dashes(command or [])]
    runtime(ctx).close()
    proc.replace_process(argv)


def _after_dashes(command: list[str]) -> list[str]:
    return command[1:] if command[:1] == ["--"] else command


def _each(ctx: typer.Context, refs: list[str], action: str, output: OutputFormat) -> None:
    service = runtime(ctx).instances
    views = [getattr(service, action)(ref) for ref in refs]
    if output == OutputFormat.json:
        emit_json([v.to_dict() for v in views])
    else:
        _table(views)


def _table(views: list[InstanceView], *, owners: bool = False) -> None:
    columns = ["ID", "NAME", "STATE", "ADDRESS", "IMAGE", "CPU", "RAM", "AGE"]
    if owners:
        columns.insert(2, "OWNER")
    rows = []
    for v in views:
        state = v.state + (" (recovered)" if v.recovered else "")
        if v.state == "gone" and v.error:
            state += f": {v.error}"
        row = [v.id, v.name, state, v.address or "", v.image, v.cpu or "-", f"{v.ram_mb} MiB" if v.ram_mb else "-",
               age(v.created_at)]
        if owners:
            row.insert(2, v.owner)
        rows.append(row)
    table(None, columns, rows)
