"""Takeover: kill one of two server processes (SIGKILL) during Provisioning and during Executing.

Two server processes share one PostgreSQL database (made for the benchmark, dropped after), one
data directory and one port (SO_REUSEPORT), and the shared fake backend (``fake-shared``: both
see its instances). Each trial starts a run of N node instances (``--instances``, 300) and
plays its agents as ``control_plane.py`` does (its ``Server`` and ``Driver`` are reused):

- Provisioning: once a tenth of the instances are provisioned, the process holding the run's
  claim (``runs.claimed_by``, read from the store) is killed with SIGKILL. Takeover time: from
  the kill to the survivor's claim on the run (polled in the store every 10 ms).
- Executing: once the run is in Executing and half the nodes have completed it, one of the
  two processes is killed (the one that provisioned the run). Takeover time: from the kill to
  the next request of a node answered (by the survivor, the only one left on the port).

Then the rest of the run is driven to Done through the survivor, and a new second process is
started for the next trial. Reported per phase: trials, runs that reached Done, node
instances that failed provisioning, instances left on the backend after Done (must be 0), and
the takeover time (median, p90, max). Run from the project root:
``.venv/bin/python bench/takeover.py --postgres-admin-url URL [--trials 10] [--instances 300]
[--lease 60]``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import sqlite3
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy
from common import ROOT, BenchError, guarded, log, percentile, publish
from control_plane import BARRIERS, ORDER, Driver, Server, _drop_database, _make_database


class Pair:
    """Two server processes on one store, data directory and port."""

    def __init__(self, work: Path, url: str, lease: int) -> None:
        self.work, self.url, self.lease = work, url, lease
        self.first = self._made(None)
        self.servers = [self.first]

    def _made(self, beside: Server | None) -> Server:
        server = Server(self.work, self.url, beside=beside, shared_fake=True)
        server.extra_env = {"STRATUS_CLAIM_LEASE_S": str(self.lease)}
        return server

    def start(self) -> None:
        self.first.start()
        self.add()

    def add(self) -> None:
        """A process more beside the first (which owns the data dir and the port)."""
        server = self._made(self.first)
        server.start()
        self.servers.append(server)

    def live(self) -> list[Server]:
        return [s for s in self.servers if s.process is not None and s.process.poll() is None]

    def kill(self, pid: int) -> Server:
        (victim,) = [s for s in self.live() if s.process is not None and s.process.pid == pid]
        os.kill(pid, signal.SIGKILL)
        assert victim.process is not None
        victim.process.wait()
        return victim

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()


def claimer(engine: sqlalchemy.Engine, run_id: str) -> str | None:
    with engine.connect() as conn:
        found = conn.execute(
            sqlalchemy.text("SELECT claimed_by FROM runs WHERE id = :r"), {"r": run_id}
        ).scalar()
    return None if found is None else str(found)


def provisioned(engine: sqlalchemy.Engine, run_id: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sqlalchemy.text(
                    "SELECT count(*) FROM node_instances WHERE run_id = :r"
                    " AND provisioning = 'ready'"
                ),
                {"r": run_id},
            ).scalar()
            or 0
        )


def failures(engine: sqlalchemy.Engine, run_id: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sqlalchemy.text(
                    "SELECT count(*) FROM run_events WHERE run_id = :r"
                    " AND kind = 'provisioning-failed'"
                ),
                {"r": run_id},
            ).scalar()
            or 0
        )


def left_on_backend(work: Path) -> int:
    with sqlite3.connect(work / "fake.sqlite") as db:
        return int(db.execute("SELECT count(*) FROM instances").fetchone()[0])


def answered(driver: Driver, run_id: str) -> bool:
    try:
        return driver.api.request("GET", f"/run/{run_id}/ss:state")[0] == 200
    except OSError:  # the killed process's connection: the next attempt opens another
        driver.api.conn.close()
        return False


def pid_of(claim: str) -> int:
    return int(claim.split(":")[1])


def wait_for(condition: Any, timeout: float, what: str, every: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)


def trial(pair: Pair, engine: sqlalchemy.Engine, n: int, phase: str) -> dict[str, Any]:
    survivor_api = pair.first  # the driver talks to the shared port: whoever answers
    driver = Driver(survivor_api, n)
    driver.start_run()
    run_id = driver.run_id
    taken: float
    if phase == "Provisioning":
        claim = wait_for(lambda: claimer(engine, run_id), 60, "a claim on the run")
        wait_for(lambda: provisioned(engine, run_id) >= n // 10, 120, "a tenth provisioned")
        killed_at = time.perf_counter()
        victim = pair.kill(pid_of(claim))
        new = wait_for(
            lambda: (c := claimer(engine, run_id)) is not None and c != claim and c,
            600,
            "the survivor's claim",
        )
        taken = time.perf_counter() - killed_at
        log(f"  {run_id[:8]}: {claim} killed, {new} took over in {taken:.3f} s")
        driver.wait_provisioned()
        state = driver.wait_state("Provisioning", "Initializing", or_later=True)
        barriers = BARRIERS
    else:
        driver.wait_provisioned()
        state = driver.wait_state("Provisioning", "Initializing")
        driver.storm("Provisioning")
        state = driver.wait_state("Executing", state)
        driver.storm("Executing", range(1, n // 2 + 1))  # the first half completes it
        live = pair.live()
        victim_pid = live[0].process.pid if live[0].process else 0
        killed_at = time.perf_counter()
        victim = pair.kill(victim_pid)
        # The next node request answered, by the survivor: a node of the other half.
        wait_for(lambda: answered(driver, run_id), 600, "a node's request answered")
        taken = time.perf_counter() - killed_at
        log(f"  {run_id[:8]}: pid {victim_pid} killed, answered again in {taken:.3f} s")
        driver.storm("Executing", range(n // 2 + 1, n + 1))  # then the other half
        state = driver.wait_state("SendingReports", state, or_later=True)
        barriers = ("SendingReports", "Ready")
    for barrier in barriers:
        if ORDER.index(state) > ORDER.index(barrier):
            continue
        state = driver.wait_state(barrier, state)
        driver.storm(barrier)
        following = ORDER[ORDER.index(barrier) + 1]
        state = driver.wait_state(following, state, or_later=following == "Finalizing")
    state = driver.wait_state("Done", state)
    failed = failures(engine, run_id)
    left = left_on_backend(pair.work)
    driver.api.close()
    pair.servers.remove(victim)
    if victim is pair.first:  # the survivor keeps the port; it is the first now
        pair.first = pair.servers[0]
        pair.first.beside = None
    pair.add()
    return {"run": run_id, "done": state == "Done", "failed": failed, "left": left, "s": taken}


def measure(args: argparse.Namespace, work: Path, url: str) -> dict[str, Any]:
    pair = Pair(work, url, args.lease)
    engine = sqlalchemy.create_engine(url)
    try:
        pair.start()
        Driver(pair.first, args.instances).push_modules()
        results: dict[str, Any] = {"instances": args.instances, "lease_s": args.lease}
        for phase in ("Provisioning", "Executing"):
            trials = []
            for number in range(1, args.trials + 1):
                log(f"{phase}: trial {number}/{args.trials}")
                trials.append(trial(pair, engine, args.instances, phase))
            seconds = [t["s"] for t in trials]
            results[phase] = {
                "trials": len(trials),
                "done": sum(t["done"] for t in trials),
                "failed_node_instances": sum(t["failed"] for t in trials),
                "instances_left": sum(t["left"] for t in trials),
                "takeover_s": {
                    "median": statistics.median(seconds),
                    "p90": percentile(seconds, 90),
                    "max": max(seconds),
                    "samples": seconds,
                },
            }
        return results
    finally:
        engine.dispose()
        pair.stop()


def table(results: dict[str, Any]) -> str:
    lines = [
        f"takeover: 2 server processes on PostgreSQL, runs of {results['instances']} node "
        f"instances on the shared fake, lease {results['lease_s']} s",
        f"{'killed during':<14} {'trials':>6} {'Done':>5} {'failed':>7} {'left':>5} "
        f"{'median s':>9} {'p90 s':>7} {'max s':>7}",
    ]
    for phase in ("Provisioning", "Executing"):
        r = results[phase]
        t = r["takeover_s"]
        lines.append(
            f"{phase:<14} {r['trials']:>6} {r['done']:>5} {r['failed_node_instances']:>7} "
            f"{r['instances_left']:>5} {t['median']:>9.3f} {t['p90']:>7.3f} {t['max']:>7.3f}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres-admin-url", required=True, help="makes the database")
    parser.add_argument("--trials", type=int, default=10, help="per phase (10)")
    parser.add_argument("--instances", type=int, default=300, help="node instances a run (300)")
    parser.add_argument("--lease", type=int, default=60, help="claim_lease_s of the servers")
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args()
    prefix = f"bench-{secrets.token_hex(3)}"
    work = ROOT / "bench" / f".takeover-{prefix}"
    url = _make_database(args.postgres_admin_url)
    started = datetime.now(UTC)

    def cleanup() -> None:
        shutil.rmtree(work, ignore_errors=True)
        _drop_database(args.postgres_admin_url, url)

    status, results = guarded(lambda: measure(args, work, url), cleanup, failures=(OSError,))
    if results is None:
        return status
    return publish("takeover", started, prefix, {}, results, table, json_only=args.json_only)


if __name__ == "__main__":
    sys.exit(main())
