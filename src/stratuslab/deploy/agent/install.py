"""``install``: the ss-* tools as launchers, the systemd unit, and a started agent.

The agent reaches a node as one zipapp (``/opt/stratus/stratus-agent.pyz``) holding this
package, named ``stratus_agent`` there, with its bytecode precompiled by the server. The
launchers put the zipapp on ``sys.path`` and import the tools from it: a tool call then costs
Python's start and the few modules a tool needs, read from the archive, never compiled.
"""

from __future__ import annotations

import sys

from .config import LOCATIONS, Locations
from .tools import TOOL_NAMES

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing; mypy knows the name
if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

UNIT_NAME = "stratus-agent.service"
# What `install` copies into the unit, so that the service sees the locations install saw. The
# token is not among them: the unit file is world-readable, the configuration file is not.
UNIT_VARIABLES = (
    "STRATUS_AGENT_CONF",
    *(variable for variable, _ in LOCATIONS.values()),
    "STRATUS_AGENT_APT",
    "STRATUS_AGENT_RETRY_FOR",
)
PACKAGE = __name__.rpartition(".")[0]  # stratus_agent in the zipapp


class NotInArchive(OSError):
    """``install`` was run from the package's sources, not from the zipapp."""


def archive() -> Path:
    """The zipapp this package runs from (zipimport's loaders know their archive)."""
    from pathlib import Path

    path = getattr(__spec__.loader, "archive", None)
    if not isinstance(path, str):
        raise NotInArchive(f"{PACKAGE} is not running from its zipapp: install from the zipapp")
    return Path(path).resolve()


def launcher(name: str, agent: Path) -> str:
    """The text of the tool ``name``: ``-E`` keeps PYTHON* variables a recipe may set from
    changing the tools, ``-S`` skips site-packages they do not need."""
    return (
        f"#!{sys.executable} -ES\n"
        f"# {name}: a StratusLab node tool (docs/agent.md), run from {agent}\n"
        "import sys\n"
        f"sys.path.insert(0, {str(agent)!r})\n"
        f"from {PACKAGE}.__main__ import main\n"
        "sys.exit(main())\n"
    )


def install_tools(bin_dir: Path, agent: Path) -> None:
    """Write the ss-* tools into ``bin_dir``, launchers that import the tools from ``agent``;
    only those that differ are written (nothing that watches them is disturbed)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in TOOL_NAMES:
        text = launcher(name, agent)
        tool = bin_dir / name
        if tool.is_symlink() or (tool.exists() and tool.read_text(encoding="utf-8") != text):
            tool.unlink()  # an older install made symlinks to the agent file itself
        if not tool.exists():
            tool.write_text(text, encoding="utf-8")
        tool.chmod(0o755)


def unit_text(agent: Path, environ: Mapping[str, str]) -> str:
    def quoted(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")

    lines = [
        "[Unit]",
        "Description=StratusLab node agent (this node's part of its deployment run)",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={sys.executable} {agent} run",
        "Restart=on-failure",
        "RestartSec=2",
    ]
    lines += [
        f'Environment="{name}={quoted(environ[name])}"'
        for name in UNIT_VARIABLES
        if environ.get(name)
    ]
    return "\n".join(lines) + "\n"


def _use_systemd(environ: Mapping[str, str]) -> bool:
    forced = environ.get("STRATUS_AGENT_SYSTEMD")
    if forced:
        return forced != "0"
    from pathlib import Path

    return Path("/run/systemd/system").is_dir()  # how systemd itself says it is running


def install(environ: Mapping[str, str]) -> str:
    """Write the tools and the unit, start the agent unless it runs already.

    Idempotent: tools and unit are rewritten only when they differ, ``systemctl start`` does
    nothing to a running service, and without systemd the agent's lock tells if one runs.
    Returns what it did, in a sentence.
    """
    import subprocess

    from .loop import try_lock

    locations = Locations(environ)
    agent = archive()
    install_tools(locations.bin_dir, agent)
    locations.unit_dir.mkdir(parents=True, exist_ok=True)
    unit = locations.unit_dir / UNIT_NAME
    text = unit_text(agent, environ)
    if not unit.exists() or unit.read_text(encoding="utf-8") != text:
        unit.write_text(text, encoding="utf-8")
    if _use_systemd(environ):
        subprocess.run(["systemctl", "daemon-reload"], check=True)
        subprocess.run(["systemctl", "start", "--no-block", "stratus-agent"], check=True)
        return f"tools written in {locations.bin_dir}; {UNIT_NAME} started"
    lock = try_lock(locations.state_dir)
    if lock is None:
        return f"tools written in {locations.bin_dir}; the agent is already running"
    lock.close()
    locations.log_dir.mkdir(parents=True, exist_ok=True)
    with (locations.log_dir / "agent.log").open("ab") as out:
        subprocess.Popen(
            [sys.executable, str(agent), "run"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd="/",
            start_new_session=True,
        )
    return f"tools written in {locations.bin_dir}; the agent started (no systemd)"
