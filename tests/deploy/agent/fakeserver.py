"""A fake run server, for what the real one cannot be made to do on purpose.

The agent's behaviour against a run is tested on the real server (tests/deploy/realserver.py).
This one is for faults and chosen moments: answering a status of the test's choosing for a key
(``fail``), going down and coming back on the same port (:meth:`FakeServer.stop` and
:meth:`FakeServer.start`), holding a state (``advance_on_complete=False``) or moving it when
the test says, handing out no plan, and recording every request the agent made. Otherwise it
moves the run on as the real server does: barriers over the node instances, an abort before
SendingReports goes there, Ready (or SendingReports after an abort) goes to Finalizing.
Parameters are not declared: any key can be set, and one never set answers 412.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

NEXT_STATE = {
    "Provisioning": "Executing",
    "Executing": "SendingReports",
    "SendingReports": "Ready",
    "Ready": "Finalizing",
}
BEFORE_REPORTS = ("Initializing", "Provisioning", "Executing")  # an abort here goes to reports


@dataclass
class FakeRun:
    """One run: its parameters, what the nodes posted, and the plans it hands out."""

    run_id: str = "6a1f0c1e-run"
    token: str = "node-token"
    instances: tuple[str, ...] = ("web.1",)
    advance_on_complete: bool = True  # move ss:state on as the server would; False: the test does
    plans: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail: dict[str, int] = field(default_factory=dict)  # key -> status answered instead
    values: dict[str, str] = field(default_factory=dict)
    completes: list[tuple[str, str]] = field(default_factory=list)  # (instance, state)
    log_lines: list[dict[str, Any]] = field(default_factory=list)
    reports: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path with query)
    completed_now: set[str] = field(default_factory=set)  # who completed the current state
    cond: threading.Condition = field(default_factory=threading.Condition)

    # What a test does.

    def set(self, key: str, value: str) -> None:
        with self.cond:
            self._set(key, value)

    def get(self, key: str) -> str:
        with self.cond:
            return self.values.get(key, "")

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 10) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)

    def lines(self, **match: str) -> list[dict[str, Any]]:
        with self.cond:
            return [
                line
                for line in self.log_lines
                if all(line.get(name) == value for name, value in match.items())
            ]

    # What the handler does (called with cond held).

    def _set(self, key: str, value: str) -> None:
        if value:
            self.values[key] = value
        else:
            self.values.pop(key, None)
        if key.partition(":")[2] == "abort" and value and not self.values.get("ss:abort"):
            self.values["ss:abort"] = value  # the first reason wins
            if self.advance_on_complete and self.values.get("ss:state") in BEFORE_REPORTS:
                self._set("ss:state", "SendingReports")
        if key == "ss:state":
            self.completed_now = set()
        self.cond.notify_all()

    def _complete(self, instance: str) -> None:
        state = self.values.get("ss:state", "")
        self.completes.append((instance, state))
        self.completed_now.add(instance)
        if (
            self.advance_on_complete
            and set(self.instances) <= self.completed_now
            and state in NEXT_STATE
        ):
            aborted = state == "SendingReports" and self.values.get("ss:abort")
            self._set("ss:state", "Finalizing" if aborted else NEXT_STATE[state])
        self.cond.notify_all()


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test output is for the tests."""

    def do_GET(self) -> None:
        self._route("GET")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_POST(self) -> None:
        self._route("POST")

    def _route(self, method: str) -> None:
        run = self.server.run
        url = urlsplit(self.path)
        path = unquote(url.path)
        query = {name: values[-1] for name, values in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with run.cond:
            run.requests.append((method, self.path))
            run.cond.notify_all()
        if self.headers.get("Authorization") != f"Bearer {run.token}":
            return self._answer(401, "this token is not valid for this run")
        prefix = f"/run/{run.run_id}/"
        api = f"/api/runs/{run.run_id}/"
        if path.startswith(prefix):
            key = path[len(prefix) :]
            if key in run.fail:
                return self._answer(run.fail[key], "the server is having a bad day")
            if method == "POST" and key.endswith(":complete"):
                return self._complete(key[: -len(":complete")], query.get("state"))
            if method == "GET":
                return self._get(key, query)
            if method == "PUT":
                return self._put(key, body.decode("utf-8"), query)
        if method == "GET" and path.startswith(api + "nodes/") and path.endswith("/plan"):
            instance = path[len(api + "nodes/") : -len("/plan")]
            if instance in run.plans:
                return self._answer(200, json.dumps(run.plans[instance]), "application/json")
        if method == "POST" and path == api + "logs":
            data = json.loads(body)
            with run.cond:
                run.log_lines += [{**line, "node": data["node_instance"]} for line in data["lines"]]
                run.cond.notify_all()
            return self._answer(204, "")
        if method == "PUT" and path.startswith(api + "reports/"):
            with run.cond:
                run.reports[path[len(api + "reports/") :]] = body
                run.cond.notify_all()
            return self._answer(201, "")
        return self._answer(404, f"nothing at {path}")

    def _get(self, key: str, query: dict[str, str]) -> None:
        run = self.server.run
        wait = min(float(query.get("wait", "0")), 60)
        differs = query.get("differs")
        deadline = time.monotonic() + wait
        with run.cond:
            while True:
                reason = run.values.get("ss:abort", "")
                if reason and query.get("ignoreabort") != "true":
                    return self._answer(409, reason, aborted=True)
                value = run.values.get(key, "")
                if value and (differs is None or value != differs):
                    return self._answer(200, value)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.server.stopping:
                    break
                run.cond.wait(remaining)
        if self.server.stopping:
            self.close_connection = True  # a dying server answers nothing
            return None
        return self._answer(412, f"'{key}' is not set")

    def _put(self, key: str, value: str, query: dict[str, str]) -> None:
        run = self.server.run
        with run.cond:
            reason = run.values.get("ss:abort", "")
            if reason and query.get("ignoreabort") != "true":
                return self._answer(409, reason, aborted=True)
            run._set(key, value)
        return self._answer(200, "")

    def _complete(self, instance: str, state: str | None) -> None:
        run = self.server.run
        with run.cond:
            if instance not in run.instances:
                return self._answer(404, f"no node instance {instance} in this run")
            current = run.values.get("ss:state", "")
            if state is not None and state != current:
                return self._answer(409, f"{instance} completed {state}, but the run is {current}")
            run._complete(instance)
        return self._answer(200, "")

    def _answer(
        self, status: int, text: str, content_type: str = "text/plain", *, aborted: bool = False
    ) -> None:
        data = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        if aborted:  # as the real server marks the 409 of an aborted run
            self.send_header("X-Stratus-Aborted", "1")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], run: FakeRun, tls: ssl.SSLContext) -> None:
        self.run = run
        self.stopping = False
        super().__init__(address, _Handler)
        # The handshake happens in the request's own thread, on its first read.
        self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)


