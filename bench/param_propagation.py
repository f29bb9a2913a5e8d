"""Runtime-parameter propagation: from `ss-set` to the return of an `ss-get` blocked on the key.

Measures, against the local StratusLab server and a real run kept in Ready (one node ``probe``
of a component with one output ``key`` and no recipes, deployed from a temporary module
directory ``bench/_propagation-app/``, removed afterwards):

1. Process level, as recipes see it: ``ss-get --timeout 30 probe.1:key`` is started and left
   blocked (its TCP connection to the server is established and it has not exited, then 20 ms
   more); t0; ``ss-set probe.1:key <unique value>`` is started; t1 = when the ss-get process
   has exited. The tools are the launchers a node gets: the agent zipapp downloaded from the
   server (``GET /agent/stratus-agent.pyz``, its SHA-256 checked) and its ``install-tools``.
   Recorded: t1 - t0 (the figure the goal "p99 < 50 ms" is about), and the ss-set process's
   own duration, from spawn to exit, to show how much of it is Python start-up. The ss-get's
   output is checked to be the value. The tools run on the host, with the node's own token and
   configuration in the environment (``SLIPSTREAM_SERVICEURL``, ``SLIPSTREAM_DIID``,
   ``SLIPSTREAM_NODE_INSTANCE_NAME``, ``STRATUS_NODE_TOKEN``, ``STRATUS_SERVER_CA``;
   ``STRATUS_AGENT_CONF`` names a file that does not exist, so nothing else is read), over
   HTTPS to the server's listener for nodes (the bridge gateway), as nodes call it.
2. HTTP level, in-process (no process start-up at all): a thread sends ``GET
   /run/<run>/probe.1:key?wait=30`` with the node token on a kept-alive ``http.client``
   connection; once sent (plus 10 ms for the server to start waiting), the main thread ``PUT``s
   the value on another kept-alive connection. Latency from just before the PUT to the GET's
   return; the PUT's own round trip is recorded too.

Before each trial the key is unset (an empty PUT, in-process, untimed) and checked to answer
412. Why this is fair: it measures exactly the path a recipe's value takes from one node to
another (server commit, long-poll wake-up, answer), with the same agent code the nodes run;
running on the host only removes the bridge hop, which is not StratusLab's. Warm-up trials are
not counted. Reported: p50/p90/p99/max in ms, and the process-level p99 against 50 ms.

The run (tagged with this run's unique prefix ``bench-<6 hex>``) is terminated with ``stratus
run terminate`` and the module directory removed in ``finally:``, even on Ctrl-C; a blocked
ss-get left over is killed. Run as root from the project root:
``.venv/bin/python bench/param_propagation.py [--trials 1000] [--json-only]``. Results go to
stdout and bench/results/param_propagation-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import (
    ROOT,
    STRATUS,
    BenchError,
    UnixHTTPConnection,
    guarded,
    log,
    percentile,
    publish,
)
from common import run as run_command

from stratuslab import config
from stratuslab.cloud import sitecert

ZIPAPP = "stratus-agent.pyz"
APP_DIR = ROOT / "bench" / "_propagation-app"  # a module path may not start with "."
APP = "bench/_propagation-app"
KEY = "probe.1:key"
CLI_TIMEOUT = 300.0
TOOL_TIMEOUT = 40.0  # one ss-get or ss-set (ss-get waits up to 30 s)
BLOCKED_TIMEOUT = 10.0  # for ss-get to connect to the server
SETTLE_PROCESS = 0.02  # after ss-get's connection is established, before t0
SETTLE_HTTP = 0.01  # after the GET is sent, before t0
GOAL_MS = 50.0

MODULES = {
    "base.yaml": "kind: image\nimages:\n  local: debian-12\n",
    "probe.yaml": (
        "kind: component\nparent: base\ndescription: one output, no recipes\noutputs:\n  key: {}\n"
    ),
    "module.yaml": "kind: application\nnodes:\n  probe:\n    component: probe\n",
}


def run(cmd: list[str], *, check: bool = True, timeout: float = CLI_TIMEOUT) -> str:
    return run_command(cmd, timeout=timeout, check=check).stdout


def established_to(pid: int, port: int) -> bool:
    """Whether process ``pid`` has an established TCP connection to ``port`` (from /proc)."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        lines = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        remote_port = int(fields[2].rsplit(":", 1)[1], 16)
        if fields[3] == "01" and remote_port == port and fields[9] in inodes:
            return True
    return False


def percentiles(samples: list[float]) -> dict[str, Any]:
    """Nearest-rank percentiles, in milliseconds."""
    return {
        "n": len(samples),
        "p50_ms": percentile(samples, 50) * 1000,
        "p90_ms": percentile(samples, 90) * 1000,
        "p99_ms": percentile(samples, 99) * 1000,
        "max_ms": max(samples) * 1000,
        "samples_ms": [round(s * 1000, 3) for s in samples],
    }


