"""`stratus instance`: start machines from images and work with them.

StratusLab users knew these as stratus-run-instance, stratus-describe-instance,
stratus-shutdown-instance, stratus-kill-instance and stratus-connect-instance.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from stratuslab.cli.output import age, emit_json, err, out, output_option, progress_lines, table
from stratuslab.cli.runtime import Runtime, pass_runtime

EXIT_PARTIAL = 70  # some instances of a run failed (they were cleaned up)
SSH_OPTIONS = (
    "StrictHostKeyChecking=accept-new",
    "UserKnownHostsFile=/dev/null",  # addresses are reused by new instances with new host keys
    "LogLevel=ERROR",
    "ConnectionAttempts=10",  # sshd may still be starting just after `instance run`
)


@click.group(name="instance", no_args_is_help=True)
def group() -> None:
    """Start, list, stop, start again, kill and enter instances."""


@group.command("run")
@click.argument("image")
@click.option(
    "-n", "--count", type=int, default=1, show_default=True, help="how many to start, in parallel"
)
@click.option("--cpu", type=int, help="CPU limit per instance")
@click.option("--ram", type=int, help="memory limit per instance, MiB")
@click.option(
    "--key", type=click.Path(path_type=Path), help="public key file: ssh in as root with it"
)
@click.option(
    "--user-data",
    type=click.Path(path_type=Path),
    help="script (#!) or #cloud-config run once at first boot",
)
@click.option("--name", help="instance name (NAME-1..NAME-N with -n)")
@click.option("--cloud", help="the cloud to start on (default: the first by priority with room)")
@click.option(
    "--volume",
    "volumes",
    multiple=True,
    metavar="NAME[:PATH][:ro]",
    help="start with volume NAME (or OWNER/NAME) mounted at PATH (default /mnt/NAME), "
    "read-only with :ro; repeatable",
)
@output_option
@pass_runtime
def run(
    rt: Runtime,
    image: str,
    count: int,
    cpu: int | None,
    ram: int | None,
    key: Path | None,
    user_data: Path | None,
    name: str | None,
    cloud: str | None,
    volumes: tuple[str, ...],
    output: str,
) -> None:
    """Start instances from IMAGE and wait until each is running with an address (and with
    each --volume mounted)."""
    body: dict[str, Any] = {
        "image": image,
        "count": count,
        "cpu": cpu,
        "ram_mb": ram,
        "name": name,
    }
    if cloud is not None:
        body["cloud"] = cloud
    if volumes:
        from stratuslab.cli.volume import mount_of

        body["volumes"] = [mount_of(given) for given in volumes]
    if key is not None or user_data is not None:  # checked here: a mistake costs no round trip
        from stratuslab.cloud.context import read_ssh_keys, read_user_data

        if key is not None:
            body["ssh_keys"] = list(read_ssh_keys(key))
        if user_data is not None:
            body["user_data"] = read_user_data(user_data)
    accepted = rt.client.run_instances(body)
    say = progress_lines(output == "json")
    final: dict[str, dict[str, Any]] = {}
    for view in accepted["instances"]:
        say(f"{view['id']} {view['name']}: recorded")
        final[view["id"]] = view
    for change in rt.client.watch_instances(list(final)):
        view = change.get("instance")
        if view is None:
            err.print("gave up waiting: see `stratus instance list`")
            break
        if change["what"] in ("pending",) or final.get(view["id"]) == view:
            continue
        final[view["id"]] = view
        where = f" at {view['addresses'][0]}" if view["addresses"] else ""
        reason = f": {view['error']}" if view["state"] == "gone" and view.get("error") else ""
        say(f"{view['id']} {view['name']}: {change['what']}{where}{reason}")
    views = list(final.values())
    failed = [v for v in views if v["state"] != "running"]
    if output == "json":
        emit_json(views)
    else:
        _table(views)
        out.print(
            f"{len(views) - len(failed)} of {len(views)} running."
            + (" Failures were cleaned up." if failed else "")
        )
    if failed:
        raise click.exceptions.Exit(EXIT_PARTIAL)


@group.command("list")
@click.option("--all", "all_owners", is_flag=True, help="every user's instances")
@click.option("--gone", is_flag=True, help="include instances that are gone")
@output_option
@pass_runtime
def list_instances(rt: Runtime, all_owners: bool, gone: bool, output: str) -> None:
    """Your instances, checked against the cloud (vanished ones show as gone)."""
    views = rt.client.list_instances(all_owners=all_owners, gone=gone)
    if output == "json":
        emit_json(views)
    elif views:
        _table(views, owners=all_owners)
    else:
        err.print("No instances. Start one with `stratus instance run debian-12`.")


@group.command("show")
@click.argument("ref")
@output_option
@pass_runtime
def show(rt: Runtime, ref: str, output: str) -> None:
    """Everything known about instance REF (id, id prefix or name)."""
    view = rt.client.instance(ref)
    if output == "json":
        emit_json(view)
        return
    from stratuslab.cli.volume import mounted

    view["addresses"] = ", ".join(view["addresses"])
    view["volumes"] = "\n".join(mounted(v) for v in view.get("volumes", []))
    table(None, ("", ""), ((k, v) for k, v in view.items() if v not in (None, "", [])))


@group.command("stop")
@click.argument("refs", nargs=-1, required=True)
@output_option
@pass_runtime
def stop(rt: Runtime, refs: tuple[str, ...], output: str) -> None:
    """Shut instances down cleanly (they can be started again)."""
    _each(rt, refs, "stop", output)


@group.command("start")
@click.argument("refs", nargs=-1, required=True)
@output_option
@pass_runtime
def start(rt: Runtime, refs: tuple[str, ...], output: str) -> None:
    """Start stopped instances again."""
    _each(rt, refs, "start", output)


@group.command("kill")
@click.argument("refs", nargs=-1, required=True)
@output_option
@pass_runtime
def kill(rt: Runtime, refs: tuple[str, ...], output: str) -> None:
    """Destroy instances and their disks. Killing what is already gone succeeds."""
    _each(rt, refs, "kill", output)


@group.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("ref")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--timeout", type=float, help="give up after this many seconds")
@pass_runtime
def exec_command(rt: Runtime, ref: str, command: tuple[str, ...], timeout: float | None) -> None:
    """Run COMMAND in instance REF as root (put it after --); exits with its exit code."""
    result = rt.client.exec(ref, list(command), timeout=timeout)
    sys.stdout.write(result["stdout"])
    sys.stderr.write(result["stderr"])
    raise click.exceptions.Exit(result["exit_code"])


@group.command("ssh", context_settings={"ignore_unknown_options": True})
@click.argument("ref")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("-i", "--identity", type=click.Path(path_type=Path), help="private key file")
@click.option("-l", "--user", default="root", show_default=True, help="remote user")
@pass_runtime
def ssh(rt: Runtime, ref: str, command: tuple[str, ...], identity: Path | None, user: str) -> None:
    """Open an ssh session to instance REF, or run COMMAND over ssh (after --)."""
    from stratuslab import proc
    from stratuslab.errors import Conflict

    view = rt.client.instance(ref)
    if not view["addresses"]:
        raise Conflict(f"instance {view['id']} has no address (it is {view['state']})")
    argv = ["ssh"] + [arg for option in SSH_OPTIONS for arg in ("-o", option)]
    if identity:
        argv += ["-i", str(identity)]
    argv += [f"{user}@{view['addresses'][0]}", *command]
    rt.close()
    proc.replace_process(argv)


def _each(rt: Runtime, refs: tuple[str, ...], action: str, output: str) -> None:
    views = [rt.client.instance_action(ref, action) for ref in refs]
    if output == "json":
        emit_json(views)
    else:
        _table(views)


def _table(views: list[dict[str, Any]], *, owners: bool = False) -> None:
    columns = ["ID", "NAME", "STATE", "ADDRESS", "IMAGE", "CPU", "RAM", "AGE"]
    if owners:
        columns.insert(2, "OWNER")
    rows = []
    for v in views:
        state = v["state"] + (" (recovered)" if v["recovered"] else "")
        if v["state"] == "gone" and v.get("error"):
            state += f": {v['error']}"
        row = [
            v["id"],
            v["name"],
            state,
            (v["addresses"] or [""])[0],
            v["image"],
            v["cpu"] or "-",
            f"{v['ram_mb']} MiB" if v["ram_mb"] else "-",
            age(v["created_at"]),
        ]
        if owners:
            row.insert(2, v["owner"])
        rows.append(row)
    table(None, columns, rows)


def _add_image_commands() -> None:
    from stratuslab.cli.instance_images import save, snapshot

    group.add_command(save)
    group.add_command(snapshot)


_add_image_commands()
