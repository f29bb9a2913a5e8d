"""The real server on loopback, deploying on the localproc cloud: end to end without LXD.

:class:`RealServer` serves the real application (``create_app``, real settings, SQLite in a
temporary data directory) with the real server (``api/server.py``) from a thread: plain HTTP
on a free port of 127.0.0.1 for the test, and HTTPS with the site certificate on another for
the nodes, as the bridge listener is on a site; and it records
the cloud ``local`` with the ``localproc`` connector: every node instance is a process tree in
namespaces of its own that runs the real bootstrap, downloads the real agent zipapp from this
server and runs the real agent. :class:`Api` is what a test does through the JSON API with the
site token (push modules, start runs, read events, parameters and reports); :class:`Member`
runs a node's own tools inside its instance.
"""

from __future__ import annotations

import contextlib
import io
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from stratuslab import config
from stratuslab.api.app import create_app
from stratuslab.api.server import Server, listen
from stratuslab.cloud import clouds, sitecert
from stratuslab.cloud.base import Instance
from stratuslab.cloud.connectors.localproc import OVERLAID, PRIVATE, LocalProcConnector
from stratuslab.db.session import dispose, engine_for
from stratuslab.deploy.agent_bundle import NODE_PATH
from stratuslab.deploy.tree import load_tree
from tests.support import environment, wait_until

TOKEN = "e2e-site-token"
APPS = Path(__file__).parent / "apps"
SETTLED = ("Done", "Aborted", "Cancelled")
FAKE_APT = """#!/bin/sh
# apt-get, as far as a test needs it: what it was asked, one line per call, and "ok".
echo "$DEBIAN_FRONTEND $*" >> "{calls}/$SLIPSTREAM_DIID-$SLIPSTREAM_NODE_INSTANCE_NAME"
echo ok
"""