class Bench:
    def __init__(self, server: str, python: str) -> None:
        self.prefix = f"bench-{secrets.token_hex(3)}"
        self.server = server
        parts = urllib.parse.urlsplit(server)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.python = python
        self.tools = APP_DIR / "bin"
        self.run_id = ""
        self.token = ""
        self.deploying = False  # a deploy under way, its run id not known yet
        self.getter: subprocess.Popen[str] | None = None
        self.made_dir = False
        # Where the tools call, as nodes do: the TLS listener, trusting the site CA only (read
        # once the server has made it; "" for tools that speak plain HTTP).
        self.settings = config.load()
        self.agent_url = f"https://{self.settings.bridge_gateway}:{self.port}"
        self.ca: str | None = None

    # -- set-up ---------------------------------------------------------------------------

    def active_runs(self) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = json.loads(
            run([STRATUS, "run", "list", "--active", "-n", "100", "-o", "json"])
        )
        return runs

    def deploy(self) -> None:
        if APP_DIR.exists():
            raise BenchError(f"{APP_DIR} exists: another run of this benchmark, or a leftover")
        self.made_dir = True
        APP_DIR.mkdir()
        run([STRATUS, "server", "start"])
        # The tools as a node has them: the zipapp the server serves, checked by its digest,
        # and the ss-* launchers its own install-tools writes (they import from it).
        (APP_DIR / "opt").mkdir()
        zipapp = APP_DIR / "opt" / ZIPAPP
        zipapp.write_bytes(self.download(f"/agent/{ZIPAPP}"))
        expected = self.download(f"/agent/{ZIPAPP}.sha256").decode().split()[0]
        if hashlib.sha256(zipapp.read_bytes()).hexdigest() != expected:
            raise BenchError(f"the agent zipapp from {self.server} does not match its SHA-256")
        subprocess.run(
            [self.python, str(zipapp), "install-tools", str(self.tools)], check=True, timeout=60
        )
        for name, text in MODULES.items():
            (APP_DIR / name).write_text(text)
        self.deploying = True
        proc = subprocess.run(
            [
                STRATUS,
                "deploy",
                APP,
                "--keep-running",
                "always",
                "--tags",
                self.prefix,
                "-o",
                "json",
            ],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            check=False,
        )
        try:
            final: dict[str, Any] = json.loads(proc.stdout)
        except ValueError:
            final = {}
        if final.get("id"):
            self.run_id, self.deploying = final["id"], False
        if proc.returncode != 0 or final.get("state") != "Ready":
            raise BenchError(
                f"stratus deploy {APP} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
            )
        container = self.container()
        conf = json.loads(run(["lxc", "exec", container, "--", "cat", "/etc/stratus/agent.conf"]))
        if conf.get("run") != self.run_id or conf.get("node_instance") != "probe.1":
            raise BenchError(f"{container}'s agent.conf is for {conf.get('run')}")
        self.token = conf["token"]
        log(f"run {self.run_id} Ready in {final.get('seconds')} s; node probe.1 is {container}")

    def download(self, path: str) -> bytes:
        conn = self.connection()
        try:
            conn.request("GET", path)
            answer = conn.getresponse()
            data = answer.read()
        finally:
            conn.close()
        if answer.status != 200:
            raise BenchError(f"GET {path} answered {answer.status}: {data[:200]!r}")
        return data

    def container(self) -> str:
        conn = UnixHTTPConnection()
        try:
            conn.request("GET", "/1.0/instances?recursion=1")
            resp = conn.getresponse()
            body = json.loads(resp.read())
        finally:
            conn.close()
        found = [
            i["name"]
            for i in body.get("metadata") or []
            if (i.get("config") or {}).get("user.stratus.run") == self.run_id
        ]
        if len(found) != 1:
            raise BenchError(f"expected one container of run {self.run_id}, found {found}")
        return str(found[0])

    # -- process level --------------------------------------------------------------------

    def tool_env(self) -> dict[str, str]:
        if self.ca is None:
            self.ca = sitecert.read_ca(self.settings.tls_dir) or ""
        return {
            "PATH": "/usr/bin:/bin",
            "SLIPSTREAM_SERVICEURL": self.agent_url if self.ca else self.server,
            "SLIPSTREAM_DIID": self.run_id,
            "SLIPSTREAM_NODE_INSTANCE_NAME": "probe.1",
            "STRATUS_NODE_TOKEN": self.token,
            "STRATUS_SERVER_CA": self.ca,
            "STRATUS_AGENT_CONF": str(APP_DIR / "no-such-agent.conf"),
        }

    def process_trial(self, conn: http.client.HTTPConnection, value: str) -> tuple[float, float]:
        """(ss-set called -> ss-get exited, the ss-set process alone), in seconds."""
        self.unset(conn)
        env = self.tool_env()
        self.getter = subprocess.Popen(
            [str(self.tools / "ss-get"), "--timeout", "30", KEY],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        getter = self.getter
        deadline = time.perf_counter() + BLOCKED_TIMEOUT
        while not established_to(getter.pid, self.port):
            if getter.poll() is not None or time.perf_counter() > deadline:
                out, err = getter.communicate()
                raise BenchError(f"ss-get did not block (exit {getter.returncode}): {out}{err}")
            time.sleep(0.001)
        time.sleep(SETTLE_PROCESS)
        if getter.poll() is not None:
            out, err = getter.communicate()
            raise BenchError(f"ss-get returned before the ss-set: {getter.returncode} {out}{err}")
        got: dict[str, float] = {}

        def wait_getter() -> None:
            # A blocking wait: Popen.wait(timeout=...) polls with sleeps growing to 50 ms, which
            # would measure the poll, not the ss-get (it has its own --timeout 30).
            getter.wait()
            got["t1"] = time.perf_counter()

        waiter = threading.Thread(target=wait_getter, daemon=True)
        waiter.start()
        t0 = time.perf_counter()
        setter = subprocess.run(
            [str(self.tools / "ss-set"), KEY, value],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            timeout=TOOL_TIMEOUT,
            check=False,
        )
        set_done = time.perf_counter()
        waiter.join(TOOL_TIMEOUT)
        out, err = getter.communicate(timeout=TOOL_TIMEOUT)
        self.getter = None
        if setter.returncode != 0:
            raise BenchError(f"ss-set exited {setter.returncode}: {setter.stderr}")
        if getter.returncode != 0 or out.rstrip("\n") != value or "t1" not in got:
            raise BenchError(f"ss-get exited {getter.returncode} with {out!r} {err!r}, not {value}")
        return got["t1"] - t0, set_done - t0

    # -- HTTP level -----------------------------------------------------------------------

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=TOOL_TIMEOUT)

    def request(
        self, conn: http.client.HTTPConnection, method: str, path: str, body: str | None = None
    ) -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {self.token}"}
        if body is not None:
            headers["Content-Type"] = "text/plain; charset=utf-8"
        for attempt in (1, 2):  # once more on a kept-alive connection the server closed
            try:
                conn.request(
                    method, path, body=None if body is None else body.encode(), headers=headers
                )
                resp = conn.getresponse()
                return resp.status, resp.read().decode()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def path(self, query: str = "") -> str:
        return f"/run/{self.run_id}/{KEY}" + (f"?{query}" if query else "")

    def unset(self, conn: http.client.HTTPConnection) -> None:
        status, body = self.request(conn, "PUT", self.path(), "")
        if status != 200:
            raise BenchError(f"unsetting {KEY} answered {status}: {body}")
        status, body = self.request(conn, "GET", self.path())
        if status != 412:
            raise BenchError(f"{KEY} should be unset, but GET answered {status}: {body}")

    def http_trials(self, trials: int, warmup: int) -> tuple[list[float], list[float]]:
        """(PUT sent -> blocked GET returned, PUT round trip) per counted trial."""
        setter, getter = self.connection(), self.connection()
        sent, done = threading.Event(), threading.Event()
        result: dict[str, Any] = {}
        start = threading.Event()
        stop = False

        def get_loop() -> None:
            while True:
                start.wait()
                start.clear()
                if stop:
                    return
                try:
                    getter.putrequest("GET", self.path("wait=30"))
                    getter.putheader("Authorization", f"Bearer {self.token}")
                    getter.endheaders()
                    sent.set()
                    resp = getter.getresponse()
                    body = resp.read().decode()
                    result.update(t1=time.perf_counter(), status=resp.status, body=body)
                except Exception as exc:  # reported by the main thread
                    result.update(error=exc)
                    sent.set()
                done.set()

        thread = threading.Thread(target=get_loop, daemon=True, name="getter")
        thread.start()
        latencies: list[float] = []
        puts: list[float] = []
        try:
            for i in range(warmup + trials):
                value = f"h{i}-{secrets.token_hex(4)}"
                self.unset(setter)
                result.clear()
                sent.clear()
                done.clear()
                start.set()
                if not sent.wait(TOOL_TIMEOUT) or "error" in result:
                    raise BenchError(f"the GET was not sent: {result.get('error')}")
                time.sleep(SETTLE_HTTP)
                t0 = time.perf_counter()
                status, body = self.request(setter, "PUT", self.path(), value)
                put_done = time.perf_counter()
                if status != 200:
                    raise BenchError(f"PUT {KEY} answered {status}: {body}")
                if not done.wait(TOOL_TIMEOUT) or "error" in result:
                    raise BenchError(f"the GET did not return: {result.get('error')}")
                if result["status"] != 200 or result["body"] != value:
                    raise BenchError(f"GET answered {result['status']} {result['body']!r}")
                if i >= warmup:
                    latencies.append(result["t1"] - t0)
                    puts.append(put_done - t0)
        finally:
            stop = True
            start.set()
            setter.close()
            getter.close()
        return latencies, puts

    # -- clean-up -------------------------------------------------------------------------

    def cleanup(self) -> list[str]:
        """Kill a blocked ss-get, terminate the run, remove the module directory."""
        if self.getter is not None and self.getter.poll() is None:
            self.getter.kill()
            self.getter.wait()
        runs = [self.run_id] if self.run_id else []
        if self.deploying:  # interrupted during the deploy, before it printed its id: by its tag
            try:
                runs += [r["id"] for r in self.active_runs() if self.prefix in r["tags"]]
            except (BenchError, subprocess.TimeoutExpired, ValueError) as exc:
                log(f"cleanup: could not list active runs ({exc})")
        for run_id in runs:
            try:
                run([STRATUS, "run", "terminate", run_id], check=False)
            except subprocess.TimeoutExpired:
                log(f"cleanup: terminating run {run_id} timed out")
        if self.made_dir:
            shutil.rmtree(APP_DIR, ignore_errors=True)
        return runs


