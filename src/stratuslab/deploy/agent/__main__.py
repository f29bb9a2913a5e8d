"""The agent's entry point: it dispatches on the name it was called by (``ss-get`` ... as the
launchers ``install`` writes) or on its first argument::

    stratus-agent.pyz ss-get [--timeout S] [--noblock] [--ignore-abort] KEY
    stratus-agent.pyz ss-set [--ignore-abort] KEY VALUE
    stratus-agent.pyz ss-display [--ignore-abort] TEXT...
    stratus-agent.pyz ss-abort [--cancel] [REASON...]
    stratus-agent.pyz ss-random [-s N | --size N] [KEY]
    stratus-agent.pyz ss-get-all [--value V] [--timeout S] [--noblock] [--ignore-abort] NODE KEY
    stratus-agent.pyz run        the agent loop (what the systemd unit runs)
    stratus-agent.pyz install    write the tools and the unit, start the agent (idempotent)
    stratus-agent.pyz install-tools DIR    write only the tools, into DIR

Only what the command needs is imported: a tool never loads the agent loop or ``install``.
"""

from __future__ import annotations

import os
import sys

from .exits import OK, USAGE, ToolError
from .tools import TOOL_NAMES, TOOLS, run_tool


def main(argv: list[str] | None = None) -> int:
    args = sys.argv if argv is None else argv
    called_as = args[0].rsplit("/", 1)[-1] if args else ""
    if called_as in TOOLS:
        return run_tool(called_as, args[1:])
    command = args[1] if len(args) > 1 else ""
    if command in TOOLS:
        return run_tool(command, args[2:])
    if args[1:] == ["run"]:
        from .loop import agent_main

        return agent_main(os.environ)
    if args[1:] == ["install"] or (args[1:2] == ["install-tools"] and len(args) == 3):
        return _install(called_as, args[1:])
    tools = " | ".join(TOOL_NAMES)
    print(
        f"usage: {called_as} run | install | install-tools DIR | {tools} ARGS...", file=sys.stderr
    )
    return USAGE


def _install(called_as: str, args: list[str]) -> int:
    import subprocess
    from pathlib import Path

    from .config import load_config
    from .install import archive, install, install_tools

    try:
        if args == ["install"]:
            # Refused before anything is started: a node that would not trust its server
            # (no site CA, a server that is not https) says so in its bootstrap's output.
            load_config(os.environ)
            print(install(os.environ))
        else:
            install_tools(Path(args[1]), archive())
    except ToolError as exc:
        print(f"{called_as} {args[0]}: {exc.message}", file=sys.stderr)
        return exc.code
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"{called_as} {args[0]}: {exc}", file=sys.stderr)
        return 1
    return OK


if __name__ == "__main__":
    sys.exit(main())
