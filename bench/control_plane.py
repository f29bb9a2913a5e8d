"""Control-plane scale: one run of N node instances (1,000 by default) on the fake connector.

Measures what the server alone costs when an application is large, with no machines at all:
a separate server process with its own store (a temporary directory under bench/; SQLite by
default, or ``--database-url``) and a recorded fake cloud ``local`` (in-memory instances,
64 CPUs, ~10 TB of memory and disk, so capacity never refuses). Modules are pushed through
``POST /api/modules`` (an image ``bench/base``, a component ``bench/worker`` with one output
``done`` and no recipes, an application ``bench/app`` with one node ``worker`` of multiplicity
N) and a run is started with ``POST /api/runs`` (``keep_running: never``). Then this script
plays the N node agents, with the site token (which the /run endpoints accept):

- it waits until all N instances are provisioned (``provisioned`` events, polled every 0.1 s);
- for each barrier state, Provisioning, Executing, SendingReports, Ready: it waits until
  ``GET /run/<run>/ss:state`` (a long-poll, ``wait=30&differs=<last>``) answers that state, then
  posts ``POST /run/<run>/worker.<i>:complete?state=<State>`` for every i at once from 32
  threads, each with its own kept-alive ``http.client`` connection; in Executing each node
  first ``PUT``s ``worker.<i>:done = 1``, as a recipe's ss-set would;
- it waits for Done (long-poll, then ``GET /api/runs/<run>`` says ``"state": "Done"``).

Reported: wall time from ``POST /api/runs`` to Done; each phase (provisioning, each storm, each
barrier's move to the next state after its storm, Finalizing with the teardown of N instances);
requests per second during each storm and the p50/p99 of one request; the run's own state
events (server clock); the server's peak memory (``VmHWM``) and ``VmRSS`` from
``/proc/<pid>/status``, read at the end while it still runs, beside its RSS just after start,
and its CPU time. Why this is fair: the nodes are as fast as a client can be (no machines, no
recipes, no Python start-up), so every second measured is the server's: its API, store,
barriers, orchestrator and fake connector. One client drives it from the same 2-CPU machine;
32 concurrent connections is what 1,000 real agents' requests would look like in bursts.

The server is stopped with SIGTERM (SIGKILL 30 s later if need be) and the temporary directory
removed in ``finally:``, even on Ctrl-C. Run as root or not, from the project root:
``.venv/bin/python bench/control_plane.py [--instances 1000] [--database-url URL]
[--json-only]``. Results go to stdout and bench/results/control_plane-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import ROOT, BenchError, free_port, guarded, log, percentile, publish

PYTHON = str(ROOT / ".venv" / "bin" / "python")
BARRIERS = ("Provisioning", "Executing", "SendingReports", "Ready")
ORDER = ("Initializing", *BARRIERS, "Finalizing", "Done")
THREADS = 32
START_TIMEOUT = 60.0  # for the server to answer /health
REQUEST_TIMEOUT = 120.0  # one request
PHASE_TIMEOUT = 600.0  # one phase; a phase over 60 s at 1,000 is already pathological
RECORD_CLOUD = """
import json, sys
from stratuslab import config
from stratuslab.db.session import engine_for
from stratuslab.cloud import clouds
s = config.load()
kind, extra = sys.argv[1], json.loads(sys.argv[2])
clouds.record(engine_for(s.database_url), name="local", connector=kind,
              options={"cpus": 64, "memory_mb": 10_000_000, "disk_mb": 10_000_000, **extra})