def measure(bench: Bench, trials: int, warmup: int) -> dict[str, Any]:
    bench.deploy()
    conn = bench.connection()
    latencies: list[float] = []
    setters: list[float] = []
    log(f"process level: {warmup} warm-up + {trials} trials")
    try:
        for i in range(warmup + trials):
            latency, setter = bench.process_trial(conn, f"p{i}-{secrets.token_hex(4)}")
            if i >= warmup:
                latencies.append(latency)
                setters.append(setter)
            if i >= warmup and (i - warmup + 1) % 100 == 0:
                log(f"  {i - warmup + 1}/{trials}")
    finally:
        conn.close()
    log(f"HTTP level: {warmup} warm-up + {trials} trials")
    http_latencies, puts = bench.http_trials(trials, warmup)
    process = percentiles(latencies)
    return {
        "run": bench.run_id,
        "python": bench.python,
        "process_set_to_get_return": process,
        "process_ss_set_alone": percentiles(setters),
        "http_put_to_get_return": percentiles(http_latencies),
        "http_put_round_trip": percentiles(puts),
        "goal_p99_ms_max": GOAL_MS,
        "goal_met": process["p99_ms"] < GOAL_MS,
    }


def table(results: dict[str, Any]) -> str:
    rows = [
        ("process: ss-set called -> blocked ss-get exits", "process_set_to_get_return"),
        ("  the ss-set process alone (spawn -> exit)", "process_ss_set_alone"),
        ("HTTP: PUT sent -> blocked GET returns", "http_put_to_get_return"),
        ("  the PUT's own round trip", "http_put_round_trip"),
    ]
    head = f"{'measure (ms)':<50} {'n':>5} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}"
    lines = [head]
    for label, key in rows:
        s = results[key]
        lines.append(
            f"{label:<50} {s['n']:>5} {s['p50_ms']:>8.2f} {s['p90_ms']:>8.2f} "
            f"{s['p99_ms']:>8.2f} {s['max_ms']:>8.2f}"
        )
    p99 = results["process_set_to_get_return"]["p99_ms"]
    met = "met" if results["goal_met"] else "NOT met"
    lines.append(f"\nprocess-level p99: {p99:.2f} ms   goal: < {GOAL_MS:.0f} ms   ({met})")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000, help="trials of each level (1000)")
    parser.add_argument("--warmup", type=int, default=10, help="uncounted trials first (10)")
    parser.add_argument("--server", default="http://127.0.0.1:8421", help="the server's URL")
    parser.add_argument("--python", default="/usr/bin/python3", help="runs the agent's tools")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON results")
    args = parser.parse_args()
    if args.trials < 1 or args.warmup < 0:
        parser.error("--trials must be at least 1 and --warmup at least 0")

    bench = Bench(args.server, args.python)
    started = datetime.now(UTC)

    def cleanup() -> None:
        runs = bench.cleanup()
        log(f"cleanup: terminated {runs}" if runs else "cleanup: no run to terminate")

    status, results = guarded(
        lambda: measure(bench, args.trials, args.warmup),
        cleanup,
        failures=(OSError, http.client.HTTPException),
    )
    if results is None:
        return status
    settings = {"trials": args.trials, "warmup": args.warmup}
    return publish(
        "param_propagation",
        started,
        bench.prefix,
        settings,
        results,
        table,
        json_only=args.json_only,
    )


if __name__ == "__main__":
    sys.exit(main())
