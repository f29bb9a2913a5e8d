"""The `stratus` command: its root, its exit codes, and the one place errors are printed."""

from __future__ import annotations

import sys
from typing import Annotated

import click
import typer

from stratuslab import __version__
from stratuslab.cli import cloud, image, instance
from stratuslab.cli.runtime import Runtime
from stratuslab.errors import EXIT_INTERNAL, EXIT_USAGE, StratusError

EXIT_CODES = """\
Exit codes: 0 success; 1 run aborted; 2 run timed out; 64 usage error; 65 invalid input;
66 not found; 67 conflict; 68 not enough capacity; 69 backend (LXD) not running;
70 backend error; 71 not supported; 74 internal error (a bug: please report it).
"""

app = typer.Typer(
    name="stratus",
    help="StratusLab: start instances on the local cloud, build images, deploy applications.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
app.add_typer(cloud.app, name="cloud")
app.add_typer(image.app, name="image")
app.add_typer(instance.app, name="instance")


def _version(value: bool) -> None:
    if value:
        print(f"stratus {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    debug: Annotated[
        bool, typer.Option("--debug", envvar="STRATUS_DEBUG", help="show tracebacks and backend detail")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version")
    ] = False,
) -> None:
    ctx.obj = Runtime(debug=debug)
    ctx.call_on_close(ctx.obj.close)


def main(argv: list[str] | None = None) -> int:
    """Run `stratus` and return its exit code (the console script exits with it)."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name="stratus", standalone_mode=False)
    except StratusError as exc:
        _report(exc, debug)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE
    except click.exceptions.Abort:
        print("interrupted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        print(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL
    return int(result) if isinstance(result, int) else 0


def _report(exc: StratusError, debug: bool) -> None:
    if debug:
        import traceback

        traceback.print_exception(exc)
    hint = f"; {exc.hint}" if exc.hint else ""
    print(f"error: {exc.message}{hint}", file=sys.stderr)


def entry() -> None:
    sys.exit(main())
