"""`stratus server`: the API server that owns instances and runs."""

from __future__ import annotations

import click

from stratuslab.cli.output import emit_json, out, output_option
from stratuslab.cli.runtime import Runtime, pass_runtime


@click.group(name="server", no_args_is_help=True)
def group() -> None:
    """Run, start, stop and inspect the StratusLab server."""


@group.command("run")
@click.option("--host", help="address to listen on (default: the setting server_host)")
@click.option("--port", type=int, help="port to listen on (default: the setting server_port)")
@click.option(
    "--idle-exit", type=float, default=0, help="exit after this many idle seconds (0: never)"
)
@pass_runtime
def run(rt: Runtime, host: str | None, port: int | None, idle_exit: float) -> None:
    """Run the server in the foreground (for a service manager, or to watch its log)."""
    import logging

    from stratuslab.api.server import serve

    logging.basicConfig(
        level=logging.DEBUG if rt.debug else logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.DEBUG if rt.debug else logging.WARNING)
    settings = rt.settings
    serve(
        settings,
        host=host or settings.server_host,
        port=port or settings.server_port,
        idle_exit=idle_exit,
    )


@group.command("start")
@output_option
@pass_runtime
def start(rt: Runtime, output: str) -> None:
    """Start the local server in the background, unless it is running already. One of another
    build than this CLI's is replaced by one of this build, in the same mode."""
    from stratuslab import build
    from stratuslab.api import daemon

    mine = build.build_id(cache=daemon.build_cache(rt.settings))
    started = daemon.start(rt.settings, build=mine)
    state = started.state
    if output == "json":
        emit_json(
            {"outcome": started.outcome, "url": state.url, "pid": state.pid, "build": state.build}
        )
    else:
        out.print(
            f"server {started.outcome} on {state.url} (pid {state.pid}, build {state.build}); "
            f"log in {daemon.log_file(rt.settings)}"
        )


@group.command("stop")
@output_option
@pass_runtime
def stop(rt: Runtime, output: str) -> None:
    """Stop the local server."""
    from stratuslab.api import daemon

    outcome = daemon.stop(rt.settings)
    if output == "json":
        emit_json({"outcome": outcome})
    else:
        out.print(f"server {outcome}")


@group.command("status")
@output_option
@pass_runtime
def status(rt: Runtime, output: str) -> None:
    """Is the local server running, and does it run this CLI's build?"""
    from stratuslab import build
    from stratuslab.api import daemon

    state = daemon.state(rt.settings)
    mine = build.build_id(cache=daemon.build_cache(rt.settings))
    if output == "json":
        emit_json(
            {
                "running": state.running,
                "url": state.url,
                "pid": state.pid,
                "version": state.version,
                "build": state.build,
                "cli_build": mine,
                "build_matches": state.running and state.build == mine,
                "idle_exit": state.idle_exit,
                "proven": state.proven,
            }
        )
    elif state.running:
        if state.build == mine:
            matches = "this CLI's build"
        else:
            matches = f"not this CLI's build {mine}: the next command replaces it"
        unproven = "" if state.proven else "; it did not prove it holds the site token"
        out.print(
            f"running on {state.url} (pid {state.pid}, version {state.version}, "
            f"build {state.build or 'unknown'}, {matches}){unproven}"
        )
    else:
        out.print(
            f"not running (would listen on {state.url}); start it with `stratus server start`"
        )
        raise click.exceptions.Exit(69)
