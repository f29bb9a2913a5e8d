"""`stratus image bake`, `stratus image prune` and `stratus image list --baked`: images baked
from components (deploy/bake.py), and `stratus deploy --bake`'s bakes.

A bake is a run: it is followed as `stratus deploy` follows one (states, what each node does,
the recipes' output), and ends with a summary of the image, or exit 1 with the reason.
"""

from __future__ import annotations

import time
from typing import Any

import click

from stratuslab.cli.output import age, emit_json, err, escaped, out, output_option, table
from stratuslab.cli.runtime import Runtime, pass_runtime
from stratuslab.errors import EXIT_RUN_ABORTED


@click.command("bake")
@click.argument("component")
@click.option("--cloud", default="local", show_default=True, help="the cloud to bake on")
@output_option
@pass_runtime
def bake(rt: Runtime, component: str, cloud: str, output: str) -> None:
    """Bake COMPONENT (a module file or directory here, pushed first, or a module on the
    server): its and its parents' pre-install, packages and post-install run once in a pristine
    instance, which becomes your image. Deployments of it then start from that image and run
    only their deployment steps. When nothing changed, this returns the image at once."""
    from stratuslab.cli.deploy import _push_if_local

    quiet = output == "json"
    started = time.monotonic()
    module = _push_if_local(rt, component, quiet=quiet)
    if rt.client.module(module)["kind"] == "application":  # every node's component
        result = bake_application(rt, module, quiet=quiet)
        result["seconds"] = round(time.monotonic() - started, 2)
        if quiet:
            emit_json(result)
        else:
            out.print(f"{result['baked']} baked, {result['cached']} already baked")
        return
    answer = rt.client.request(
        "POST", "/api/images/bake", json_body={"module": module, "cloud": cloud}
    )
    result = finish(rt, answer, quiet=quiet)
    result["seconds"] = round(time.monotonic() - started, 2)
    if quiet:
        emit_json(result)
    else:
        summary(result)
    if result["failed"]:
        raise click.exceptions.Exit(EXIT_RUN_ABORTED)


def finish(rt: Runtime, answer: dict[str, Any], *, quiet: bool) -> dict[str, Any]:
    """Follow a bake the server started until its run ends; what it made, or why it failed."""
    if answer["cached"]:
        return {"cached": True, "failed": False, "reason": None, "image": answer["image"]}
    run_id = answer["run"]["id"]
    if not quiet:
        err.print(f"baking {escaped(answer['image']['name'])} in run [bold]{run_id}[/bold]")
    baked: dict[str, Any] = {}
    follow(rt, run_id, baked, quiet=quiet)
    run = rt.client.run(run_id)
    failed = not baked or run["state"] != "Done"
    image = dict(baked) if baked else {"name": answer["image"]["name"]}
    reason = run["abort_reason"] or ("the bake ended without an image" if failed else None)
    return {"cached": False, "failed": failed, "reason": reason, "run": run_id, "image": image}


def follow(rt: Runtime, run_id: str, baked: dict[str, Any], *, quiet: bool) -> None:
    """Show the bake's events and its recipes' output until the run ends; the ``baked``
    event's fields go into ``baked``."""
    from stratuslab.cli.deploy import _print_event, stream_events

    seen = [0]

    def output() -> None:  # the recipes' lines that arrived since the last event
        for line in rt.client.run_logs(run_id, after=seen[0]):
            seen[0] = line["id"]
            if not quiet and line["stream"] in ("stdout", "stderr"):
                err.print(
                    escaped(f"  {line['node_instance']} {line['recipe']}: {line['text']}"),
                    style="dim",
                    highlight=False,
                )

    def show(event: dict[str, Any]) -> None:
        output()
        if event["kind"] == "baked":
            baked.update(event["fields"], name=event["fields"]["image"])
        if not quiet:
            _print_event(event)

    stream_events(rt, run_id, show, quiet=quiet, until_final=True)
    output()