class FakeServer:
    """Serves a :class:`FakeRun` on 127.0.0.1 from a thread, over TLS with the certificate of
    ``tls`` (agents speak nothing else); :meth:`stop` and :meth:`start` play a server that goes
    down and comes back on the same port."""

    def __init__(self, run: FakeRun, tls: ssl.SSLContext) -> None:
        self.run = run
        self.tls = tls
        self.port = 0
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.start()

    def start(self) -> None:
        self._httpd = _HTTPServer(("127.0.0.1", self.port), self.run, self.tls)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop answering: held long-polls are dropped, new connections refused."""
        if self._httpd is None or self._thread is None:
            return
        self._httpd.stopping = True
        with self.run.cond:
            self.run.cond.notify_all()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
        self._httpd = self._thread = None


def plan_for(
    instance: str,
    *,
    packages: Iterable[str] = (),
    scaling: dict[str, str] | None = None,
    **recipes: list[tuple[str, str]],
) -> dict[str, Any]:
    """A plan as the server hands it out; ``recipes`` maps a step (``pre_install``...) to
    ``(module, script)`` pairs."""
    node, _, index = instance.rpartition(".")
    steps = ("pre-install", "post-install", "deployment", "report", "on-vm-add", "on-vm-remove")
    return {
        "run": "6a1f0c1e-run",
        "node": node,
        "index": int(index),
        "node_instance": instance,
        "packages": list(packages),
        "recipes": {
            step: [
                {"module": module, "script": script}
                for module, script in recipes.get(step.replace("-", "_"), [])
            ]
            for step in steps
        },
        "scaling": scaling,
    }