class RealServer:
    """The real server, its store and its localproc cloud, under ``root``."""

    def __init__(self, root: Path, *, report_grace_s: int = 1, **overrides: Any) -> None:
        hidden = [p for p in (*OVERLAID, *PRIVATE) if root.is_relative_to(p)]
        # The fake apt-get and what it records live here, and instances must see them.
        assert not hidden, (
            f"{root} is under {hidden[0]}, which instances hide: use another basetemp"
        )
        self.root = root
        self.instances = root / "instances"
        self.apt_calls = root / "apt-calls"
        self.apt_calls.mkdir(parents=True)
        fake_apt = root / "fake-apt"
        fake_apt.write_text(FAKE_APT.format(calls=self.apt_calls))
        fake_apt.chmod(0o755)
        # Bound before the server starts: no race for the ports.
        self._socket = listen("127.0.0.1", 0)
        self._agent_socket = listen("127.0.0.1", 0)
        self.port = int(self._socket.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.agent_url = f"https://127.0.0.1:{self._agent_socket.getsockname()[1]}"
        self.settings = config.load(
            environment(root, STRATUS_DATABASE_URL=f"sqlite:///{root / 'data' / 'stratus.db'}")
        ).with_overrides(
            token=TOKEN,
            report_grace_s=report_grace_s,
            agent_server_url=self.agent_url,
            instance_prefix="e2e",
            **overrides,
        )
        # No apt-get for real here; and an agent whose server is gone gives up in 20 s, not 10 min.
        env = {"STRATUS_AGENT_APT": str(fake_apt), "STRATUS_AGENT_RETRY_FOR": "20"}
        self.cloud_options: dict[str, Any] = {"root": str(self.instances), "env": env}
        clouds.record(
            engine_for(self.settings.database_url),
            name="local",
            connector="localproc",
            options=self.cloud_options,
        )
        self.connector = LocalProcConnector(**self.cloud_options)
        self.site = sitecert.ensure(self.settings)
        self._server = Server(
            uvicorn.Config(
                create_app(self.settings),
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=5,  # a long-poll still held is not waited for
            ),
            tls_listeners=[(self._agent_socket, self.site.server_context())],
        )
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def start(self) -> RealServer:
        self._thread.start()
        wait_until(lambda: self._server.started, what="the server to start")
        return self

    def stop(self) -> None:
        """End what a test left unfinished (its runs terminated, so that their agents' long-
        polls are answered and the runs torn down; then whatever instance is still there
        destroyed), stop the server (its lifespan closes the services), and destroy what it may
        have made meanwhile: nothing is left behind, even when a test failed."""
        api = self.api()
        try:
            active = api.http.get("/api/runs", params={"active": True, "all": True, "limit": 500})
            for run in active.json():
                api.http.delete(f"/api/runs/{run['id']}")
            for run in active.json():
                with contextlib.suppress(AssertionError):  # stuck: destroyed below anyway
                    api.wait_for_state(run["id"], *SETTLED, timeout=10)
        finally:
            api.close()
        self._destroy_all()
        self._server.should_exit = True
        self._thread.join(30)
        self._socket.close()
        self._agent_socket.close()
        self._destroy_all()
        dispose(self.settings.database_url)

    def _destroy_all(self) -> None:
        for instance in self.connector.list_instances(addresses=False):
            self.connector.destroy(instance.name)

    def api(self) -> Api:
        return Api(self)


class Api:
    """What a user does through the JSON API, with the site token."""

    def __init__(self, server: RealServer) -> None:
        self.server = server
        self.http = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )

    def close(self) -> None:
        self.http.close()

    # Modules and runs.

    def push(self, module: str) -> str:
        """Push the application ``module`` under tests/deploy/apps and everything it refers to;
        its stored address (path/version)."""
        texts = load_tree(APPS, module)
        answer = self.http.post(
            "/api/modules",
            json={"modules": [{"path": t.path, "file": t.file, "text": t.text} for t in texts]},
        )
        assert answer.status_code == 201, answer.text
        stored = next(m for m in answer.json() if m["path"] == texts[0].path)
        return f"{stored['path']}/{stored['version']}"

    def start(self, module: str, **body: Any) -> str:
        """Push ``module`` and start a run of it (keep-running never unless told); its id."""
        request = {"module": self.push(module), "keep_running": "never", **body}
        answer = self.http.post("/api/runs", json=request)
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])

    def run(self, run_id: str) -> dict[str, Any]:
        return self._json("GET", f"/api/runs/{run_id}")  # type: ignore[no-any-return]

    def state(self, run_id: str) -> str:
        return str(self.run(run_id)["state"])

    def wait_for_state(self, run_id: str, *wanted: str, timeout: float = 60) -> str:
        """The state the run reaches first among ``wanted``; fails, telling what the run did,
        when it reaches none within ``timeout`` seconds or settles in another."""

        def reached() -> str | None:
            state = self.state(run_id)
            if state in wanted:
                return state
            if state in SETTLED:
                raise AssertionError(f"run settled in {state}, not {wanted}\n{self.story(run_id)}")
            return None

        try:
            return str(wait_until(reached, timeout, f"run {run_id} to reach {wanted}"))
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.story(run_id)}") from None

    def wait_for_round(self, run_id: str, timeout: float = 60) -> None:
        """Wait until a scalable run is back in Ready with its scale action done."""

        def done() -> bool:
            view = self.run(run_id)
            if view["state"] in SETTLED:
                raise AssertionError(f"run settled in {view['state']}\n{self.story(run_id)}")
            return view["state"] == "Ready" and view["scaling"] is None

        try:
            wait_until(done, timeout, f"run {run_id} to finish its scale action")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.story(run_id)}") from None

    def terminate(self, run_id: str) -> None:
        answer = self.http.delete(f"/api/runs/{run_id}")
        assert answer.status_code == 200, answer.text

    def add(self, run_id: str, node: str, count: int = 1) -> list[str]:
        added = self._json(
            "POST", f"/api/runs/{run_id}/nodes/{node}/instances", json={"count": count}
        )
        return list(added["added"])

    def remove(self, run_id: str, node: str, *ids: int) -> list[str]:
        removed = self._json(
            "DELETE",
            f"/api/runs/{run_id}/nodes/{node}/instances",
            params={"ids": ",".join(map(str, ids))},
        )
        return list(removed["removed"])

    # What a run shows.

    def events(self, run_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self._json("GET", f"/api/runs/{run_id}/events")
        return [e for e in events if kind is None or e["kind"] == kind]

    def states(self, run_id: str) -> list[str]:
        """Every state the run went to, in order (from its ``state`` events' fields)."""
        return [e["fields"]["state"] for e in self.events(run_id, "state")]

    def completes(self, run_id: str, node_instance: str) -> list[str]:
        """The states ``node_instance`` completed, in order."""
        return [
            e["fields"]["state"]
            for e in self.events(run_id, "complete")
            if e["node_instance"] == node_instance
        ]

    def displays(self, run_id: str, node_instance: str) -> list[str]:
        """Every ``statecustom`` ``node_instance`` showed, in order (its ``display`` events)."""
        return [
            e["fields"]["text"]
            for e in self.events(run_id, "display")
            if e["node_instance"] == node_instance
        ]

    def params(self, run_id: str) -> dict[str, str | None]:
        return self._json("GET", f"/api/runs/{run_id}/params")  # type: ignore[no-any-return]

    def set_param(self, run_id: str, key: str, value: str, *, ignore_abort: bool = False) -> None:
        """Set (an empty value unsets) a runtime parameter as the run's owner, on /run."""
        params = {"ignoreabort": "true"} if ignore_abort else {}
        answer = self.http.put(f"/run/{run_id}/{key}", content=value.encode(), params=params)
        assert answer.status_code == 200, answer.text

    def logs(self, run_id: str, **match: str) -> list[str]:
        """The lines recipes printed, those whose fields equal ``match`` (node_instance,
        recipe, stream, state)."""
        lines: list[dict[str, Any]] = self._json("GET", f"/api/runs/{run_id}/logs")
        return [
            line["text"]
            for line in lines
            if all(line.get(name) == value for name, value in match.items())
        ]

    def report(self, run_id: str, node_instance: str) -> dict[str, bytes]:
        """The files in ``node_instance``'s report archive, by name."""
        answer = self.http.get(f"/api/runs/{run_id}/reports/{node_instance}")
        assert answer.status_code == 200, answer.text
        members = {}
        with tarfile.open(fileobj=io.BytesIO(answer.content), mode="r:gz") as archive:
            for member in archive.getmembers():
                extracted = archive.extractfile(member) if member.isfile() else None
                if extracted is not None:
                    members[member.name] = extracted.read()
        return members

    def machines(self, run_id: str) -> list[Instance]:
        """The run's instances on the backend, found by their tag."""
        return self.server.connector.list_instances(tags={"run": run_id}, addresses=False)

    def member(self, run_id: str, node_instance: str) -> Member:
        """The node instance's machine, to run its tools in."""
        (machine,) = [
            m
            for m in self.server.connector.list_instances(tags={"run": run_id}, addresses=False)
            if m.tags.get("node-instance") == node_instance
        ]
        return Member(self.server.connector, machine.name)

    def story(self, run_id: str) -> str:
        """What the run did, for a failing test's message: its events and recipes' output."""
        events = [
            f"  {e['node_instance'] or '-'}: {e['kind']} {e['message']}"
            for e in self.events(run_id)
        ]
        lines: list[dict[str, Any]] = self._json("GET", f"/api/runs/{run_id}/logs")
        output = [f"  {x['node_instance']} {x['recipe']} {x['stream']}: {x['text']}" for x in lines]
        return "\n".join(["events:", *events, "recipe output:", *output[-40:]])

    def _json(self, method: str, path: str, **request: Any) -> Any:
        answer = self.http.request(method, path, **request)
        assert answer.is_success, f"{method} {path}: {answer.status_code} {answer.text}"
        return answer.json()


@dataclass
class Done:
    """A finished command in an instance, read as a ``subprocess.CompletedProcess`` is."""

    returncode: int
    stdout: str
    stderr: str


class Member:
    """A node instance's machine: its tools, run inside it as a recipe would."""

    def __init__(self, connector: LocalProcConnector, name: str) -> None:
        self.connector = connector
        self.name = name

    def run(self, *command: str, timeout: float = 30, **env: str) -> Done:
        done = self.connector.exec(self.name, list(command), env=env, timeout=timeout)
        return Done(done.exit_code, done.stdout, done.stderr)

    def tool(self, *args: str, timeout: float = 30, **env: str) -> Done:
        """``stratus-agent.pyz ARGS``, from the zipapp the bootstrap downloaded."""
        return self.run("python3", NODE_PATH, *args, timeout=timeout, **env)

    def read(self, path: str) -> str:
        """A file of the instance (its private directories are in its folder on the host)."""
        done = self.run("cat", path)
        assert done.returncode == 0, done.stderr
        return done.stdout