def summary(result: dict[str, Any]) -> None:
    image = result["image"] or {}
    if result["failed"]:
        out.print(f"[bold red]bake failed[/bold red]: {escaped(result['reason'] or '')}")
        out.print(f"  nothing was published; `stratus run logs {result['run'][:8]}` has its output")
        return
    how = "nothing changed, already baked" if result["cached"] else "baked"
    size = image.get("size_bytes") or 0
    out.print(
        f"{escaped(image['name'])}: {how} in {result['seconds']} s "
        f"(digest {str(image.get('digest', ''))[:16]}, {size / 2**20:.0f} MiB)"
    )
    packages = image.get("packages") or {}
    if packages:
        out.print(
            escaped("  packages: " + ", ".join(f"{n} {v}" for n, v in sorted(packages.items())))
        )


def bake_application(rt: Runtime, module: str, *, quiet: bool) -> dict[str, Any]:
    """Bake every node of an application that lacks a baked image (side by side on the
    server), following each; exit 1 when one fails (``stratus deploy --bake`` too)."""
    answers = rt.client.request(
        "POST", "/api/images/bake-application", json_body={"module": module}
    )
    failures, nodes, counts = [], {}, {"baked": 0, "cached": 0}
    for answer in answers:
        if answer.get("nothing"):
            continue
        result = finish(rt, answer, quiet=quiet)
        nodes[answer["node"]] = result
        if result["failed"]:
            failures.append(f"{answer['node']}: {result['reason']}")
            continue
        counts["cached" if result["cached"] else "baked"] += 1
        if not quiet:
            how = "already baked" if result["cached"] else "baked"
            err.print(f"{escaped(answer['node'])}: {how} {escaped(result['image']['name'])}")
    if failures:
        for failure in failures:
            out.print(f"[bold red]bake failed[/bold red] {escaped(failure)}")
        raise click.exceptions.Exit(EXIT_RUN_ABORTED)
    return {"nodes": nodes, **counts}


@click.command("prune")
@click.option("--cloud", default="local", show_default=True)
@click.option("--dry-run", is_flag=True, help="say what would be deleted, delete nothing")
@click.option("--all", "everyone", is_flag=True, help="every user's (administrators)")
@output_option
@pass_runtime
def prune(rt: Runtime, cloud: str, dry_run: bool, everyone: bool, output: str) -> None:
    """Delete your stale baked images (their component changed or their base image was
    rebuilt) from the cloud and the catalog; those a run not over uses are kept."""
    answer = rt.client.request(
        "POST", "/api/images/prune", json_body={"cloud": cloud, "dry_run": dry_run, "all": everyone}
    )
    if output == "json":
        emit_json(answer)
        return
    verb = "would delete" if dry_run else "deleted"
    for image in answer["deleted"]:
        out.print(escaped(f"{verb} {image['name']}: {image['why']}"), highlight=False)
    for image in answer["kept"]:
        out.print(escaped(f"kept {image['name']}: {image['why']}"), highlight=False)
    if not answer["deleted"] and not answer["kept"]:
        out.print("No stale baked image.")


def list_baked(rt: Runtime, cloud: str, everyone: bool, output: str) -> None:
    """`stratus image list --baked`."""
    images = rt.client.request("GET", "/api/images/baked", params={"cloud": cloud, "all": everyone})
    if output == "json":
        emit_json(images)
        return
    if not images:
        err.print("No baked image yet: bake one with `stratus image bake COMPONENT`.")
        return
    table(
        None,
        ("NAME", "COMPONENT", "DIGEST", "AGE", "USED BY", "STALE"),
        (
            (
                i["name"],
                f"{i['component']}/{i['version']}",
                str(i["digest"])[:16],
                age(i["created_at"]),
                ", ".join(r[:8] for r in i["used_by"]),
                i["why"] if i["stale"] else "",
            )
            for i in images
        ),
    )


def baked_lines(run: dict[str, Any]) -> list[str]:
    """Which nodes of a run start from a baked image, as sentences (plain text)."""
    return [
        f"{node}: baked image {b['image']}, install steps skipped"
        for node, b in sorted((run.get("baked") or {}).items())
    ]
