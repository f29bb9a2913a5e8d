"""Many users at once: 50 users each start one small deployment together, on the fake cloud,
each under a quota that admits exactly one run.

A separate server process with its own store (as ``control_plane.py`` starts one: a temporary
directory under bench/, SQLite by default or ``--database-url``, a recorded fake cloud with room
for everything, so that only quotas refuse). Before anything is timed: ``--users`` accounts are
made in the store with an API key each (``Accounts.add_user``, ``Credentials.create_key``); the
site administrator sets each user's quota with ``PUT /api/quotas/user:<name>`` to 2 instances,
2 vCPUs and 1024 MiB, what one run of the application needs (two node instances, ``db`` and
``web``, charged and sized 1 vCPU and 512 MiB each); each user pushes the modules under a path
of their own with their key.

Then, from a gate, every user at once sends two ``POST /api/runs`` with their own key (the
run, and a second attempt racing it): exactly one of the two must be recorded (201) and the
other refused (409 ``CapacityExceeded``). Each user's thread then plays its run's two node
agents, as ``control_plane.py`` does, with the site token (the fake cloud runs no agent, and
node tokens exist only inside the server): it waits for both machines (``provisioned``
events, read with the user's key), and for each barrier long-polls ``ss:state`` with the
user's key and posts both node instances' ``complete``; in Executing ``db`` sets an output.
Once every run is past Provisioning, each user tries a third run, which must be refused too.
All the while a sampler asks the server, as administrator, what every quota adds up to
(``GET /api/quotas?all=true``) and which instances live (``GET /api/instances?all=true``),
0.2 s after each answer: no sample may show a user over their quota. At the end every run must
be Done, every user must hold nothing, and ``GET /api/usage?all=true&by=run`` must count two
closed intervals per run.

Printed: the wall time from the gate to the last run Done, the starts' latency (p50, p99, max),
each run's time to Done (p50, max), the samples and the most any user held in one, and the
server's peak memory (``VmHWM`` from ``/proc/<pid>/status``, read while it still runs), its RSS
after start and its CPU time. Run from the project root:
``.venv/bin/python bench/many_users.py [--users 50] [--database-url URL] [--json-only]``.
Results go to stdout and bench/results/many_users-<timestamp>.json. The server is stopped and
the temporary directory removed in ``finally:``, even on Ctrl-C.
"""

from __future__ import annotations

import argparse
import http.client
import json
import secrets
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

from common import ROOT, BenchError, guarded, log, percentile, publish
from control_plane import PYTHON, Api, Server, cpu_seconds, proc_status

QUOTA = {"instances": 2, "cpu": 2, "ram_mb": 1024}  # one run of the application, exactly
NODES = ("db.1", "web.1")
BARRIERS = ("Provisioning", "Executing", "SendingReports", "Ready")
ORDER = ("Initializing", *BARRIERS, "Finalizing", "Done")
RUN_TIMEOUT = 600.0
SAMPLE_EVERY = 0.2
MAKE_USERS = """
import json, sys
from stratuslab import config
from stratuslab.accounts.credentials import Credentials
from stratuslab.accounts.users import Accounts
from stratuslab.db.session import engine_for
from stratuslab.principal import SERVER, Principal
engine = engine_for(config.load().database_url)
accounts, credentials = Accounts(engine), Credentials(engine)
keys = {}
for name in sys.argv[1:]:
    accounts.add_user(name, caller=SERVER)
    keys[name] = credentials.create_key(caller=Principal.for_user(name), name="bench")["token"]
print(json.dumps(keys))
"""
BASE = "kind: image\nimages:\n  local: debian-12\n"
COMPONENT = "kind: component\nparent: base\noutputs:\n  ready: {}\n"
APP = "kind: application\nnodes:\n  db:\n    component: {p}/db\n  web:\n    component: {p}/web\n"


