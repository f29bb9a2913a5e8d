"""What ``auth_params.py`` measures on: a server's store with alice in it (an account, an API
key, a session), her run of ``bench/probe``, and the headers of each credential that reaches
it. Not a benchmark by itself."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from typing import Any

from common import BenchError, log
from control_plane import Server

PASSWORD = "bench password, long enough"
REQUEST_TIMEOUT = 30.0
ALICE = """
import json, sys
from stratuslab import config
from stratuslab.db.session import engine_for
from stratuslab.accounts.users import Accounts
from stratuslab.accounts.credentials import Credentials
from stratuslab.principal import SERVER, Principal
engine = engine_for(config.load().database_url)
Accounts(engine).add_user("alice", caller=SERVER, password=sys.argv[1])
print(json.dumps(Credentials(engine).create_key(caller=Principal.for_user("alice"), name="bench")))
"""
NODE_TOKEN = """
import sys
from stratuslab import config
from stratuslab.db.session import engine_for
from stratuslab.deploy.tokens import NodeTokens
print(NodeTokens(engine_for(config.load().database_url)).issue(sys.argv[1], "probe.1"))
"""


def snippet(server: Server, code: str, *args: str) -> str:
    """Run ``code`` on the server's store (its environment), and what it printed."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=server.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"a snippet on the server's store failed:\n{done.stderr}")
    return done.stdout.strip()


class Http:
    """One kept-alive connection, sending one credential's headers."""

    def __init__(
        self, port: int, headers: dict[str, str], timeout: float = REQUEST_TIMEOUT
    ) -> None:
        self.port, self.headers = port, headers
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.last: http.client.HTTPResponse | None = None

    def request(
        self, method: str, path: str, body: bytes | None = None, extra: dict[str, str] | None = None
    ) -> tuple[int, str, http.client.HTTPResponse]:
        headers = {**self.headers, **(extra or {})}
        if body is None and method in ("POST", "PUT"):
            body = b""
        for attempt in (1, 2):  # once more on a kept-alive connection the server closed
            try:
                self.conn.request(method, path, body=body, headers=headers)
                resp = self.conn.getresponse()
                return resp.status, resp.read().decode(), resp
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.conn.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, body: Any, expect: int) -> Any:
        data = json.dumps(body).encode()
        status, text, resp = self.request(method, path, data, {"Content-Type": "application/json"})
        if status != expect:
            raise BenchError(f"{method} {path} answered {status}: {text[:2000]}")
        self.last = resp
        return json.loads(text) if text else None

    def close(self) -> None:
        self.conn.close()


BASE = "kind: image\nimages:\n  local: debian-12\n"
APP = "kind: application\nnodes:\n  probe:\n    component: bench/probe-c\n"


def prepare(server: Server, workers: int, polls: int) -> tuple[str, dict[str, dict[str, str]]]:
    """Start ``server``; alice, her run of a probe with outputs ``k<w>`` and ``p<i>``, and the
    headers of each credential: (the run's id, credential -> headers)."""
    pid = server.start()
    key = json.loads(snippet(server, ALICE, PASSWORD))
    bearer = {"Authorization": f"Bearer {key['token']}"}
    alice = Http(server.port, bearer)
    try:
        login = {"href": "session-template/internal", "username": "alice"}
        alice.json(
            "POST", "/api/session", {"sessionTemplate": {**login, "password": PASSWORD}}, 201
        )
        answer = alice.last
        cookie = (answer.getheader("set-cookie") or "") if answer is not None else ""
        cookie = cookie.split(";", 1)[0]
        if not cookie:
            raise BenchError("alice's login set no cookie")
        outputs = [f"k{w}" for w in range(workers)] + [f"p{i}" for i in range(polls)]
        component = "kind: component\nparent: base\noutputs:\n" + "".join(
            f"  {name}: {{}}\n" for name in outputs
        )
        modules = [
            {"path": "bench/base", "file": "bench/base.yaml", "text": BASE},
            {"path": "bench/probe-c", "file": "bench/probe-c.yaml", "text": component},
            {"path": "bench/probe", "file": "bench/probe/module.yaml", "text": APP},
        ]
        alice.json("POST", "/api/modules", {"modules": modules}, expect=201)
        body = {"module": "bench/probe", "keep_running": "never", "timeout_s": 86400}
        run_id = alice.json("POST", "/api/runs", body, expect=201)["id"]
        deadline = time.monotonic() + 60
        while True:
            _, text, _ = alice.request("GET", f"/api/runs/{run_id}")
            view = json.loads(text)
            if [n["provisioning"] for n in view["nodes"]] == ["ready"]:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"probe.1 was not provisioned in 60 s: {text[:500]}")
            time.sleep(0.1)
    finally:
        alice.close()
    token = snippet(server, NODE_TOKEN, run_id)
    headers = {
        "site token": {"Authorization": f"Bearer {server.token}"},
        "API key": bearer,
        "session cookie": {"Cookie": cookie},
        "node token": {"Authorization": f"Bearer {token}"},
    }
    log(f"server {pid} on port {server.port}: run {run_id} of alice's")
    return run_id, headers
