#!/usr/bin/env python3
"""The StratusLab node agent and SlipStream's ``ss-*`` tools, in one standard-library file.

Every node instance of a run carries this file (``docs/agent.md`` is its specification). It is
the node's side of SlipStream's run protocol: it follows the run's ``ss:state``, runs the
recipes of each state, posts ``complete``, streams recipe output to the server, uploads the
node's report, and provides the tools recipes use to wire nodes together. It needs Python 3.9
or newer and nothing but the standard library, because it runs inside images we do not control.

Entry points: the file dispatches on the name it was called by (``ss-get`` ... as the launchers
``install`` writes) or on its first argument::

    stratus_agent.py ss-get [--timeout S] [--noblock] [--ignore-abort] KEY
    stratus_agent.py ss-set [--ignore-abort] KEY VALUE
    stratus_agent.py ss-display [--ignore-abort] TEXT...
    stratus_agent.py ss-abort [--cancel] [REASON...]
    stratus_agent.py ss-random [-s N | --size N] [KEY]
    stratus_agent.py ss-get-all [--value V] [--timeout S] [--noblock] [--ignore-abort] NODE KEY
    stratus_agent.py run        the agent loop (what the systemd unit runs)
    stratus_agent.py install    write the tools and the unit, start the agent (idempotent)
    stratus_agent.py install-tools DIR    write only the tools, into DIR

Every tool also accepts SlipStream's ``-v``/``--verbose`` (it changes nothing) and ``-h``.

Configuration: ``/etc/stratus/agent.conf``, JSON ``{"server", "run", "node_instance",
"token"}``, overridden by ``SLIPSTREAM_SERVICEURL``, ``SLIPSTREAM_DIID``,
``SLIPSTREAM_NODE_INSTANCE_NAME`` and ``STRATUS_NODE_TOKEN``. Every location and a few
behaviours can be moved through the environment, so that tests run it unprivileged: the
locations as ``LOCATIONS`` below says, and

    STRATUS_AGENT_CONF        the configuration file      (/etc/stratus/agent.conf)
    STRATUS_AGENT_SYSTEMD     1 or 0: use systemd or not  (whether /run/systemd/system exists)
    STRATUS_AGENT_APT         the apt-get program         (apt-get)
    STRATUS_AGENT_RETRY_FOR   seconds to retry an unreachable server (600)

Exit codes of the tools (SlipStream's): 0 success, 1 not set (``--noblock``) or a different
value (``ss-get-all --value``), 2 usage or configuration error, 3 invalid value, 4 server
unreachable, 5 server failed (5xx), 6 not authorised, 7 client error (404 ...), 8 run
aborted, 9 timed out. Each error is one line on stderr, ``ss-get: <what went wrong>``.

The file reads top-down: configuration, the HTTP client and the protocol, the tools, the
agent's parts (state follower, log shipper, markers, steps) and the agent, ``install``, then
the dispatch.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable, Mapping

# What only the agent daemon needs is imported where it is used: every ss-get and ss-set pays
# for each module imported here, and propagation is measured from an ss-set to the return of
# an ss-get in milliseconds. So no http.client (~20 ms with the email package), no json in the
# tools' path (it imports re, ~7 ms), no typing, no urllib.parse, no pathlib.
TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing; mypy knows the name
if TYPE_CHECKING:
    import logging
    import subprocess
    from pathlib import Path
    from typing import IO, Any

OK, NOT_SET, USAGE, INVALID, UNREACHABLE, SERVER_FAILED, UNAUTHORISED, CLIENT_ERROR = range(8)
ABORTED, TIMED_OUT = 8, 9

VALUE_LIMIT = 4096  # characters in a runtime parameter value, as in SlipStream
MAX_WAIT = 60  # seconds the server holds one long-poll
NOBLOCK_RETRY_FOR = 5  # seconds a --noblock tool retries a server that is down
RETRIED_STATUSES = (502, 503, 504)
NODE_LEVEL_PARAMS = ("multiplicity", "ids")  # <node>:ids is the node's, never <node>.1:ids
BARRIER_STATES = ("Provisioning", "Executing", "SendingReports", "Ready")  # in run order
FINAL_STATES = ("Finalizing", "Done", "Aborted", "Cancelled")
SCALING_HOOKS = {"vm_add": "on-vm-add", "vm_remove": "on-vm-remove"}
UNIT_NAME = "stratus-agent.service"
LOG_LINE_LIMIT = 4096  # characters of one output line sent to the server (the file keeps all)
LOG_BATCH = 500  # lines per POST, so one noisy recipe cannot make a huge request

CONFIG_OVERRIDES = {
    "server": "SLIPSTREAM_SERVICEURL",
    "run": "SLIPSTREAM_DIID",
    "node_instance": "SLIPSTREAM_NODE_INSTANCE_NAME",
    "token": "STRATUS_NODE_TOKEN",
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
# What `install` copies into the unit, so that the service sees the locations install saw. The
# token is not among them: the unit file is world-readable, the configuration file is not.
UNIT_VARIABLES = (
    "STRATUS_AGENT_CONF",
    *(variable for variable, _ in LOCATIONS.values()),
    "STRATUS_AGENT_APT",
    "STRATUS_AGENT_RETRY_FOR",
)


class _Log:
    """The agent's logger, made (and ``logging`` imported) on first use."""

    def __getattr__(self, name: str) -> Any:
        import logging

        return getattr(logging.getLogger("stratus-agent"), name)


log: logging.Logger = _Log()  # type: ignore[assignment]