def make_users(server: Server, names: list[str]) -> dict[str, str]:
    """Accounts with an API key each, written in the server's store: name -> bearer token."""
    made = subprocess.run(
        [PYTHON, "-c", MAKE_USERS, *names],
        env=server.env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if made.returncode != 0:
        raise BenchError(f"making the users failed:\n{made.stderr}")
    keys: dict[str, str] = json.loads(made.stdout)
    return keys


class User:
    """One user: their key, their run, and the agents of its two node instances."""

    def __init__(self, server: Server, name: str, token: str) -> None:
        self.name = name
        self.api = Api(server.port, token)
        self.racer = Api(server.port, token)  # the second attempt, on its own connection
        self.nodes = Api(server.port, server.token)  # the fake cloud runs no agent
        self.run_id = ""
        self.answers: list[tuple[int, str]] = []
        self.start_seconds: list[float] = []
        self.done_seconds = 0.0
        self.late_refusal = ""

    def push(self) -> None:
        prefix = f"bench-{self.name}"
        modules = [
            {"path": f"{prefix}/base", "file": "base.yaml", "text": BASE},
            {"path": f"{prefix}/db", "file": "db.yaml", "text": COMPONENT},
            {"path": f"{prefix}/web", "file": "web.yaml", "text": COMPONENT},
            {"path": f"{prefix}/app", "file": "app/module.yaml", "text": APP.format(p=prefix)},
        ]
        self.api.json("POST", "/api/modules", {"modules": modules}, expect=201)

    def start(self, api: Api, gate: threading.Barrier) -> None:
        body = {"module": f"bench-{self.name}/app", "keep_running": "never"}
        gate.wait()
        began = time.perf_counter()
        status, text = api.request("POST", "/api/runs", body)
        self.start_seconds.append(time.perf_counter() - began)
        self.answers.append((status, text))

    def check_starts(self) -> None:
        statuses = sorted(status for status, _ in self.answers)
        if statuses != [201, 409]:
            raise BenchError(f"{self.name}: the two starts answered {self.answers}")
        refused = next(json.loads(t)["error"] for s, t in self.answers if s == 409)
        if refused["type"] != "CapacityExceeded" or "asked > quota" not in refused["message"]:
            raise BenchError(f"{self.name}: refused for another reason: {refused}")
        self.run_id = next(json.loads(t)["id"] for s, t in self.answers if s == 201)

    def play(self, began: float, past_provisioning: threading.Barrier) -> None:
        """The run's two agents, from Provisioning to Done."""
        self._provisioned()
        state = self._state("Provisioning", "Initializing")
        for barrier in BARRIERS:
            state = self._state(barrier, state)
            for node in NODES:
                if barrier == "Executing" and node == "db.1":
                    self._node("PUT", f"/run/{self.run_id}/db.1:ready", "1")
                self._node("POST", f"/run/{self.run_id}/{node}:complete?state={barrier}", None)
            if barrier == "Provisioning":
                state = self._state("Executing", state)
                past_provisioning.wait(RUN_TIMEOUT)
                self._try_again()
        self._state("Done", state)
        self.done_seconds = time.perf_counter() - began

    def _try_again(self) -> None:
        body = {"module": f"bench-{self.name}/app", "keep_running": "never"}
        status, text = self.api.request("POST", "/api/runs", body)
        if status != 409:
            raise BenchError(f"{self.name}: a run more answered {status}: {text[:300]}")
        self.late_refusal = json.loads(text)["error"]["message"]

    def _provisioned(self) -> None:
        seen, last = 0, 0
        deadline = time.monotonic() + RUN_TIMEOUT
        while seen < len(NODES):
            for event in self.api.json("GET", f"/api/runs/{self.run_id}/events?after={last}"):
                last = event["id"]
                if event["kind"] == "provisioned":
                    seen += 1
                elif event["kind"] in ("provisioning-failed", "abort"):
                    raise BenchError(f"{self.name}: {event['kind']}: {event['message']}")
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name}: {seen} machine(s) after {RUN_TIMEOUT:.0f} s")
            time.sleep(0.1)

    def _state(self, want: str, seen: str) -> str:
        deadline, state = time.monotonic() + RUN_TIMEOUT, seen
        while ORDER.index(state) < ORDER.index(want):
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name}: still {state}, waiting for {want}")
            path = f"/run/{self.run_id}/ss:state?wait=30&differs={state}&ignoreabort=true"
            status, body = self.api.request("GET", path)
            if status == 200:
                state = body
            elif status != 412:
                raise BenchError(f"{self.name}: ss:state answered {status}: {body[:300]}")
            if state not in ORDER:
                run = self.api.json("GET", f"/api/runs/{self.run_id}")
                raise BenchError(f"{self.name}: the run went {state}: {run.get('abort_reason')}")
        return state

    def _node(self, method: str, path: str, body: str | None) -> None:
        status, text = self.nodes.request(method, path, body)
        if status != 200:
            raise BenchError(f"{self.name}: {method} {path} answered {status}: {text[:300]}")

    def close(self) -> None:
        for api in (self.api, self.racer, self.nodes):
            api.close()


