"""Deploy-to-Ready of examples/webapp with `stratus deploy`, beside a floor with no server.

Measures, on the local LXD cloud, interleaved (stratus, floor, stratus, floor, ...):

1. stratus, wall: ``stratus deploy examples/webapp --keep-running always -o json`` run from the
   project root, from spawn to exit. It returns once the run is Ready with every node instance
   done (exit 0 expected; the JSON it prints has ``id``, ``state`` and ``seconds``). This is what
   a user waits for: CLI start-up, module push, run creation, provisioning five containers,
   bootstrap of the node agents, the recipes (apt-get included), reports, the state barriers.
   The run is then terminated, untimed (``stratus run terminate <id>`` waits for teardown).
2. stratus, server-side: from the run's first event to its ``SendingReports -> Ready`` state
   event (``stratus run events <id> -o json``), i.e. without CLI start-up and module push.
3. The floor (bench/webapp_floor.py): the same five containers launched with ``lxc launch`` at
   once, the same recipe texts run straight through ``lxc exec`` in one thread per node
   instance, ``ss-*`` tools that are shell scripts over a shared host directory, no server.
   From the start of the launches until every node's last recipe has returned, and checked to
   have deployed something real (every recipe exit 0, the test node's ``result`` is ``passed``).

Why the baseline is fair: same machine, image, profile, pool, bridge and Debian mirror, same
recipes and packages, the same parallelism (every node at once, ordered only by blocking
``ss-get``), nothing measured that StratusLab does not also have to do; what the floor leaves out
is what StratusLab adds (API, store, agent bootstrap, barriers, reports, Python tools). The floor
has one documented accommodation that can only slow it (see ``SETTLE`` in webapp_floor.py).
Interleaving gives both the same conditions (mirror, page cache, LXD's background clean-up); a
pause precedes each trial. Reported: median/min/max of each, and median(stratus wall) /
median(floor) against the goal <= 1.15, plus the same ratio with the server-side figure.

Every stratus run started is terminated in ``finally:`` (a deploy interrupted before it printed
its id is found among the active runs that were not there before it started); every floor
container (``bench-<6 hex>-f<N>-<node>-<i>``) is deleted after its trial and in ``finally:``,
with the floor's host directories. Run as root from the project root:
``.venv/bin/python bench/deploy_webapp.py [--trials 3] [--json-only]``. Results go to stdout
(table, or JSON with --json-only) and bench/results/deploy_webapp-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

from common import STRATUS, BenchError, guarded, log, publish, run, summary, summary_lines
from webapp_floor import SETTLE, Floor, FloorResult

APP = "examples/webapp"
DEPLOY_TIMEOUT = 1200.0  # one `stratus deploy` (the recipes wait up to 900 s for each other)
CLI_TIMEOUT = 300.0  # any other stratus command (terminate waits for teardown)
SETTLE_PAUSE = 2.0  # before each timed trial, so that none inherits the previous one's clean-up
GOAL = 1.15


def stratus(*args: str, check: bool = True, timeout: float = CLI_TIMEOUT) -> tuple[int, str, str]:
    proc = run([STRATUS, *args], timeout=timeout, check=check)
    return proc.returncode, proc.stdout, proc.stderr


def at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["at"]).timestamp()


class Bench:
    def __init__(self, settle: float) -> None:
        self.prefix = f"bench-{secrets.token_hex(3)}"
        self.floor = Floor(self.prefix, settle=settle)
        self.runs: list[str] = []  # every run started, terminated or not
        self.terminated: set[str] = set()
        self.deploying_since: tuple[float, set[str]] | None = None  # a deploy under way

    def active_runs(self) -> list[dict[str, Any]]:
        _, out, _ = stratus("run", "list", "--active", "-n", "100", "-o", "json")
        runs: list[dict[str, Any]] = json.loads(out)
        return runs

    def stratus_trial(self) -> dict[str, Any]:
        before = {r["id"] for r in self.active_runs()}
        self.deploying_since = (time.time(), before)
        start = time.perf_counter()
        deploy = [STRATUS, "deploy", APP, "--keep-running", "always", "-o", "json"]
        proc = run(deploy, timeout=DEPLOY_TIMEOUT, check=False)
        wall = time.perf_counter() - start
        try:
            final: dict[str, Any] = json.loads(proc.stdout)
        except ValueError:
            final = {}
        if final.get("id"):
            self.runs.append(final["id"])
            self.deploying_since = None
        if proc.returncode != 0 or final.get("state") != "Ready":
            raise BenchError(
                f"stratus deploy {APP} exited {proc.returncode} (state {final.get('state')}):\n"
                f"{proc.stdout}{proc.stderr}"
            )
        run_id = final["id"]
        _, out, _ = stratus("run", "events", run_id, "-o", "json")
        events: list[dict[str, Any]] = json.loads(out)
        states = {e["message"]: at(e) for e in events if e["kind"] == "state"}
        first = at(events[0])
        ready = states.get("SendingReports -> Ready")
        if ready is None:
            raise BenchError(f"run {run_id} has no 'SendingReports -> Ready' event")
        self.terminate(run_id)
        return {
            "id": run_id,
            "wall": wall,
            "cli_seconds": final.get("seconds"),
            "server_ready": ready - first,
            "states": {message: round(t - first, 3) for message, t in states.items()},
        }

    def terminate(self, run_id: str) -> None:
        stratus("run", "terminate", run_id, "-o", "json", check=False)
        self.terminated.add(run_id)

    def floor_trial(self, tag: str) -> FloorResult:
        return self.floor.trial(tag)

    def cleanup(self) -> tuple[list[str], list[str]]:
        """Terminate every run left, delete every floor container; (runs, containers)."""
        left = [r for r in self.runs if r not in self.terminated]
        if self.deploying_since is not None:  # interrupted before it printed its id
            since, before = self.deploying_since
            try:
                for run in self.active_runs():
                    created = datetime.fromisoformat(run["created_at"]).timestamp()
                    is_ours = run["module"].startswith(APP + "/") and created >= since - 1
                    if run["id"] not in before and is_ours:
                        left.append(run["id"])
            except (BenchError, subprocess.TimeoutExpired, ValueError) as exc:
                log(f"cleanup: could not list active runs ({exc})")
        for run_id in left:
            try:
                self.terminate(run_id)
            except subprocess.TimeoutExpired:
                log(f"cleanup: terminating run {run_id} timed out")
        return left, self.floor.cleanup()


def measure(bench: Bench, trials: int) -> dict[str, Any]:
    stratus("server", "start")
    log(f"prefix {bench.prefix}; {trials} trial(s) of stratus deploy and of the floor")
    runs: list[dict[str, Any]] = []
    floors: list[FloorResult] = []
    for i in range(1, trials + 1):
        time.sleep(SETTLE_PAUSE)
        runs.append(bench.stratus_trial())
        log(
            f"trial {i}/{trials}: stratus deploy {runs[-1]['wall']:.3f} s "
            f"(server-side Ready {runs[-1]['server_ready']:.3f} s)"
        )
        time.sleep(SETTLE_PAUSE)
        floors.append(bench.floor_trial(f"f{i}"))
        log(f"trial {i}/{trials}: floor {floors[-1].seconds:.3f} s")

    wall = [r["wall"] for r in runs]
    server = [r["server_ready"] for r in runs]
    floor = [f.seconds for f in floors]
    ratio = statistics.median(wall) / statistics.median(floor)
    ratio_server = statistics.median(server) / statistics.median(floor)
    return {
        "stratus_deploy_wall": summary(wall),
        "stratus_server_ready": summary(server),
        "floor": summary(floor),
        "floor_containers_ready": summary([f.ready_seconds for f in floors]),
        "ratio_wall_over_floor": ratio,
        "ratio_server_over_floor": ratio_server,
        "ratio_goal_max": GOAL,
        "ratio_goal_met": ratio <= GOAL,
        "stratus_runs": runs,
        "floor_trials": [f.__dict__ for f in floors],
    }


def table(results: dict[str, Any]) -> str:
    rows = [
        ("stratus deploy (wall, to Ready)", "stratus_deploy_wall"),
        ("stratus server-side: 1st event -> Ready", "stratus_server_ready"),
        ("floor: lxc launch + recipes, no server", "floor"),
        ("  floor: of which 5 containers up", "floor_containers_ready"),
    ]
    lines = summary_lines(rows, results)
    ratio, met = results["ratio_wall_over_floor"], results["ratio_goal_met"]
    lines.append(f"\nratio median(stratus wall) / median(floor): {ratio:.3f}   goal: <= {GOAL}")
    lines[-1] += "   (met)" if met else "   (NOT met)"
    lines.append(
        f"ratio median(server-side Ready) / median(floor): {results['ratio_server_over_floor']:.3f}"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3, help="trials of each (3)")
    parser.add_argument(
        "--settle-ms",
        type=float,
        default=SETTLE * 1000,
        help=f"the floor's accommodation, see webapp_floor.py ({SETTLE * 1000:.0f})",
    )
    parser.add_argument("--json-only", action="store_true", help="print only the JSON results")
    args = parser.parse_args()
    if args.trials < 1 or args.settle_ms < 0:
        parser.error("--trials must be at least 1, --settle-ms at least 0")

    bench = Bench(settle=args.settle_ms / 1000)
    started = datetime.now(UTC)

    def cleanup() -> None:
        runs, containers = bench.cleanup()
        log(f"cleanup: terminated runs {runs}" if runs else "cleanup: no run left")
        log(f"cleanup: deleted {containers}" if containers else "cleanup: no container left")

    status, results = guarded(lambda: measure(bench, args.trials), cleanup)
    if results is None:
        return status
    settings = {"trials": args.trials, "settle_ms": args.settle_ms}
    return publish(
        "deploy_webapp", started, bench.prefix, settings, results, table, json_only=args.json_only
    )


if __name__ == "__main__":
    sys.exit(main())
