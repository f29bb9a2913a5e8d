"""The run's resources on the server, as one node instance sees them (docs/agent.md, "The HTTP
the agent speaks"), and how a refusal becomes an exit code."""

from __future__ import annotations

import time

from .config import Config, load_config, retry_period
from .exits import (
    ABORTED,
    CLIENT_ERROR,
    INVALID,
    SERVER_FAILED,
    UNAUTHORISED,
    UNREACHABLE,
    ToolError,
)
from .logger import log
from .protocol import MAX_VALUE, qualify
from .wire import Answer, connect_to, exchange, quote, secure, split_url, trusting

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing; mypy knows the name
if TYPE_CHECKING:
    import _socket
    import _ssl
    from collections.abc import Mapping
    from typing import Any

    from .wire import Secured

RETRIED_STATUSES = (502, 503, 504)


def explanation(answer: Answer) -> str:
    """The server's own words for a failure, on one line ('' when it gave none)."""
    text = answer.text().strip()
    if answer.content_type.startswith("application/json"):
        text = _json_message(text)
    elif not answer.content_type.startswith("text/plain"):
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
    detail = explanation(answer)
    if answer.status == 409 and (answer.aborted or not detail):
        return ToolError(
            ABORTED, f"the run is aborted: {detail}" if detail else "the run is aborted"
        )
    if answer.status == 409:  # another conflict: a key the server owns, a run that is over
        return ToolError(CLIENT_ERROR, detail)
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
        self._tls: _ssl._SSLContext | None = None  # made on the first request: tools pay once
        self._host = host
        self._port = port
        self._prefix = prefix
        self._retry_for = retry_for

    # The protocol.

    def qualify(self, key: str) -> str:
        """The full name of ``key`` for this node instance (see ``protocol.qualify``)."""
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

    def set(
        self, key: str, value: str, *, ignore_abort: bool = False, secret: bool = False
    ) -> None:
        """Set ``key`` (an empty value unsets it); ``secret`` makes it secret on the server for
        good (masked in listings, redacted from logs)."""
        if len(value) > MAX_VALUE:
            raise ToolError(INVALID, f"a value is at most {MAX_VALUE} characters ('{key}')")
        query = self._abort_query(ignore_abort)
        if secret:
            query["secret"] = "true"  # noqa: S105 - a flag, not a password
        self._checked(
            "PUT",
            self._param_path(key),
            f"no parameter '{key}' in this run",
            query=query,
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
            log.info("completing %s refused: %s", state, explanation(answer))
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
        raw = connect_to(address, connect_timeout)
        connection: _socket.socket | Secured = raw
        try:
            raw.settimeout(timeout)
            if self._https:
                import _ssl

                if self._tls is None:
                    self._tls = trusting(self.config.ca)
                try:
                    connection = secure(raw, self._host, self._tls)
                except _ssl.SSLCertVerificationError as exc:  # retrying cannot mend it
                    raise ToolError(
                        UNREACHABLE,
                        f"cannot trust {self.config.server}: {exc.verify_message or exc}; "
                        "it is not the server the site CA vouches for",
                    ) from exc
            return exchange(connection, self._host, method, target, headers, body)
        finally:
            connection.close()
            raw.close()  # detached once secured: closing it then does nothing

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


def _describe(outcome: Answer | Exception) -> str:
    if isinstance(outcome, Answer):
        return f"answered {outcome.status}"
    return f"{type(outcome).__name__}: {outcome}"


def connect(environ: Mapping[str, str]) -> RunClient:
    """A client for the configured server, run and node instance."""
    retry_for = retry_period(environ)
    return RunClient(load_config(environ), retry_for=retry_for)