class Sampler(threading.Thread):
    """What every user holds, asked of the server as administrator, until told to stop."""

    def __init__(self, server: Server, users: set[str]) -> None:
        super().__init__(daemon=True)
        self.api = Api(server.port, server.token)
        self.users = users
        self.stop = threading.Event()
        self.samples = 0
        self.most: dict[str, int] = {"instances": 0, "cpu": 0, "ram_mb": 0, "live": 0}
        self.overshoots: list[str] = []
        self.error: str | None = None

    def run(self) -> None:
        try:
            while not self.stop.wait(SAMPLE_EVERY):
                self.sample()
        except (OSError, http.client.HTTPException, BenchError) as exc:
            self.error = repr(exc)

    def sample(self) -> None:
        quotas = self.api.json("GET", "/api/quotas?all=true")["quotas"]
        live: dict[str, int] = {}
        for instance in self.api.json("GET", "/api/instances?all=true"):
            live[instance["owner"]] = live.get(instance["owner"], 0) + 1
        self.samples += 1
        for quota in quotas:
            user = quota["subject"].removeprefix("user:")
            if user not in self.users:
                continue
            for key, limit in QUOTA.items():
                held = quota["usage"][key]
                self.most[key] = max(self.most[key], held)
                if held > limit:
                    self.overshoots.append(f"{user} held {key} {held} > {limit}")
            self.most["live"] = max(self.most["live"], live.get(user, 0))
            if live.get(user, 0) > QUOTA["instances"]:
                self.overshoots.append(f"{user} had {live[user]} live instances")


def measure(server: Server, count: int) -> dict[str, Any]:
    pid = server.start()
    rss_start = proc_status(pid)
    log(f"server pid {pid} on port {server.port}")
    names = [f"u{i:02d}" for i in range(1, count + 1)]
    keys = make_users(server, names)
    admin = Api(server.port, server.token)
    for name in names:
        admin.json("PUT", f"/api/quotas/user:{name}", QUOTA)
    users = [User(server, name, keys[name]) for name in names]
    for user in users:
        user.push()
    log(f"{count} users made, each with an API key, a quota of one run and their modules")

    sampler = Sampler(server, set(names))
    sampler.start()
    gate = threading.Barrier(2 * count + 1)
    starters = [
        threading.Thread(target=u.start, args=(api, gate), daemon=True)
        for u in users
        for api in (u.api, u.racer)
    ]
    for thread in starters:
        thread.start()
    gate.wait()
    began = time.perf_counter()
    for thread in starters:
        thread.join(RUN_TIMEOUT)
    started = time.perf_counter() - began
    for user in users:
        user.check_starts()
    log(f"  {count} runs recorded and {count} racing starts refused in {started:.2f} s")

    failures: list[str] = []
    past_provisioning = threading.Barrier(count)

    def play(user: User) -> None:
        try:
            user.play(began, past_provisioning)
        except (BenchError, OSError, http.client.HTTPException, threading.BrokenBarrierError) as e:
            failures.append(f"{user.name}: {e}")
            past_provisioning.abort()

    players = [threading.Thread(target=play, args=(u,), daemon=True) for u in users]
    for thread in players:
        thread.start()
    for thread in players:
        thread.join(RUN_TIMEOUT)
    wall = time.perf_counter() - began
    sampler.stop.set()
    sampler.join(30)
    sampler.sample()  # once more, after the end
    memory = proc_status(pid)
    cpu = cpu_seconds(pid)
    if failures:
        raise BenchError(f"{len(failures)} user(s) failed, e.g. {failures[:3]}")
    if sampler.error:
        raise BenchError(f"sampling failed: {sampler.error}")
    if sampler.overshoots:
        raise BenchError(f"over quota: {sampler.overshoots[:5]}")
    runs = admin.json("GET", "/api/runs?all=true&limit=500")
    done = [r for r in runs if r["state"] == "Done"]
    if len(runs) != count or len(done) != count:
        raise BenchError(f"{len(done)} of {len(runs)} runs Done, {count} expected")
    after = admin.json("GET", "/api/quotas?all=true")["quotas"]
    still = [q["subject"] for q in after if q["usage"] and q["usage"]["instances"]]
    if still:
        raise BenchError(f"users still holding instances after Done: {still[:5]}")
    usage = admin.json("GET", "/api/usage?all=true&by=run")
    if usage["total"]["intervals"] != 2 * count or len(usage["rows"]) != count:
        raise BenchError(f"usage counts {usage['total']} over {len(usage['rows'])} runs")
    starts = [s for u in users for s in u.start_seconds]
    to_done = [u.done_seconds for u in users]
    complaints = server.complaints()
    admin.close()
    sampler.api.close()
    for user in users:
        user.close()
    return {
        "users": count,
        "database": server.database_url or "sqlite (default, in the temporary data directory)",
        "quota_per_user": QUOTA,
        "wall_seconds": wall,
        "starts": {
            "requests": len(starts),
            "recorded": count,
            "refused_racing": count,
            "seconds_all": started,
            "p50_ms": percentile(starts, 50) * 1000,
            "p99_ms": percentile(starts, 99) * 1000,
            "max_ms": max(starts) * 1000,
        },
        "refused_later": sum(1 for u in users if u.late_refusal),
        "late_refusal_example": users[0].late_refusal,
        "run_to_done_seconds": {"p50": percentile(to_done, 50), "max": max(to_done)},
        "samples": sampler.samples,
        "most_held_by_one_user": sampler.most,
        "overshoots": len(sampler.overshoots),
        "usage_total": usage["total"],
        "server_memory_kb": {
            "VmHWM": memory.get("VmHWM"),
            "VmRSS": memory.get("VmRSS"),
            "VmRSS_after_start": rss_start.get("VmRSS"),
        },
        "server_cpu_seconds": cpu,
        "server_log_complaints": len(complaints),
        "server_log_complaints_first": complaints[:10],
    }