"""


def proc_status(pid: int) -> dict[str, int]:
    """VmHWM, VmRSS ... of a process, in kB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name.startswith("Vm") and value.strip().endswith("kB"):
            found[name] = int(value.split()[0])
    return found


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Api:
    """One kept-alive connection to the server, with the site token."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {self.token}"}
        data: bytes | None = None
        if isinstance(body, str):
            data, headers["Content-Type"] = body.encode(), "text/plain; charset=utf-8"
        elif body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        elif method in ("POST", "PUT"):
            data = b""
        for attempt in (1, 2):  # once more on a kept-alive connection the server closed
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                return resp.status, resp.read().decode()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.conn.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        status, text = self.request(method, path, body)
        if status != expect:
            raise BenchError(f"{method} {path} answered {status}: {text[:2000]}")
        return json.loads(text) if text else None

    def close(self) -> None:
        self.conn.close()


class Server:
    """A server process of its own: its own data directory, port, store and fake cloud; or,
    given ``beside``, another process of that one's store, data directory and port (the
    processes share the port, SO_REUSEPORT, as on a site; the kernel spreads connections)."""

    def __init__(
        self,
        work: Path,
        database_url: str | None,
        *,
        beside: Server | None = None,
        shared_fake: bool = False,
    ) -> None:
        self.work = work
        self.port = beside.port if beside is not None else free_port()
        self.database_url = database_url
        self.beside = beside
        self.shared_fake = shared_fake  # the fake whose instances every process sees
        self.process: subprocess.Popen[bytes] | None = None
        self.token = ""
        self.name = "server" if beside is None else f"server-{id(self) % 10_000}"
        self.extra_env: dict[str, str] = {}  # more settings (STRATUS_*), e.g. a shorter lease

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STRATUS_")}
        env.update(
            STRATUS_DATA_DIR=str(self.work / "data"),
            STRATUS_CACHE_DIR=str(self.work / "cache"),
            STRATUS_CONFIG=str(self.work / "none.toml"),
            STRATUS_SERVER_PORT=str(self.port),
            STRATUS_USER="bench",
        )
        if self.database_url:
            env["STRATUS_DATABASE_URL"] = self.database_url
            env["STRATUS_SERVER_SHARE_PORTS"] = "true"  # processes of one store share a port
        env.update(self.extra_env)
        return env

    def start(self) -> int:
        """Start the server; its pid."""
        if self.beside is None:
            (self.work / "data").mkdir(parents=True)
            (self.work / "cache").mkdir()
            kind, extra = ("fake", {"namespace": "bench"})
            if self.shared_fake:
                kind, extra = ("fake-shared", {"path": str(self.work / "fake.sqlite")})
            recorded = subprocess.run(
                [PYTHON, "-c", RECORD_CLOUD, kind, json.dumps(extra)],
                env=self.env(),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            if recorded.returncode != 0:
                raise BenchError(f"recording the fake cloud failed:\n{recorded.stderr}")
        with (self.work / f"{self.name}.log").open("wb") as out:
            self.process = subprocess.Popen(
                [PYTHON, "-m", "stratuslab", "server", "run", "--port", str(self.port)],
                cwd=ROOT,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C is for this script; the server gets SIGTERM
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:  # until /health answers from this process (the port may be shared)
            if self.process.poll() is not None:
                raise BenchError(f"the server exited {self.process.returncode}:\n{self.log()}")
            health: dict[str, Any] = {}
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/health")
                health = json.loads(conn.getresponse().read())
                conn.close()
            except (OSError, http.client.HTTPException, ValueError):
                pass
            if health.get("pid") == self.process.pid:
                break
            if health and self.beside is None:
                raise BenchError(f"/health on port {self.port} is pid {health.get('pid')}")
            if time.monotonic() > deadline:
                raise BenchError(f"no /health in {START_TIMEOUT:.0f} s:\n{self.log()}")
            time.sleep(0.05)
        self.token = (self.work / "data" / "api-token").read_text().strip()
        return self.process.pid

    def log(self) -> str:
        try:
            return (self.work / f"{self.name}.log").read_text()[-4000:]
        except OSError:
            return ""

    def complaints(self) -> list[str]:
        """The server log's lines that say something went wrong."""
        try:
            lines = (self.work / f"{self.name}.log").read_text().splitlines()
        except OSError:
            return []
        words = ("WARNING", "ERROR", "Traceback", "locked")
        return [line for line in lines if any(word in line for word in words)]

    def stop(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


class Driver:
    """Plays the N node agents of one run."""

    def __init__(self, server: Server, instances: int) -> None:
        self.server = server
        self.n = instances
        self.api = Api(server.port, server.token)
        self.run_id = ""

    def push_modules(self) -> None:
        app = (
            "kind: application\nnodes:\n  worker:\n    component: bench/worker\n"
            f"    multiplicity: {self.n}\n"
        )
        modules = [
            {
                "path": "bench/base",
                "file": "bench/base.yaml",
                "text": "kind: image\nimages:\n  local: debian-12\n",
            },
            {
                "path": "bench/worker",
                "file": "bench/worker.yaml",
                "text": "kind: component\nparent: base\noutputs:\n  done: {}\n",
            },
            {"path": "bench/app", "file": "bench/app/module.yaml", "text": app},
        ]
        self.api.json("POST", "/api/modules", {"modules": modules}, expect=201)

    def start_run(self) -> None:
        run = self.api.json(
            "POST", "/api/runs", {"module": "bench/app", "keep_running": "never"}, expect=201
        )
        self.run_id = run["id"]

    def wait_provisioned(self) -> None:
        """Until every instance has a ``provisioned`` event (failures and aborts raise)."""
        last, provisioned = 0, 0
        deadline = time.monotonic() + PHASE_TIMEOUT
        while provisioned < self.n:
            events = self.api.json("GET", f"/api/runs/{self.run_id}/events?after={last}")
            for event in events:
                last = event["id"]
                if event["kind"] == "provisioned":
                    provisioned += 1
                elif event["kind"] in ("provisioning-failed", "abort"):
                    raise BenchError(
                        f"{event['kind']}: {event['node_instance']} {event['message']}"
                    )
            if time.monotonic() > deadline:
                raise BenchError(f"only {provisioned}/{self.n} provisioned in {PHASE_TIMEOUT} s")
            if len(events) < 1000:  # a full page means more are waiting
                time.sleep(0.1)

    def wait_state(self, want: str, seen: str, *, or_later: bool = False) -> str:
        """Long-poll ``ss:state`` until it is ``want`` (or, with ``or_later``, a later state of
        the run's normal course); raise if the run goes elsewhere."""
        deadline = time.monotonic() + PHASE_TIMEOUT
        state = seen
        while state != want:
            if or_later and state in ORDER and ORDER.index(state) > ORDER.index(want):
                return state
            if time.monotonic() > deadline:
                raise BenchError(f"still {state} after {PHASE_TIMEOUT:.0f} s, waiting for {want}")
            status, body = self.api.request(
                "GET", f"/run/{self.run_id}/ss:state?wait=30&differs={state}&ignoreabort=true"
            )
            if status == 200:
                state = body
            elif status != 412:
                raise BenchError(f"GET ss:state answered {status}: {body}")
            if state not in ORDER or (ORDER.index(state) > ORDER.index(want) and not or_later):
                run = self.api.json("GET", f"/api/runs/{self.run_id}")
                raise BenchError(f"the run went {state} (abort: {run.get('abort_reason')})")
        return state

    def storm(self, state: str, nodes: range | None = None) -> dict[str, Any]:
        """Every node (or those numbered in ``nodes``) completes ``state`` at once, from
        THREADS threads; timings."""
        requests: list[tuple[str, str, str | None]] = []
        numbers = nodes if nodes is not None else range(1, self.n + 1)
        for i in numbers:
            if state == "Executing":
                requests.append(("PUT", f"/run/{self.run_id}/worker.{i}:done", "1"))
            requests.append(("POST", f"/run/{self.run_id}/worker.{i}:complete?state={state}", None))
        # Each node's requests stay together and in order, on one thread.
        per_node = 2 if state == "Executing" else 1
        shares = [
            [
                r
                for k in range(t, len(numbers), THREADS)
                for r in requests[k * per_node : (k + 1) * per_node]
            ]
            for t in range(THREADS)
        ]
        latencies: list[list[float]] = [[] for _ in range(THREADS)]
        errors: list[str] = []
        apis = [Api(self.server.port, self.server.token) for _ in range(THREADS)]
        for api in apis:
            api.conn.connect()  # outside the timing
        gate = threading.Barrier(THREADS + 1)

        def work(t: int) -> None:
            gate.wait()
            for method, path, body in shares[t]:
                began = time.perf_counter()
                try:
                    status, text = apis[t].request(method, path, body)
                except (OSError, http.client.HTTPException) as exc:
                    status, text = 0, repr(exc)
                latencies[t].append(time.perf_counter() - began)
                if status != 200:
                    errors.append(f"{method} {path}: {status} {text[:200]}")

        threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(THREADS)]
        for thread in threads:
            thread.start()
        gate.wait()
        began = time.perf_counter()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)
        ended = time.perf_counter()
        for api in apis:
            api.close()
        if errors:
            raise BenchError(f"{len(errors)} request(s) failed in {state}, e.g. {errors[:3]}")
        flat = [x for share in latencies for x in share]
        seconds = ended - began
        return {
            "began": began,
            "ended": ended,
            "seconds": seconds,
            "requests": len(requests),
            "rps": len(requests) / seconds,
            "p50_ms": percentile(flat, 50) * 1000,
            "p99_ms": percentile(flat, 99) * 1000,
            "max_ms": max(flat) * 1000,
        }

    def events(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while True:
            after = found[-1]["id"] if found else 0
            page = self.api.json("GET", f"/api/runs/{self.run_id}/events?after={after}")
            if not page:
                return found
            found += page


def measure(servers: list[Server], instances: int) -> dict[str, Any]:
    server = servers[0]
    pids = [each.start() for each in servers]
    rss_start = [proc_status(pid) for pid in pids]
    log(f"server pid(s) {pids} on port {server.port}")
    driver = Driver(server, instances)
    driver.push_modules()
    phases: dict[str, float] = {}
    storms: dict[str, dict[str, Any]] = {}

    start = time.perf_counter()
    driver.start_run()
    log(f"run {driver.run_id} of {instances} worker(s) started")
    driver.wait_provisioned()
    provisioned = time.perf_counter()
    phases["POST /api/runs -> all provisioned"] = provisioned - start
    log(f"  all {instances} provisioned after {provisioned - start:.2f} s")
    state = driver.wait_state("Provisioning", "Initializing")
    for barrier in BARRIERS:
        state = driver.wait_state(barrier, state)
        storm = driver.storm(barrier)
        storms[barrier] = storm
        following = ORDER[ORDER.index(barrier) + 1]
        state = driver.wait_state(following, state, or_later=following == "Finalizing")
        moved = time.perf_counter()
        phases[f"{barrier}: storm"] = storm["seconds"]
        phases[f"{barrier}: storm end -> {following}"] = moved - storm["ended"]
        log(
            f"  {barrier}: {storm['requests']} requests in {storm['seconds']:.2f} s "
            f"({storm['rps']:.0f}/s); {following} {moved - storm['ended']:.2f} s after"
        )
        if moved - storm["began"] > 60:
            log(f"  ! {barrier} took {moved - storm['began']:.1f} s: pathologically slow")
    finalizing = time.perf_counter()
    state = driver.wait_state("Done", state)
    done_seen = time.perf_counter()
    run = driver.api.json("GET", f"/api/runs/{driver.run_id}")
    if run["state"] != "Done":
        raise BenchError(f"ss:state said Done but the run is {run['state']}")
    done = time.perf_counter()
    phases["Finalizing -> Done (teardown)"] = done_seen - finalizing
    memories = [proc_status(pid) for pid in pids]
    memory = {k: sum(m.get(k, 0) for m in memories) for k in ("VmHWM", "VmRSS")}
    cpu = sum(cpu_seconds(pid) for pid in pids)
    client_cpu = resource.getrusage(resource.RUSAGE_SELF)
    complaints = [line for each in servers for line in each.complaints()]
    events = driver.events()
    first = datetime.fromisoformat(events[0]["at"]).timestamp()
    state_events = {
        e["message"]: round(datetime.fromisoformat(e["at"]).timestamp() - first, 3)
        for e in events
        if e["kind"] == "state"
    }
    driver.api.close()
    for storm in storms.values():
        del storm["began"], storm["ended"]
    return {
        "instances": instances,
        "database": _safe(server.database_url)
        or "sqlite (default, in the temporary data directory)",
        "server_processes": len(servers),
        "connector": "fake-shared" if server.shared_fake else "fake",
        "run": driver.run_id,
        "total_seconds": done - start,
        "phases_seconds": phases,
        "storms": storms,
        "server_state_events_seconds": state_events,
        "events": len(events),
        "server_memory_kb": {
            "VmHWM": memory.get("VmHWM"),
            "VmRSS": memory.get("VmRSS"),
            "VmRSS_after_start": sum(r.get("VmRSS", 0) for r in rss_start),
        },
        "server_cpu_seconds": cpu,
        "client_cpu_seconds": client_cpu.ru_utime + client_cpu.ru_stime,
        "server_log_complaints": len(complaints),
        "server_log_complaints_first": complaints[:10],
    }


def _safe(url: str | None) -> str | None:
    """A store's URL without its password, for the report."""
    return None if url is None else re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def table(results: dict[str, Any]) -> str:
    if "configurations" in results:  # --compare: one table per configuration
        return "\n\n".join(table(each) for each in results["configurations"].values())
    n = results["instances"]
    lines = [
        f"control plane: one run of {n} node instances, {results['connector']} connector, "
        f"{results['server_processes']} server process(es) on {results['database']} "
        f"({results['run']})"
    ]
    lines.append(f"\n{'phase':<52} {'seconds':>9}")
    for label, seconds in results["phases_seconds"].items():
        lines.append(f"{label:<52} {seconds:>9.3f}")
    lines.append(f"{'total: POST /api/runs -> Done':<52} {results['total_seconds']:>9.3f}")
    lines.append(
        f"\n{'storm':<16} {'requests':>8} {'seconds':>8} {'req/s':>8} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'max ms':>8}"
    )
    for state, s in results["storms"].items():
        lines.append(
            f"{state:<16} {s['requests']:>8} {s['seconds']:>8.3f} {s['rps']:>8.0f} "
            f"{s['p50_ms']:>8.1f} {s['p99_ms']:>8.1f} {s['max_ms']:>8.1f}"
        )
    lines.append("\nthe run's state events (server clock, seconds after its first event):")
    for message, seconds in results["server_state_events_seconds"].items():
        lines.append(f"  {seconds:>9.3f}  {message}")
    mem = results["server_memory_kb"]
    lines.append(
        f"\nserver memory: peak (VmHWM) {mem['VmHWM'] / 1024:.1f} MiB, VmRSS at the end "
        f"{mem['VmRSS'] / 1024:.1f} MiB, VmRSS after start {mem['VmRSS_after_start'] / 1024:.1f}"
        f" MiB; CPU {results['server_cpu_seconds']:.1f} s (this client: "
        f"{results['client_cpu_seconds']:.1f} s)"
    )
    lines.append(f"server log: {results['server_log_complaints']} warning/error line(s)")
    lines += [f"  {line[:160]}" for line in results["server_log_complaints_first"][:3]]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1000, help="node instances (1000)")
    parser.add_argument(
        "--database-url", help="the server's store (default: SQLite in the temporary directory)"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="server processes sharing the store and its port (more than 1: PostgreSQL, and "
        "the shared fake)",
    )
    parser.add_argument(
        "--compare",
        metavar="POSTGRES_ADMIN_URL",
        help="in one invocation: one process on SQLite, one on PostgreSQL, two on PostgreSQL "
        "(each on a database of its own made with this URL and dropped after), all on the "
        "shared fake so that the backend costs the same",
    )
    parser.add_argument("--json-only", action="store_true", help="print only the JSON results")
    args = parser.parse_args()
    if args.instances < 1:
        parser.error("--instances must be at least 1")
    if args.processes < 1 or (args.processes > 1 and not args.database_url):
        parser.error("--processes above 1 needs --database-url (PostgreSQL)")

    prefix = f"bench-{secrets.token_hex(3)}"
    started = datetime.now(UTC)
    if args.compare:
        configurations = {
            "1 process, SQLite": (None, 1),
            "1 process, PostgreSQL": ("pg", 1),
            "2 processes, PostgreSQL": ("pg", 2),
        }
        results: dict[str, Any] = {"configurations": {}}
        for label, (store, processes) in configurations.items():
            log(f"== {label}")
            status, found = _one(args, prefix, store, processes, shared_fake=True)
            if found is None:
                return status
            results["configurations"][label] = found
    else:
        status, one = _one(
            args, prefix, args.database_url, args.processes, shared_fake=args.processes > 1
        )
        if one is None:
            return status
        results = one
    settings = {"threads": THREADS}
    return publish(
        "control_plane", started, prefix, settings, results, table, json_only=args.json_only
    )


