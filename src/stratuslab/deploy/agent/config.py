"""Which server, run and node instance this node is, and where the agent keeps things.

Configuration: ``/etc/stratus/agent.conf``, JSON ``{"server", "run", "node_instance",
"token", "ca"}``, overridden by ``SLIPSTREAM_SERVICEURL``, ``SLIPSTREAM_DIID``,
``SLIPSTREAM_NODE_INSTANCE_NAME``, ``STRATUS_NODE_TOKEN`` and ``STRATUS_SERVER_CA``. The
server is an ``https://`` URL and ``ca`` the site CA's certificate (PEM), the only one the
agent trusts: a node shares its network with other users' nodes, and its token goes to no
other server. Every location and a few behaviours can be moved through the environment, so
that tests run the agent unprivileged: the locations as ``LOCATIONS`` says, and

    STRATUS_AGENT_CONF        the configuration file      (/etc/stratus/agent.conf)
    STRATUS_AGENT_SYSTEMD     1 or 0: use systemd or not  (whether /run/systemd/system exists)
    STRATUS_AGENT_APT         the apt-get program         (apt-get)
    STRATUS_AGENT_RETRY_FOR   seconds to retry an unreachable server (600)
"""

from __future__ import annotations

from .exits import USAGE, ToolError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing; mypy knows the name
if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path
    from typing import Any

DEFAULT_CONF = "/etc/stratus/agent.conf"
DEFAULT_RETRY_FOR = "600"  # seconds

CONFIG_OVERRIDES = {
    "server": "SLIPSTREAM_SERVICEURL",
    "run": "SLIPSTREAM_DIID",
    "node_instance": "SLIPSTREAM_NODE_INSTANCE_NAME",
    "token": "STRATUS_NODE_TOKEN",
    "ca": "STRATUS_SERVER_CA",
}
# Where the agent keeps things on the node: attribute of Locations -> (variable, default).
LOCATIONS = {
    "state_dir": ("STRATUS_AGENT_STATE_DIR", "/var/lib/stratus-agent"),  # markers, recipes, lock
    "log_dir": ("STRATUS_AGENT_LOG_DIR", "/var/log/stratus-agent"),  # agent.log, recipe logs
    # What recipes put in the report: SlipStream's documented location, told to recipes.
    "report_dir": ("SLIPSTREAM_REPORT_DIR", "/var/tmp/slipstream/reports"),  # noqa: S108
    "workdir": ("STRATUS_AGENT_WORKDIR", "/root"),  # where recipes run
    "bin_dir": ("STRATUS_AGENT_BIN_DIR", "/usr/local/bin"),  # where install writes the tools
    "unit_dir": ("STRATUS_AGENT_UNIT_DIR", "/etc/systemd/system"),  # where it writes the unit
}


class Config:
    """Which server, run and node instance this node is, and its token."""

    __slots__ = ("ca", "node_instance", "path", "run", "server", "token")

    def __init__(
        self, *, server: str, run: str, node_instance: str, token: str, ca: str, path: str
    ) -> None:
        self.server = server
        self.run = run
        self.node_instance = node_instance
        self.token = token
        self.ca = ca  # the site CA's certificate, PEM
        self.path = path  # the configuration file, handed on to recipes as STRATUS_AGENT_CONF


def load_config(environ: Mapping[str, str]) -> Config:
    """Read the configuration file (it may be missing), then apply the environment."""
    path = environ.get("STRATUS_AGENT_CONF") or DEFAULT_CONF
    loaded: Any = {}
    if not all(environ.get(variable) for variable in CONFIG_OVERRIDES.values()):
        import json  # recipes are given everything: they read no file and import no json

        try:
            with open(path, encoding="utf-8") as handle:  # noqa: PTH123 - pathlib costs ~5 ms here
                loaded = json.load(handle)
        except FileNotFoundError:
            loaded = {}
        except (OSError, ValueError) as exc:
            raise ToolError(USAGE, f"cannot read {path}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ToolError(USAGE, f"{path} is not a JSON object")
    values = {name: str(loaded.get(name) or "") for name in CONFIG_OVERRIDES}
    for name, variable in CONFIG_OVERRIDES.items():
        values[name] = environ.get(variable) or values[name]
    missing = [name for name, value in values.items() if not value]
    if missing == ["ca"]:
        raise ToolError(
            USAGE,
            f"not configured: no ca in {path} or the environment: without the site CA's "
            "certificate this node trusts no server, and sends its token to none",
        )
    if missing:
        raise ToolError(
            USAGE, f"not configured: no {', '.join(missing)} in {path} or the environment"
        )
    if not values["server"].startswith("https://"):
        raise ToolError(
            USAGE,
            f"the server {values['server']} is not https://: this node sends its token only "
            "over TLS, to the server its site CA vouches for",
        )
    return Config(
        server=values["server"],
        run=values["run"],
        node_instance=values["node_instance"],
        token=values["token"],
        ca=values["ca"],
        path=path,
    )


def retry_period(environ: Mapping[str, str]) -> float:
    """Seconds to keep retrying a server that cannot be reached (``STRATUS_AGENT_RETRY_FOR``)."""
    text = environ.get("STRATUS_AGENT_RETRY_FOR") or DEFAULT_RETRY_FOR
    try:
        return float(text)
    except ValueError as exc:
        raise ToolError(USAGE, f"STRATUS_AGENT_RETRY_FOR is not a number: {text!r}") from exc


class Locations:
    """Where the agent keeps things on the node: ``LOCATIONS``, moved by the environment."""

    __slots__ = tuple(LOCATIONS)
    state_dir: Path
    log_dir: Path
    report_dir: Path
    workdir: Path
    bin_dir: Path
    unit_dir: Path

    def __init__(self, environ: Mapping[str, str]) -> None:
        from pathlib import Path  # not in the tools' path: ~5 ms of every ss-get

        for attribute, (variable, default) in LOCATIONS.items():
            setattr(self, attribute, Path(environ.get(variable) or default))
