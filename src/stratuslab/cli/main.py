"""The `stratus` command: its root, its exit codes, and the one place errors are printed."""

from __future__ import annotations

import sys

import click

from stratuslab import __version__
from stratuslab.cli import (
    apikey,
    bake,
    cert,
    cloud,
    group,
    image,
    instance,
    marketplace,
    module,
    quota,
    run,
    server,
    session,
    user,
    volume,
    watch,
)
from stratuslab.cli.deploy import deploy
from stratuslab.cli.runtime import Runtime
from stratuslab.cli.usage import usage
from stratuslab.errors import EXIT_INTERNAL, EXIT_USAGE, StratusError

EXIT_CODES = """\b
Exit codes:
  0 success          1 run aborted        2 run timed out       64 usage error
  65 invalid input   66 not found         67 conflict           68 over capacity or quota
  69 backend or server not running        70 backend error      71 not supported
  74 internal error (a bug: please report it)
  77 not authorised, or the site's trust policy refuses the image
"""


@click.group(
    name="stratus",
    epilog=EXIT_CODES,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--debug", is_flag=True, envvar="STRATUS_DEBUG", help="show tracebacks and backend detail"
)
@click.option(
    "--user",
    "act_as",
    metavar="NAME",
    envvar="STRATUS_USER",
    help="act as this user (an administrator only; also STRATUS_USER)",
)
@click.version_option(__version__, prog_name="stratus")
@click.pass_context
def cli(ctx: click.Context, debug: bool, act_as: str | None) -> None:
    """StratusLab: start instances on the local cloud, build images, deploy applications."""
    if ctx.obj is None:  # tests hand in a runtime of their own
        ctx.obj = Runtime(debug=debug)
    if act_as:
        ctx.obj.act_as = act_as
    ctx.call_on_close(ctx.obj.close)


cli.add_command(cloud.group)
cli.add_command(image.group)
image.group.add_command(bake.bake)
image.group.add_command(bake.prune)
cli.add_command(instance.group)
cli.add_command(server.group)
cli.add_command(deploy)
cli.add_command(run.group)
cli.add_command(module.group)
cli.add_command(user.group)
cli.add_command(group.group)
cli.add_command(apikey.group)
cli.add_command(session.login)
cli.add_command(session.logout)
cli.add_command(session.whoami)
cli.add_command(cert.group)
cli.add_command(quota.group)
cli.add_command(usage)
cli.add_command(watch.group)
cli.add_command(marketplace.group)
cli.add_command(volume.group)


def main(argv: list[str] | None = None, *, runtime: Runtime | None = None) -> int:
    """Run `stratus` and return its exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        result = cli.main(args=args, prog_name="stratus", standalone_mode=False, obj=runtime)
    except StratusError as exc:
        if debug:
            import traceback

            traceback.print_exception(exc)
        hint = f"; {exc.hint}" if exc.hint else ""
        print(f"error: {exc.message}{hint}", file=sys.stderr)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE
    except (click.exceptions.Abort, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        print(
            f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    return result if isinstance(result, int) else 0


def entry() -> None:
    sys.exit(main())