def _one(
    args: argparse.Namespace,
    prefix: str,
    store: str | None,
    processes: int,
    *,
    shared_fake: bool,
) -> tuple[int, dict[str, Any] | None]:
    """One configuration measured: its servers started, driven, stopped and removed."""
    work = ROOT / "bench" / f".control-{prefix}-{secrets.token_hex(2)}"
    made_db = store == "pg"
    url = _make_database(args.compare) if made_db else store
    first = Server(work, url, shared_fake=shared_fake)
    servers = [first] + [
        Server(work, url, beside=first, shared_fake=shared_fake) for _ in range(processes - 1)
    ]

    def cleanup() -> None:
        codes = [each.stop() for each in reversed(servers)]
        log(f"cleanup: servers stopped (exit {codes}); removing {work.relative_to(ROOT)}")
        shutil.rmtree(work, ignore_errors=True)
        if made_db and url:
            _drop_database(args.compare, url)

    return guarded(
        lambda: measure(servers, args.instances),
        cleanup,
        failures=(OSError, http.client.HTTPException),
        on_failure=lambda: log(f"server log (tail):\n{first.log()}"),
    )


def _make_database(admin_url: str) -> str:
    """A new PostgreSQL database for one configuration; its URL."""
    import sqlalchemy  # the project's dependency; only the --compare run needs it here

    name = f"bench_{secrets.token_hex(4)}"
    admin = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    made: str = (
        sqlalchemy.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    )
    return made


def _drop_database(admin_url: str, url: str) -> None:
    import sqlalchemy

    name = sqlalchemy.make_url(url).database
    admin = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


if __name__ == "__main__":
    sys.exit(main())