class ToolError(Exception):
    """A failure, with the exit code the tools give it and a one-line message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- configuration ----------------------------------------------------------------------------


class Config:
    """Which server, run and node instance this node is, and its token."""

    __slots__ = ("node_instance", "path", "run", "server", "token")

    def __init__(self, *, server: str, run: str, node_instance: str, token: str, path: str) -> None:
        self.server = server
        self.run = run
        self.node_instance = node_instance
        self.token = token
        self.path = path  # the configuration file, handed on to recipes as STRATUS_AGENT_CONF


def load_config(environ: Mapping[str, str]) -> Config:
    """Read the configuration file (it may be missing), then apply the environment."""
    path = environ.get("STRATUS_AGENT_CONF") or "/etc/stratus/agent.conf"
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
    if missing:
        raise ToolError(
            USAGE, f"not configured: no {', '.join(missing)} in {path} or the environment"
        )
    return Config(
        server=values["server"],
        run=values["run"],
        node_instance=values["node_instance"],
        token=values["token"],
        path=path,
    )


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
        from pathlib import Path

        for attribute, (variable, default) in LOCATIONS.items():
            setattr(self, attribute, Path(environ.get(variable) or default))


def qualify(key: str, node_instance: str) -> str:
    """The full name of ``key``, qualified as SlipStream's client did.

    ``ss:x`` and ``web.2:x`` are already full; ``web:x`` means ``web.1:x`` except for the
    node-level ``web:ids`` and ``web:multiplicity``; a bare ``x`` is the caller's own
    (``web.1:x``), a bare ``ids`` its node's (``web:ids``).
    """
    owner, colon, param = key.partition(":")
    if not colon:
        if key in NODE_LEVEL_PARAMS:
            return f"{node_instance.rpartition('.')[0]}:{key}"
        return f"{node_instance}:{key}"
    if owner == "ss" or "." in owner or param in NODE_LEVEL_PARAMS:
        return key
    return f"{owner}.1:{param}"


# -- the server -------------------------------------------------------------------------------


class Answer:
    """One HTTP answer."""

    __slots__ = ("body", "content_type", "status")

    def __init__(self, status: int, body: bytes, content_type: str) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def explanation(self) -> str:
        """The server's own words for a failure, on one line ('' when it gave none)."""
        text = self.text().strip()
        if self.content_type.startswith("application/json"):
            text = _json_message(text)
        elif not self.content_type.startswith("text/plain"):
            return ""  # e.g. a proxy's HTML page: not something to print on one line
        return " ".join(text.split())


def _json_message(text: str) -> str:
    """The message of the project's ``{"error": {"message"}}`` or FastAPI's ``{"detail"}``."""
    import json

    try:
        data = json.loads(text)
    except ValueError:
        return text
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(data.get("detail"), str):
            return str(data["detail"])
    return text


def refusal(answer: Answer, not_found: str) -> ToolError:
    """The error for an answer that is not a success, with the exit code of the spec."""
    detail = answer.explanation()
    if answer.status == 409:
        return ToolError(
            ABORTED, f"the run is aborted: {detail}" if detail else "the run is aborted"
        )
    if answer.status in (401, 403):
        return ToolError(
            UNAUTHORISED, detail or f"not authorised ({answer.status}): the token was refused"
        )
    if answer.status >= 500:
        return ToolError(SERVER_FAILED, detail or f"the server failed ({answer.status})")
    if answer.status == 404:
        return ToolError(CLIENT_ERROR, detail or not_found)
    return ToolError(CLIENT_ERROR, detail or f"the server refused the request ({answer.status})")


class RunClient:
    """The run's resources on the server, for one node instance.

    Every request opens its own connection (threads share the client) and is retried, with a
    pause growing from 0.2 s to 5 s, while the server cannot be reached or answers 502, 503 or
    504, for up to ``retry_for`` seconds, or until the caller's ``deadline`` if that comes
    first: a server restarted mid-run loses no node, and a tool's ``--timeout`` still holds.
    """

    def __init__(self, config: Config, *, retry_for: float) -> None:
        scheme, host, port, prefix = split_url(config.server)
        self.config = config
        self._https = scheme == "https"
        self._host = host
        self._port = port
        self._prefix = prefix
        self._retry_for = retry_for

    # The protocol (docs/agent.md, "The HTTP the agent speaks").

    def qualify(self, key: str) -> str:
        """The full name of ``key`` for this node instance (see :func:`qualify`)."""
        return qualify(key, self.config.node_instance)

    def get(
        self,
        key: str,
        *,
        ignore_abort: bool = False,
        wait: int = 0,
        differs: str | None = None,
        deadline: float | None = None,
    ) -> str | None:
        """The value of ``key``, or None when it is not set (after the server waited ``wait``
        seconds for it to be set, or to differ from ``differs``)."""
        query = self._abort_query(ignore_abort)
        if wait:
            query["wait"] = str(wait)
            if differs is not None:
                query["differs"] = differs
        answer = self.request(
            "GET", self._param_path(key), query=query, timeout=wait + 30, deadline=deadline
        )
        if answer.status == 200:
            return answer.text()
        if answer.status == 412:
            return None
        raise refusal(answer, f"no parameter '{key}' in this run")

    def poll(
        self,
        key: str,
        *,
        wait: int,
        differs: str | None = None,
        ignore_abort: bool = False,
        deadline: float | None = None,
    ) -> str | None:
        """Like :meth:`get` with ``wait``, returning None also for an unchanged value."""
        started = time.monotonic()
        value = self.get(
            key, ignore_abort=ignore_abort, wait=wait, differs=differs, deadline=deadline
        )
        if value is None or value == differs:
            # A server that answers at once instead of holding the request would make every
            # caller spin; pausing for what is left of the wait keeps the pace it asked for.
            time.sleep(max(0.0, min(1.0, started + wait - time.monotonic())))
            return None
        return value

    def set(self, key: str, value: str, *, ignore_abort: bool = False) -> None:
        """Set ``key`` (an empty value unsets it)."""
        if len(value) > VALUE_LIMIT:
            raise ToolError(INVALID, f"a value is at most {VALUE_LIMIT} characters ('{key}')")
        self._checked(
            "PUT",
            self._param_path(key),
            f"no parameter '{key}' in this run",
            query=self._abort_query(ignore_abort),
            body=value.encode("utf-8"),
            content_type="text/plain; charset=utf-8",
        )

    def display(self, text: str, *, ignore_abort: bool = False) -> None:
        """Show ``text`` as this node instance's state (its ``statecustom``)."""
        self.set(f"{self.config.node_instance}:statecustom", text, ignore_abort=ignore_abort)

    def abort(self, reason: str) -> None:
        """Raise this node instance's abort flag, giving ``reason`` ('' clears the flag).

        It must work on a run that is already aborted: the first reason raised wins, and a
        node clears its own flag whatever the run's state.
        """
        self.set(f"{self.config.node_instance}:abort", reason, ignore_abort=True)

    def complete(self, state: str) -> bool:
        """Tell the server this node instance finished ``state``; False if the run had left it.

        ``complete`` itself names no state: ``?state=`` lets the server refuse (409) one that
        arrives after the run moved on, instead of counting it for the next state. A server
        that ignores the parameter accepts it, as SlipStream's did.
        """
        path = self._param_path(f"{self.config.node_instance}:complete")
        answer = self.request("POST", path, query={"state": state})
        if answer.status == 409:  # complete is allowed when aborted: this is the state
            log.info("completing %s refused: %s", state, answer.explanation())
            return False
        if not answer.ok:
            raise refusal(answer, f"no node instance {self.config.node_instance} in this run")
        return True

    def plan(self) -> dict[str, Any]:
        """What this node instance runs: packages, recipes per step, the scale action."""
        answer = self._checked(
            "GET",
            self._api_path("nodes", self._ni(), "plan"),
            f"no plan for {self.config.node_instance} in this run",
        )
        import json

        try:
            plan = json.loads(answer.text())
        except ValueError as exc:
            raise ToolError(CLIENT_ERROR, f"the plan is not JSON: {exc}") from exc
        if not isinstance(plan, dict):
            raise ToolError(CLIENT_ERROR, "the plan is not a JSON object")
        return plan

    def send_logs(self, lines: list[dict[str, Any]]) -> None:
        import json

        body = {"node_instance": self.config.node_instance, "lines": lines}
        self._checked(
            "POST",
            self._api_path("logs"),
            "the server has no log resource for this run",
            body=json.dumps(body).encode("utf-8"),
            content_type="application/json",
        )

    def upload_report(self, archive: bytes) -> None:
        self._checked(
            "PUT",
            self._api_path("reports", self._ni()),
            "the server has no report resource for this run",
            body=archive,
            content_type="application/gzip",
            timeout=300,
        )

    # HTTP.

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: bytes | None = None,
        content_type: str = "",
        timeout: float = 30,
        deadline: float | None = None,
    ) -> Answer:
        """Send one request, retrying as the class docstring says (``deadline`` is a
        ``time.monotonic()`` value); the last answer, or ``ToolError(UNREACHABLE)`` when the
        server could not be reached at all."""
        target = self._prefix + path
        if query:
            target += "?" + "&".join(f"{quote(k, '')}={quote(v, '')}" for k, v in query.items())
        headers = {"Authorization": f"Bearer {self.config.token}", "User-Agent": "stratus-agent"}
        if content_type:
            headers["Content-Type"] = content_type
        if body is None and method in ("PUT", "POST"):
            body = b""  # an explicit Content-Length: 0
        stop = time.monotonic() + self._retry_for
        if deadline is not None:
            stop = min(stop, deadline)
        pause = 0.2
        while True:
            outcome: Answer | OSError
            # Connecting to a host that does not answer must not outlast the period either.
            connect_timeout = min(timeout, max(1.0, stop - time.monotonic()))
            try:
                outcome = self._once(method, target, body, headers, timeout, connect_timeout)
            except OSError as exc:
                outcome = exc
            else:
                if outcome.status not in RETRIED_STATUSES:
                    return outcome
            remaining = stop - time.monotonic()
            if remaining <= 0:
                if isinstance(outcome, Answer):
                    return outcome
                raise ToolError(
                    UNREACHABLE, f"cannot reach {self.config.server}: {outcome}"
                ) from outcome
            log.info("%s %s: %s; retrying in %.1f s", method, path, _describe(outcome), pause)
            time.sleep(min(pause, remaining))  # the last try comes when the period ends
            pause = min(pause * 2, 5.0)

    def _once(
        self,
        method: str,
        target: str,
        body: bytes | None,
        headers: dict[str, str],
        timeout: float,
        connect_timeout: float,
    ) -> Answer:
        address = (self._host, self._port or (443 if self._https else 80))
        connection = connect_to(address, connect_timeout)
        try:
            connection.settimeout(timeout)
            if self._https:
                import ssl

                try:
                    connection = ssl.create_default_context().wrap_socket(
                        connection, server_hostname=self._host
                    )
                except ssl.SSLCertVerificationError as exc:  # retrying cannot mend it
                    raise ToolError(
                        UNREACHABLE, f"cannot trust {self.config.server}: {exc}"
                    ) from exc
            return exchange(connection, self._host, method, target, headers, body)
        finally:
            connection.close()

    def _checked(self, method: str, path: str, not_found: str, **request: Any) -> Answer:
        """:meth:`request`, raising the :func:`refusal` of an answer that is not a success."""
        answer = self.request(method, path, **request)
        if not answer.ok:
            raise refusal(answer, not_found)
        return answer

    @staticmethod
    def _abort_query(ignore_abort: bool) -> dict[str, str]:
        return {"ignoreabort": "true"} if ignore_abort else {}

    def _param_path(self, key: str) -> str:
        return f"/run/{self._quote(self.config.run)}/{self._quote(key)}"

    def _api_path(self, *parts: str) -> str:
        """``/api/runs/<run>/<parts...>``; the parts are given quoted."""
        return "/".join(("/api/runs", self._quote(self.config.run), *parts))

    def _ni(self) -> str:
        return self._quote(self.config.node_instance)

    @staticmethod
    def _quote(text: str) -> str:
        return quote(text, ":")


