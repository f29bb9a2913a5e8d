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
    """Start the local server in the background, unless it is running already."""
    from stratuslab.api import daemon

    outcome, state = daemon.start(rt.settings)
    if output == "json":
        emit_json({"outcome": outcome, "url": state.url, "pid": state.pid})
    else:
        out.print(
            f"server {outcome} on {state.url} (pid {state.pid}); "
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
    """Is the local server running?"""
    from stratuslab.api import daemon

    state = daemon.state(rt.settings)
    if output == "json":
        emit_json(
            {"running": state.running, "url": state.url, "pid": state.pid, "version": state.version}
        )
    elif state.running:
        out.print(f"running on {state.url} (pid {state.pid}, version {state.version})")
    else:
        out.print(
            f"not running (would listen on {state.url}); start it with `stratus server start`"
        )
        raise click.exceptions.Exit(69)