def table(results: dict[str, Any]) -> str:
    s, mem = results["starts"], results["server_memory_kb"]
    most = results["most_held_by_one_user"]
    return "\n".join(
        [
            f"many users: {results['users']} users, one small deployment each, at once, "
            f"on the fake cloud ({results['database']})",
            f"quota per user: {results['quota_per_user']} (exactly one run)",
            f"\nwall time, gate -> last run Done      {results['wall_seconds']:9.3f} s",
            f"starts: {s['requests']} at once, {s['recorded']} recorded, {s['refused_racing']} "
            f"racing ones refused, in {s['seconds_all']:.3f} s (p50 {s['p50_ms']:.1f} ms, "
            f"p99 {s['p99_ms']:.1f} ms, max {s['max_ms']:.1f} ms)",
            f"a run more per user while theirs ran: {results['refused_later']} refused, e.g.",
            f"  {results['late_refusal_example']}",
            f"run -> Done: p50 {results['run_to_done_seconds']['p50']:.3f} s, "
            f"max {results['run_to_done_seconds']['max']:.3f} s",
            f"quota samples: {results['samples']}, overshoots: {results['overshoots']}; the most "
            f"one user held: {most['instances']} instances, {most['cpu']} vCPUs, "
            f"{most['ram_mb']} MiB, {most['live']} live instances",
            f"usage afterwards: {results['usage_total']}",
            f"\nserver memory: peak (VmHWM) {mem['VmHWM'] / 1024:.1f} MiB, VmRSS at the end "
            f"{mem['VmRSS'] / 1024:.1f} MiB, after start {mem['VmRSS_after_start'] / 1024:.1f} "
            f"MiB; CPU {results['server_cpu_seconds']:.1f} s",
            f"server log: {results['server_log_complaints']} warning/error line(s)",
            *(f"  {line[:160]}" for line in results["server_log_complaints_first"][:3]),
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50, help="users, one run each (50)")
    parser.add_argument(
        "--database-url", help="the server's store (default: SQLite in the temporary directory)"
    )
    parser.add_argument("--json-only", action="store_true", help="print only the JSON results")
    args = parser.parse_args()
    if not 1 <= args.users <= 99:
        parser.error("--users must be between 1 and 99")

    prefix = f"bench-{secrets.token_hex(3)}"
    work = ROOT / "bench" / f".many-{prefix}"
    server = Server(work, args.database_url)
    started = datetime.now(UTC)

    def cleanup() -> None:
        code = server.stop()
        log(f"cleanup: server stopped (exit {code}); removing {work.relative_to(ROOT)}")
        shutil.rmtree(work, ignore_errors=True)

    status, results = guarded(
        lambda: measure(server, args.users),
        cleanup,
        failures=(OSError, http.client.HTTPException, threading.BrokenBarrierError),
        on_failure=lambda: log(f"server log (tail):\n{server.log()}"),
    )
    if results is None:
        return status
    return publish(
        "many_users",
        started,
        prefix,
        {"sample_every_s": SAMPLE_EVERY},
        results,
        table,
        json_only=args.json_only,
    )


if __name__ == "__main__":
    sys.exit(main())