ALPHANUMERICS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_UNRESERVED = frozenset(ALPHANUMERICS + "_.-~")


def quote(text: str, safe: str) -> str:
    """urllib.parse.quote, imported only for text that needs it (names and ids rarely do)."""
    if all(char in _UNRESERVED or char in safe for char in text):
        return text
    import urllib.parse

    return urllib.parse.quote(text, safe=safe)


def split_url(url: str) -> tuple[str, str, int | None, str]:
    """(scheme, host, port, path) of the server's URL; urllib.parse only for unusual ones."""
    scheme, found, rest = url.partition("://")
    location, slash, path = rest.partition("/")
    host, colon, port_text = location.rpartition(":") if ":" in location else (location, "", "")
    if (
        found
        and scheme in ("http", "https")
        and host
        and "[" not in location
        and "@" not in location
    ):
        if not colon or port_text.isdigit():
            return scheme, host, int(port_text) if colon else None, (slash + path).rstrip("/")
        raise ToolError(USAGE, f"bad server URL {url!r}: bad port {port_text!r}")
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError as exc:
        raise ToolError(USAGE, f"bad server URL {url!r}: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ToolError(USAGE, f"bad server URL {url!r}")
    return parts.scheme, parts.hostname, port, parts.path.rstrip("/")


def connect_to(address: tuple[str, int], timeout: float) -> socket.socket:
    """socket.create_connection, minus the IDNA codec (~1.5 ms to import) that a host name
    given as text goes through even when it is an address: ASCII names are passed as bytes."""
    host, port = address
    name: str | bytes = host.encode("ascii") if host.isascii() else host
    error: OSError | None = None
    for family, kind, protocol, _, target in socket.getaddrinfo(name, port, 0, socket.SOCK_STREAM):
        connection = socket.socket(family, kind, protocol)
        try:
            connection.settimeout(timeout)
            connection.connect(target)
            return connection
        except OSError as exc:
            connection.close()
            error = exc
    raise error or OSError(f"cannot resolve {host}")


class BadAnswer(OSError):
    """What came back was not HTTP; retried like a broken connection."""


def exchange(
    connection: socket.socket,
    host: str,
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes | None,
) -> Answer:
    """One HTTP/1.1 request and its answer on ``connection``, which is closed afterwards.

    Written out rather than done with http.client, whose import (it pulls in the email
    package) would double the start-up time of every ss-* tool. The server is our own: it
    answers with a Content-Length, or chunked, and the connection is not reused.
    """
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close", "Accept: */*"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
    reader = connection.makefile("rb")
    status_line = reader.readline(65537).decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise BadAnswer(f"not an HTTP answer: {status_line[:80]!r}")
    answer_headers: dict[str, str] = {}
    while True:
        line = reader.readline(65537).decode("latin-1")
        if line in ("\r\n", "\n", ""):
            break
        name, _, value = line.partition(":")
        answer_headers[name.strip().lower()] = value.strip()
    if "chunked" in answer_headers.get("transfer-encoding", "").lower():
        data = _chunked(reader)
    elif "content-length" in answer_headers:
        length = int(answer_headers["content-length"])
        data = reader.read(length)
        if len(data) != length:
            raise BadAnswer(f"the answer was cut short ({len(data)} of {length} bytes)")
    else:
        data = reader.read()
    return Answer(int(parts[1]), data, answer_headers.get("content-type", ""))


def _chunked(reader: IO[bytes]) -> bytes:
    data = bytearray()
    while True:
        size_line = reader.readline(65537).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError as exc:
            raise BadAnswer(f"bad chunk size {size_line[:20]!r}") from exc
        if size == 0:
            while reader.readline(65537) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return bytes(data)
        data += reader.read(size)
        reader.readline(65537)  # the CRLF after the chunk


def _describe(outcome: Answer | Exception) -> str:
    if isinstance(outcome, Answer):
        return f"answered {outcome.status}"
    return f"{type(outcome).__name__}: {outcome}"


def connect(environ: Mapping[str, str]) -> RunClient:
    """A client for the configured server, run and node instance."""
    text = environ.get("STRATUS_AGENT_RETRY_FOR") or "600"
    try:
        retry_for = float(text)
    except ValueError as exc:
        raise ToolError(USAGE, f"STRATUS_AGENT_RETRY_FOR is not a number: {text!r}") from exc
    return RunClient(load_config(environ), retry_for=retry_for)


# -- the tools --------------------------------------------------------------------------------


class ToolParser:
    """The tools' command lines: options (``--name VALUE``, ``--name=VALUE``, ``-s N``,
    ``-sN``) with aliases and converters, flags (``-vv`` gives one twice), ``--`` (what
    follows are words), and positionals (a trailing ``?``, ``+`` or ``*`` in the name gives how
    many). Every tool takes SlipStream's ``-v``/``--verbose``, which changes nothing here.
    Usage errors are one-line ``ToolError(USAGE)`` like every other error.

    Not argparse: argparse (and getopt) import ``re`` and ``gettext``, ~12 ms that every
    ss-get and ss-set would pay, in a path measured in milliseconds.
    """

    def __init__(self, prog: str, description: str) -> None:
        self.prog, self.description = prog, description
        self.flags: dict[str, str] = {}  # option -> attribute
        self.options: dict[str, str] = {}  # option -> attribute
        self.defaults: dict[str, Any] = {}  # attribute -> its value when not given
        self.types: dict[str, Callable[[str], Any]] = {}  # attribute -> converter of the text
        self.positionals: list[tuple[str, str]] = []  # (attribute, "", "?", "+" or "*")
        self.lines: list[str] = []
        self.add_argument("-v", "--verbose", action="store_true", help="accepted; no effect")

    def add_argument(
        self,
        *names: str,
        action: str = "",
        default: str | None = None,
        dest: str = "",
        nargs: str = "",
        type: Callable[[str], Any] | None = None,
        help: str = "",
    ) -> None:
        attribute = dest or names[-1].lstrip("-").replace("-", "_")
        shown = ", ".join(names)
        if not names[0].startswith("-"):
            self.positionals.append((attribute, nargs))
        elif action == "store_true":
            self.flags.update(dict.fromkeys(names, attribute))
            self.defaults[attribute] = False
        else:
            self.options.update(dict.fromkeys(names, attribute))
            self.defaults[attribute] = default
            shown += " VALUE"
        if type is not None:
            self.types[attribute] = type
        self.lines.append(f"  {shown:<20} {help}")

    def parse_args(self, argv: list[str]) -> Any:
        from types import SimpleNamespace

        values = dict(self.defaults)
        words: list[str] = []
        items = iter(argv)
        for item in items:
            if item == "--":  # what follows are words, even if they start with "-"
                words.extend(items)
            elif item == "-" or not item.startswith("-"):
                words.append(item)
            elif item in ("-h", "--help"):
                print(self.usage())
                raise SystemExit(OK)
            elif item in self.flags:
                values[self.flags[item]] = True
            elif item[1] != "-" and all(f"-{letter}" in self.flags for letter in item[1:]):
                values.update((self.flags[f"-{letter}"], True) for letter in item[1:])
            else:
                name, value = self._option(item, items)
                values[self.options[name]] = value
        for attribute, nargs in self.positionals:
            if nargs in ("+", "*"):
                if nargs == "+" and not words:
                    raise ToolError(USAGE, f"{attribute} is missing (see {self.prog} --help)")
                values[attribute], words = words, []
            elif words:
                values[attribute] = words.pop(0)
            elif nargs == "?":
                values[attribute] = None
            else:
                raise ToolError(USAGE, f"{attribute} is missing (see {self.prog} --help)")
        if words:
            raise ToolError(USAGE, f"too many arguments: {' '.join(words)}")
        for attribute, convert in self.types.items():
            if values[attribute] is not None:
                values[attribute] = convert(values[attribute])
        return SimpleNamespace(**values)

    def usage(self) -> str:
        return "\n".join([f"usage: {self.prog} [OPTIONS] ...", self.description, *self.lines])

    def _option(self, item: str, items: Any) -> tuple[str, str]:
        name, equals, value = item.partition("=")
        if name not in self.options and item[:2] in self.options and not item.startswith("--"):
            name, equals, value = item[:2], "=", item[2:]  # -s20
        if name not in self.options:
            raise ToolError(USAGE, f"unknown option {name} (see {self.prog} --help)")
        if equals:
            return name, value
        following: str | None = next(items, None)
        if following is None:
            raise ToolError(USAGE, f"{name} needs a value")
        return name, following


def _seconds(text: str) -> float:
    import math

    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not math.isfinite(seconds) or seconds < 0:
        raise ToolError(INVALID, f"invalid timeout {text!r}: give seconds, 0 for no limit")
    return seconds


def _size(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise ToolError(INVALID, f"invalid size {text!r}: give a positive number")
    return int(text)


def _wait_options(parser: ToolParser) -> None:
    """The options of the tools that wait for values to be set."""
    parser.add_argument("--timeout", default="60", type=_seconds, help="seconds (0: for ever)")
    parser.add_argument("--noblock", action="store_true", help="do not wait: exit 1 if unset")


def _ignore_abort_option(parser: ToolParser) -> None:
    parser.add_argument("--ignore-abort", action="store_true", help="work on an aborted run")


def wait_for(
    client: RunClient,
    key: str,
    *,
    timeout: float,
    started: float,
    noblock: bool = False,
    ignore_abort: bool = False,
) -> str:
    """The value of ``key``, waiting (long-polls of at most a minute) until ``timeout``
    seconds after ``started`` (0: for ever) for it to be set. Retrying a server that is down
    stops then too, and after ``NOBLOCK_RETRY_FOR`` seconds with ``noblock``."""
    import math

    if noblock:
        deadline = time.monotonic() + NOBLOCK_RETRY_FOR
        value = client.get(key, ignore_abort=ignore_abort, deadline=deadline)
        if value is None:
            raise ToolError(NOT_SET, f"'{key}' is not set")
        return value
    ends = started + timeout if timeout else None
    while True:
        remaining = ends - time.monotonic() if ends is not None else MAX_WAIT
        if remaining <= 0:
            raise ToolError(TIMED_OUT, f"timed out after {timeout:g} s waiting for '{key}'")
        wait = min(MAX_WAIT, max(1, math.ceil(remaining)))
        value = client.poll(key, wait=wait, ignore_abort=ignore_abort, deadline=ends)
        if value is not None:
            return value


def random_text(size: int) -> str:
    """``size`` random letters and digits, from os.urandom (``secrets`` costs ~8 ms to import).

    A byte below 248 (4 x 62) stands for ``ALPHANUMERICS[byte % 62]``, each character four
    times; the 8 bytes above are drawn again, so that every character is equally likely.
    """
    drawn: list[str] = []
    while len(drawn) < size:
        drawn += [ALPHANUMERICS[byte % 62] for byte in os.urandom(size + 8) if byte < 248]
    return "".join(drawn[:size])


KEY_HELP = "node.i:param, node:param, ss:param or param (own)"


def ss_get(argv: list[str]) -> int:
    parser = ToolParser(prog="ss-get", description="Print a runtime parameter's value.")
    _wait_options(parser)
    _ignore_abort_option(parser)
    parser.add_argument("key", help=KEY_HELP)
    args = parser.parse_args(argv)
    client = connect(os.environ)
    value = wait_for(
        client,
        client.qualify(args.key),
        timeout=args.timeout,
        started=time.monotonic(),
        noblock=args.noblock,
        ignore_abort=args.ignore_abort,
    )
    print(value)
    return OK


def ss_set(argv: list[str]) -> int:
    parser = ToolParser(prog="ss-set", description="Set a runtime parameter.")
    _ignore_abort_option(parser)
    parser.add_argument("key", help=KEY_HELP)
    parser.add_argument("value", help="the value (empty unsets it)")
    args = parser.parse_args(argv)
    client = connect(os.environ)
    client.set(client.qualify(args.key), args.value, ignore_abort=args.ignore_abort)
    return OK


def ss_display(argv: list[str]) -> int:
    parser = ToolParser(prog="ss-display", description="Show a message as this node's state.")
    _ignore_abort_option(parser)
    parser.add_argument("text", nargs="+", help="the message")
    args = parser.parse_args(argv)
    connect(os.environ).display(" ".join(args.text), ignore_abort=args.ignore_abort)
    return OK


def ss_abort(argv: list[str]) -> int:
    parser = ToolParser(prog="ss-abort", description="Abort the run, giving a reason.")
    parser.add_argument("--cancel", action="store_true", help="clear this node's own abort flag")
    parser.add_argument("reason", nargs="*", help="why (the first reason raised wins)")
    args = parser.parse_args(argv)
    client = connect(os.environ)
    default = f"aborted by ss-abort on {client.config.node_instance}"
    client.abort("" if args.cancel else " ".join(args.reason) or default)
    return OK


def ss_random(argv: list[str]) -> int:
    parser = ToolParser(prog="ss-random", description="Print random letters and digits.")
    parser.add_argument("-s", "--size", default="12", type=_size, help="how many (default 12)")
    parser.add_argument("key", nargs="?", help="also set this runtime parameter to them")
    args = parser.parse_args(argv)
    value = random_text(args.size)
    if args.key:
        client = connect(os.environ)
        client.set(client.qualify(args.key), value)
    print(value)
    return OK


def ss_get_all(argv: list[str]) -> int:
    parser = ToolParser(prog="ss-get-all", description="Print a parameter of every instance.")
    parser.add_argument("--value", help="exit 1 if any instance's value differs from this one")
    _wait_options(parser)
    _ignore_abort_option(parser)
    parser.add_argument("node", help="the node's name, e.g. web")
    parser.add_argument("key", help="the parameter's bare name, e.g. ready")
    args = parser.parse_args(argv)
    if ":" in args.key or ":" in args.node or "." in args.node:
        raise ToolError(USAGE, "give a node name and a bare parameter name: ss-get-all web ready")
    client = connect(os.environ)
    started = time.monotonic()  # one deadline for all the values, not one per instance

    def value_of(key: str) -> str:
        return wait_for(
            client,
            key,
            timeout=args.timeout,
            started=started,
            noblock=args.noblock,
            ignore_abort=args.ignore_abort,
        )

    ids = [i.strip() for i in value_of(f"{args.node}:ids").split(",") if i.strip()]
    values = [(f"{args.node}.{i}:{args.key}", value_of(f"{args.node}.{i}:{args.key}")) for i in ids]
    for key, value in values:
        print(key, value)
    different = [key for key, value in values if args.value is not None and value != args.value]
    if different:
        raise ToolError(NOT_SET, f"{', '.join(different)} not equal to {args.value!r}")
    return OK


TOOLS: dict[str, Callable[[list[str]], int]] = {
    "ss-get": ss_get,
    "ss-set": ss_set,
    "ss-display": ss_display,
    "ss-abort": ss_abort,
    "ss-random": ss_random,
    "ss-get-all": ss_get_all,
}
TOOL_NAMES = tuple(TOOLS)


def run_tool(name: str, argv: list[str]) -> int:
    try:
        return TOOLS[name](argv)
    except ToolError as exc:
        print(f"{name}: {exc.message}", file=sys.stderr)
        return exc.code


# -- the agent's parts ------------------------------------------------------------------------


class StateFollower:
    """Follows ``ss:state`` for the agent's whole life, by long-poll, in its own thread.

    ``state`` is the last value seen ('' before the first); a failure that ends the following
    (the server unreachable for longer than the retry period, the token refused) is raised
    again in the thread that waits in :meth:`next_state`.
    """

    def __init__(self, client: RunClient) -> None:
        import threading

        self.state = ""
        self._client = client
        self._error: Exception | None = None
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._follow, name="ss:state", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def next_state(self, seen: str) -> str:
        """Block until ``ss:state`` is something else than ``seen``, and return it."""
        with self._changed:
            self._changed.wait_for(lambda: self._error is not None or self.state != seen)
            if self._error is not None:
                raise self._error
            return self.state

    def _follow(self) -> None:
        try:
            while True:
                value = self._client.poll(
                    "ss:state", wait=MAX_WAIT, differs=self.state or None, ignore_abort=True
                )
                if value is not None:
                    with self._changed:
                        self.state = value
                        self._changed.notify_all()
        except Exception as exc:  # whatever it is, the main thread must hear of it
            with self._changed:
                self._error = exc
                self._changed.notify_all()


class LogShipper:
    """Sends recipe output lines to the server in batches, every half second, in a thread.

    Losing output is better than stalling a run, so a batch the server refuses is dropped
    (and said so in agent.log); the log files keep every line in any case.
    """

    def __init__(self, client: RunClient) -> None:
        import threading

        self._client = client
        self._pending: list[dict[str, Any]] = []
        self._sending = False
        self._cond = threading.Condition()
        threading.Thread(target=self._loop, name="log shipper", daemon=True).start()

    def add(self, line: dict[str, Any]) -> None:
        with self._cond:
            self._pending.append(line)

    def flush(self, timeout: float = 30) -> None:
        """Wait until every line added so far has been sent (or ``timeout`` passed)."""
        with self._cond:
            self._cond.wait_for(lambda: not self._pending and not self._sending, timeout)

    def _loop(self) -> None:
        while True:
            time.sleep(0.5)
            with self._cond:
                batch, self._pending = self._pending, []
                self._sending = bool(batch)
            for start in range(0, len(batch), LOG_BATCH):
                try:
                    self._client.send_logs(batch[start : start + LOG_BATCH])
                except Exception as exc:  # the shipper must outlive any one failure
                    log.warning("recipe output not sent: %s", exc)
            with self._cond:
                self._sending = False
                self._cond.notify_all()


class Markers:
    """What this node instance has done in each state of the run, kept on disk.

    A scalable run goes round Provisioning -> ... -> Ready once per scale action: each round is
    a cycle. The file ``<cycle>-<State>`` records that the state was handled, and holds
    ``complete`` while the agent still owes the server a ``complete`` for it, ``completed``
    once posted, or ``done`` when it posts none (a failed Executing). A restarted agent thus
    neither repeats a state nor forgets to complete it.
    """

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._dir = directory
        handled = [
            (int(cycle), BARRIER_STATES.index(state))
            for cycle, _, state in (path.name.partition("-") for path in directory.iterdir())
            if cycle.isdigit() and state in BARRIER_STATES
        ]
        self.cycle, last = max(handled, default=(0, -1))
        self.last = BARRIER_STATES[last] if last >= 0 else ""

    def begin(self, state: str) -> bool:
        """Whether ``state`` is new to this agent (then it becomes the current one). A state
        earlier in the round than the last one handled starts a new cycle."""
        if state == self.last:
            return False
        if not self.last or BARRIER_STATES.index(state) < BARRIER_STATES.index(self.last):
            self.cycle += 1
        self.last = state
        return True

    def record(self, state: str, status: str) -> None:
        (self._dir / f"{self.cycle}-{state}").write_text(status, encoding="utf-8")

    def status(self, state: str) -> str:
        try:
            return (self._dir / f"{self.cycle}-{state}").read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""

    def executed_before(self) -> bool:
        """Whether an earlier cycle went through Executing (scaling hooks, not recipes, then)."""
        return any((self._dir / f"{cycle}-Executing").exists() for cycle in range(1, self.cycle))


class Step:
    """One process the agent runs for a state: a recipe, or an apt-get command."""

    __slots__ = ("command", "env", "module", "n", "name", "state")

    def __init__(
        self, state: str, name: str, n: int, module: str, command: list[str], env: dict[str, str]
    ) -> None:
        self.state = state  # the run state it belongs to
        self.name = name  # pre-install, packages, post-install, deployment, report, on-vm-add, ...
        self.n = n  # its place in that step's list, from 1
        self.module = module  # the module whose recipe it is (for packages, the apt-get command)
        self.command = command
        self.env = env

    @property
    def label(self) -> str:
        return f"{self.state}-{self.name}-{self.n}"


class Outcome:
    __slots__ = ("code", "interrupted", "last_error_line")

    def __init__(self, code: int, last_error_line: str, interrupted: bool) -> None:
        self.code = code  # the exit code; a death by signal N counts as 128 + N, as a shell says
        self.last_error_line = last_error_line  # the last non-blank line of its stderr
        self.interrupted = interrupted  # stopped by the agent because the run left the step's state


class StepOutput:
    """Where the lines of a running step go: its log file, the server, and its stderr tail.

    The file is opened per line: the readers of a step can outlive it (a daemon the recipe
    started keeps the pipes open), and nothing then has to decide when to close it.
    """

    def __init__(self, step: Step, path: Path, shipper: LogShipper) -> None:
        import threading

        self.last_error_line = ""
        self._step = step
        self._path = path
        self._shipper = shipper
        self._lock = threading.Lock()

    def line(self, stream: str, text: str) -> None:
        with self._lock, self._path.open("a", encoding="utf-8") as file:
            file.write(text + "\n")
            if stream == "stderr" and text.strip():
                self.last_error_line = text.strip()
        self._shipper.add(
            {
                "t": round(time.time(), 3),
                "state": self._step.state,
                "recipe": self._step.name,
                "stream": stream,
                "text": text[:LOG_LINE_LIMIT],
            }
        )


def _pump(pipe: IO[bytes] | None, stream: str, output: StepOutput) -> None:
    if pipe is None:
        return
    with pipe:
        for raw in iter(pipe.readline, b""):
            output.line(stream, raw.decode("utf-8", "replace").rstrip("\r\n"))


def _signal_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to a process group; whether anything (even a zombie) was left in it."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:  # something is there, just not ours to signal
        pass
    return True


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the step's process group, SIGKILL to what is left of it 5 s later."""
    import signal

    _signal_group(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if process.poll() is not None and not _signal_group(process.pid, 0):
            return
        time.sleep(0.1)
    _signal_group(process.pid, signal.SIGKILL)
    process.wait()


# -- the agent --------------------------------------------------------------------------------


class Agent:
    """``stratus_agent.py run``: follows the run's state and does this node's part of each."""

    def __init__(self, client: RunClient, locations: Locations, environ: Mapping[str, str]) -> None:
        self.client = client
        self.config = client.config
        self.locations = locations
        self.environ = environ
        self.follower = StateFollower(client)
        self.shipper = LogShipper(client)
        self.markers = Markers(locations.state_dir / "markers" / self.config.run)

    def run(self) -> int:
        """Handle each state once, until the run reaches a final state (then exit 0)."""
        # Created, never emptied: it is named by the environment, and the agent runs as root.
        self.locations.report_dir.mkdir(parents=True, exist_ok=True)
        (self.locations.state_dir / "recipes").mkdir(parents=True, exist_ok=True)
        self.locations.workdir.mkdir(parents=True, exist_ok=True)
        self.follower.start()
        log.info("agent of %s in run %s started", self.config.node_instance, self.config.run)
        state = ""
        while True:
            state = self.follower.next_state(state)
            log.info("ss:state is %s", state)
            if state in FINAL_STATES:
                self.shipper.flush()
                log.info("the run is over (%s): agent exits", state)
                return OK
            if state not in BARRIER_STATES:
                continue  # Initializing: nothing for a node to do yet
            if self.markers.begin(state):
                status = "complete" if self._handle(state) else "done"
                self.markers.record(state, status)
            else:  # handled before this agent started: what it still owes is on disk
                status = self.markers.status(state)
            if status == "complete":
                self._complete(state)

    def _handle(self, state: str) -> bool:
        """Do this node's part of ``state``; whether it should then post ``complete``."""
        if state == "Executing":
            return self._execute()
        if state == "SendingReports":
            return self._send_reports()
        return True  # Provisioning and Ready: nothing to do but say so

    def _complete(self, state: str) -> None:
        self.shipper.flush()
        if self.follower.state == state and self.client.complete(state):
            self.markers.record(state, "completed")
            log.info("%s complete", state)
        else:  # completing it now could count for the state the run is in
            self.markers.record(state, "done")
            log.info("the run left %s before this node completed it", state)

    def _execute(self) -> bool:
        try:
            plan = self.client.plan()
        except ToolError as exc:  # without recipes the run cannot succeed: say why at once
            self._abort(f"{self.config.node_instance}: no plan for Executing: {exc.message}")
            return False
        scaling = plan.get("scaling")
        if isinstance(scaling, dict) and self.markers.executed_before():
            action = str(scaling.get("action") or "")
            env = {
                "SLIPSTREAM_SCALING_NODE": str(scaling.get("node") or ""),
                "SLIPSTREAM_SCALING_VMS": str(scaling.get("vms") or ""),
                "SLIPSTREAM_SCALING_ACTION": action,
            }
            steps = self._recipe_steps("Executing", SCALING_HOOKS.get(action, ""), plan, env)
        else:
            steps = [
                *self._recipe_steps("Executing", "pre-install", plan),
                *self._package_steps(plan),
                *self._recipe_steps("Executing", "post-install", plan),
                *self._recipe_steps("Executing", "deployment", plan),
            ]
        for step in steps:
            outcome = self._run_step(step)
            if outcome.interrupted:
                return False
            if outcome.code != 0:
                self._abort(self._reason(step, outcome))
                return False
        return True

    def _send_reports(self) -> bool:
        try:
            plan = self.client.plan()
        except ToolError as exc:  # the logs still make a report worth sending
            log.error("no report recipes: %s", exc.message)
            plan = {}
        for step in self._recipe_steps("SendingReports", "report", plan):
            outcome = self._run_step(step)
            if outcome.interrupted:
                return False
            if outcome.code != 0:
                log.warning("%s (a report recipe: the run goes on)", self._reason(step, outcome))
        try:
            self.client.upload_report(self._pack_report())
            log.info("report uploaded")
        except ToolError as exc:
            log.error("report not uploaded: %s", exc.message)
        return True

    def _recipe_steps(
        self, state: str, name: str, plan: Mapping[str, Any], env: Mapping[str, str] | None = None
    ) -> list[Step]:
        """The recipes of step ``name``, written to the state directory, parents first."""
        recipes = plan.get("recipes")
        entries = recipes.get(name) if isinstance(recipes, dict) else None
        steps = []
        for n, recipe in enumerate(entries if isinstance(entries, list) else [], start=1):
            script = str(recipe.get("script") or "") if isinstance(recipe, dict) else ""
            module = str(recipe.get("module") or "") if isinstance(recipe, dict) else ""
            path = self.locations.state_dir / "recipes" / f"{state}-{name}-{n}"
            path.write_text(script, encoding="utf-8")
            path.chmod(0o700)
            command = [str(path)] if script.startswith("#!") else ["/bin/bash", "-e", str(path)]
            steps.append(Step(state, name, n, module, command, dict(env or {})))
        return steps

    def _package_steps(self, plan: Mapping[str, Any]) -> list[Step]:
        packages = plan.get("packages")
        if not isinstance(packages, list) or not packages:
            return []
        apt = self.environ.get("STRATUS_AGENT_APT") or "apt-get"
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        return [
            Step("Executing", "packages", 1, "apt-get update", [apt, "update"], env),
            Step(
                "Executing",
                "packages",
                2,
                "apt-get install",
                [apt, "install", "-y", *(str(package) for package in packages)],
                env,
            ),
        ]

    def _run_step(self, step: Step) -> Outcome:
        """Run one step as its own process group, its output read by two threads, while
        watching that the run stays in the step's state."""
        import subprocess
        import threading

        if step.state == "Executing":  # report steps leave the recipes' last ss-display shown
            self._display(f"{step.state}: {step.name} ({step.module})")
        log.info("%s: %s", step.label, " ".join(step.command))
        output = StepOutput(step, self.locations.log_dir / f"{step.label}.log", self.shipper)
        try:
            process = subprocess.Popen(
                step.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=self.locations.workdir,
                env=self._recipe_env(step.env),
                start_new_session=True,
            )
        except OSError as exc:
            output.line("stderr", f"cannot run {step.command[0]}: {exc}")
            return Outcome(127, output.last_error_line, interrupted=False)
        readers = [
            threading.Thread(target=_pump, args=(process.stdout, "stdout", output), daemon=True),
            threading.Thread(target=_pump, args=(process.stderr, "stderr", output), daemon=True),
        ]
        for reader in readers:
            reader.start()
        interrupted = self._wait(process, step.state)
        for reader in readers:
            reader.join(timeout=2)  # a daemon the recipe started may hold the pipes for ever
        code = process.returncode if process.returncode >= 0 else 128 - process.returncode
        log.info("%s: exited with %d%s", step.label, code, " (stopped)" if interrupted else "")
        return Outcome(code, output.last_error_line, interrupted)

    def _wait(self, process: subprocess.Popen[bytes], state: str) -> bool:
        """Wait for the step; stop it, and say so, if the run leaves ``state`` meanwhile."""
        import subprocess

        while True:
            try:
                process.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                if self.follower.state != state:
                    log.warning("the run left %s: stopping the step", state)
                    _stop(process)
                    return True
            else:
                return False

    def _recipe_env(self, extra: Mapping[str, str]) -> dict[str, str]:
        env = dict(self.environ)
        path = [str(self.locations.bin_dir), "/usr/local/bin", *env.get("PATH", "").split(":")]
        env.update(
            {
                "SLIPSTREAM_SERVICEURL": self.config.server,
                "SLIPSTREAM_DIID": self.config.run,
                "SLIPSTREAM_NODE_INSTANCE_NAME": self.config.node_instance,
                "SLIPSTREAM_REPORT_DIR": str(self.locations.report_dir),
                "STRATUS_AGENT_CONF": str(self.config.path),
                # Recipes run as root beside the file that holds it: giving them the token
                # spares every ss-* call in a recipe reading (and parsing) that file.
                "STRATUS_NODE_TOKEN": self.config.token,
                "PATH": ":".join(dict.fromkeys(part for part in path if part)),
            }
        )
        env.setdefault("HOME", str(self.locations.workdir))  # systemd gives services none
        env.update(extra)
        return env

    def _reason(self, step: Step, outcome: Outcome) -> str:
        reason = (
            f"{self.config.node_instance}: {step.name} recipe of {step.module} "
            f"exited with {outcome.code}"
        )
        if outcome.last_error_line:
            reason += f": {outcome.last_error_line}"
        return reason[:VALUE_LIMIT]

    def _abort(self, reason: str) -> None:
        log.error("aborting the run: %s", reason)
        try:
            self.client.abort(reason)
        except ToolError as exc:
            log.error("could not raise the abort flag: %s", exc.message)

    def _display(self, text: str) -> None:
        """Set this node's statecustom, even on an aborted run: the step runs until the run
        leaves its state, and people looking at the run want to see where each node was.
        It is only shown to people, so failing is logged, not raised."""
        try:
            self.client.display(text[:VALUE_LIMIT], ignore_abort=True)
        except ToolError as exc:
            log.warning("statecustom not set: %s", exc.message)

    def _pack_report(self) -> bytes:
        """A .tar.gz of the log directory (as logs/) and the report directory (as reports/)."""
        import io
        import tarfile

        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            for directory, name in (
                (self.locations.log_dir, "logs"),
                (self.locations.report_dir, "reports"),
            ):
                for path in sorted(directory.rglob("*")):
                    try:
                        archive.add(path, f"{name}/{path.relative_to(directory)}", recursive=False)
                    except OSError as exc:  # a file that went away: the rest still matters
                        log.warning("left out of the report: %s (%s)", path, exc)
        return buffer.getvalue()


def _try_lock(state_dir: Path) -> IO[str] | None:
    """The agent's lock (``agent.pid``), held by the running agent; None if another has it."""
    import fcntl

    state_dir.mkdir(parents=True, exist_ok=True)
    # Held open for the agent's life; "a+" so that a contender does not wipe the running
    # agent's pid before it gets the lock.
    handle = (state_dir / "agent.pid").open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def agent_main(environ: Mapping[str, str]) -> int:
    import logging

    locations = Locations(environ)
    locations.log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(locations.log_dir / "agent.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    lock = _try_lock(locations.state_dir)
    if lock is None:
        log.info("another agent is running: leaving the run to it")
        return OK
    with lock:
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        try:
            return Agent(connect(environ), locations, environ).run()
        except ToolError as exc:
            log.error("agent stopped: %s", exc.message)
            print(f"stratus-agent: {exc.message}", file=sys.stderr)
            return exc.code
        except Exception:
            log.exception("agent failed")
            raise


# -- install ----------------------------------------------------------------------------------


def _unit_text(agent: Path, environ: Mapping[str, str]) -> str:
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


def install_tools(bin_dir: Path, agent: Path) -> None:
    """Write the ss-* tools into ``bin_dir``: small launchers that import the agent module.

    Imported, the module's bytecode is cached (and compiled here, once); run as a script it
    would be compiled at every call, ~13 ms of each ss-get and ss-set. ``-E`` keeps PYTHON*
    variables a recipe may set from changing the tools, ``-S`` skips site-packages they do
    not need.
    """
    import py_compile

    py_compile.compile(str(agent), doraise=True)
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in TOOL_NAMES:
        text = (
            f"#!{sys.executable} -ES\n"
            f"# {name}: a StratusLab node tool (docs/agent.md), run from {agent}\n"
            "import sys\n"
            f"sys.path.insert(0, {str(agent.parent)!r})\n"
            f"from {agent.stem} import main\n"
            "sys.exit(main())\n"
        )
        tool = bin_dir / name
        if tool.is_symlink() or (tool.exists() and tool.read_text(encoding="utf-8") != text):
            tool.unlink()  # an older install made symlinks to the agent file itself
        if not tool.exists():
            tool.write_text(text, encoding="utf-8")
        tool.chmod(0o755)


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

    locations = Locations(environ)
    from pathlib import Path

    agent = Path(__file__).resolve()
    install_tools(locations.bin_dir, agent)
    locations.unit_dir.mkdir(parents=True, exist_ok=True)
    unit = locations.unit_dir / UNIT_NAME
    text = _unit_text(agent, environ)
    if not unit.exists() or unit.read_text(encoding="utf-8") != text:
        unit.write_text(text, encoding="utf-8")
    if _use_systemd(environ):
        subprocess.run(["systemctl", "daemon-reload"], check=True)
        subprocess.run(["systemctl", "start", "--no-block", "stratus-agent"], check=True)
        return f"tools written in {locations.bin_dir}; {UNIT_NAME} started"
    lock = _try_lock(locations.state_dir)
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


# -- dispatch ---------------------------------------------------------------------------------


def main() -> int:
    args = sys.argv
    called_as = args[0].rsplit("/", 1)[-1]
    if called_as in TOOLS:
        return run_tool(called_as, args[1:])
    command = args[1] if len(args) > 1 else ""
    if command in TOOLS:
        return run_tool(command, args[2:])
    if args[1:] == ["run"]:
        return agent_main(os.environ)
    if args[1:] == ["install"]:
        import subprocess

        try:
            print(install(os.environ))
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"{called_as} install: {exc}", file=sys.stderr)
            return 1
        return OK
    if args[1:2] == ["install-tools"] and len(args) == 3:
        from pathlib import Path

        install_tools(Path(args[2]), Path(__file__).resolve())
        return OK
    tools = " | ".join(TOOL_NAMES)
    print(
        f"usage: {called_as} run | install | install-tools DIR | {tools} ARGS...", file=sys.stderr
    )
    return USAGE


if __name__ == "__main__":
    sys.exit(main())
