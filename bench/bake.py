"""Baked images: deploy-to-Ready of examples/webapp baked, pristine and on the floor; baking
the whole application; `stratus instance run` of a baked image against `lxc launch` of it.

Measures, on the local LXD cloud, in one run:

1. Baking the whole application once: ``stratus image bake examples/webapp -o json`` (every
   node's component baked side by side on the server) after the webapp's baked images of a
   previous run were deleted, from spawn to exit; then again when nothing changed (every
   digest answers its image; goal under 1 s).
2. Interleaved, ``--trials`` times each (baked, pristine, floor, baked, ...): ``stratus deploy
   examples/webapp --keep-running always -o json`` starting every node from its baked image
   (only the deployment and report recipes run), the same with ``--pristine`` (every install
   step runs, apt included: the figure of bench/deploy_webapp.py), and the floor of
   bench/webapp_floor.py (the same containers and recipes, from the pristine image, with no
   server). Wall time from spawn to exit, and server-side from the run's first event to Ready,
   as deploy_webapp.py measures them (its ``Bench`` is reused: runs terminated untimed, floor
   containers deleted). Goal: baked under 8 s.
3. ``stratus instance run IMAGE`` of the web component's baked image against ``lxc launch`` of
   the same image until it has an address (bench/instance_run.py's trials, reused with that
   image). Goal: at most 1.1x.

Every run is terminated and every container deleted in ``finally:``; the baked images are
kept (they are the user's, and the next deploy uses them). Run as root from the project root:
``.venv/bin/python bench/bake.py [--trials 3] [--run-trials 5] [--json-only]``. Results go to
stdout and bench/results/bake-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from typing import Any

import deploy_webapp
import instance_run
from common import STRATUS, BenchError, guarded, log, publish, run, summary, summary_lines
from deploy_webapp import APP, DEPLOY_TIMEOUT, SETTLE_PAUSE, at, stratus
from webapp_floor import SETTLE, Floor, FloorResult

BAKED_GOAL = 8.0
HIT_GOAL = 1.0
RUN_GOAL = 1.1


class Bench(deploy_webapp.Bench):
    baked_floor: Floor | None = None  # the floor from the baked images, once they are made

    def cleanup(self) -> tuple[list[str], list[str]]:
        runs, containers = super().cleanup()
        if self.baked_floor is not None:
            containers = [*containers, *self.baked_floor.cleanup()]
        return runs, containers

    def deploy(self, *flags: str) -> dict[str, Any]:
        """One `stratus deploy` to Ready with ``flags``, timed, then terminated untimed."""
        before = {r["id"] for r in self.active_runs()}
        self.deploying_since = (time.time(), before)
        start = time.perf_counter()
        command = [STRATUS, "deploy", APP, *flags, "--keep-running", "always", "-o", "json"]
        proc = run(command, timeout=DEPLOY_TIMEOUT, check=False)
        wall = time.perf_counter() - start
        final: dict[str, Any] = json.loads(proc.stdout) if proc.stdout.startswith("{") else {}
        if final.get("id"):
            self.runs.append(final["id"])
            self.deploying_since = None
        if proc.returncode != 0 or final.get("state") != "Ready":
            raise BenchError(f"{' '.join(command)} exited {proc.returncode}:\n{proc.stderr}")
        _, out, _ = stratus("run", "events", final["id"], "-o", "json")
        events: list[dict[str, Any]] = json.loads(out)
        ready = [at(e) for e in events if e["message"] == "SendingReports -> Ready"]
        self.terminate(final["id"])
        return {
            "id": final["id"],
            "wall": wall,
            "server_ready": ready[0] - at(events[0]),
            "baked": sorted(final.get("baked") or {}),
        }


def bake_app() -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    _, out, _ = stratus("image", "bake", APP, "-o", "json", timeout=DEPLOY_TIMEOUT)
    return time.perf_counter() - start, json.loads(out)


def forget_baked() -> list[str]:
    """Delete the webapp's baked images a previous run left, so that the bake is timed whole
    (the catalog forgets a record whose image is gone at the next bake)."""
    _, out, _ = stratus("image", "list", "--baked", "-o", "json")
    names = [i["name"] for i in json.loads(out) if str(i["component"]).startswith(APP + "/")]
    for name in names:
        run(["lxc", "image", "delete", name], timeout=120, check=False)
    return names


def measure(bench: Bench, trials: int, run_trials: int) -> dict[str, Any]:
    stratus("server", "start")
    log(f"deleted earlier baked images: {forget_baked()}")
    once, made = bake_app()
    log(f"baked {APP} in {once:.1f} s: {made['baked']} baked, {made['cached']} already")
    hits = [bake_app()[0] for _ in range(3)]
    log(f"nothing changed: {', '.join(f'{h:.3f}' for h in hits)} s")
    baked: list[dict[str, Any]] = []
    pristine: list[dict[str, Any]] = []
    floors: list[FloorResult] = []
    baked_floors: list[FloorResult] = []
    images = {n: str(r["image"]["name"]) for n, r in made["nodes"].items()}
    bench.baked_floor = Floor(bench.prefix + "-b", settle=bench.floor.settle, images=images)
    for i in range(1, trials + 1):
        time.sleep(SETTLE_PAUSE)
        baked.append(bench.deploy())
        time.sleep(SETTLE_PAUSE)
        baked_floors.append(bench.baked_floor.trial(f"b{i}"))
        time.sleep(SETTLE_PAUSE)
        pristine.append(bench.deploy("--pristine"))
        time.sleep(SETTLE_PAUSE)
        floors.append(bench.floor_trial(f"f{i}"))
        log(
            f"trial {i}/{trials}: baked {baked[-1]['wall']:.2f} s (its floor "
            f"{baked_floors[-1].seconds:.2f} s), pristine {pristine[-1]['wall']:.2f} s, floor "
            f"{floors[-1].seconds:.2f} s"
        )
    web = made["nodes"]["web"]["image"]["name"]
    instance_run.IMAGE = web  # the same trials, of the baked image
    runs, launches = [], []
    machines = instance_run.Bench()
    machines.prefix = bench.prefix + "-i"
    try:
        for i in range(run_trials):
            time.sleep(instance_run.SETTLE)
            runs.append(machines.stratus_run(f"{machines.prefix}-s{i}"))
            instance_run.kill(f"{machines.prefix}-s{i}")
            time.sleep(instance_run.SETTLE)
            launches.append(machines.lxc_trial(f"{machines.prefix}-l{i}")[1])
            instance_run.delete(f"{machines.prefix}-l{i}")
    finally:
        machines.cleanup()
    median = statistics.median
    return {
        "bake_once": once,
        "bake_nothing_changed": summary(hits),
        "deploy_baked_wall": summary([b["wall"] for b in baked]),
        "deploy_baked_server_ready": summary([b["server_ready"] for b in baked]),
        "deploy_pristine_wall": summary([p["wall"] for p in pristine]),
        "deploy_pristine_server_ready": summary([p["server_ready"] for p in pristine]),
        "floor": summary([f.seconds for f in floors]),
        "floor_baked": summary([f.seconds for f in baked_floors]),
        "instance_run_baked": summary(runs),
        "lxc_launch_baked": summary(launches),
        "ratio_baked_over_floor": median([b["wall"] for b in baked])
        / median([f.seconds for f in baked_floors]),
        "ratio_pristine_over_floor": median([p["wall"] for p in pristine])
        / median([f.seconds for f in floors]),
        "ratio_instance_run_over_lxc": median(runs) / median(launches),
        "goals": {
            "baked_under_s": BAKED_GOAL,
            "baked_met": median([b["wall"] for b in baked]) < BAKED_GOAL,
            "nothing_changed_under_s": HIT_GOAL,
            "nothing_changed_met": median(hits) < HIT_GOAL,
            "instance_run_ratio_max": RUN_GOAL,
            "instance_run_met": median(runs) / median(launches) <= RUN_GOAL,
        },
        "image": web,
        "baked_images": {n: r["image"]["name"] for n, r in made["nodes"].items()},
        "runs": {"baked": baked, "pristine": pristine},
        "floor_trials": [f.__dict__ for f in floors],
        "baked_floor_trials": [f.__dict__ for f in baked_floors],
    }


def table(results: dict[str, Any]) -> str:
    rows = [
        ("bake examples/webapp, nothing changed", "bake_nothing_changed"),
        ("deploy baked (wall, to Ready)", "deploy_baked_wall"),
        ("  baked server-side: 1st event -> Ready", "deploy_baked_server_ready"),
        ("deploy pristine (wall, to Ready)", "deploy_pristine_wall"),
        ("  pristine server-side", "deploy_pristine_server_ready"),
        ("floor: lxc launch + recipes, no server", "floor"),
        ("floor from the baked images (no install)", "floor_baked"),
        ("stratus instance run <baked web>", "instance_run_baked"),
        ("lxc launch <baked web> + address", "lxc_launch_baked"),
    ]
    lines = [f"bake examples/webapp once: {results['bake_once']:.1f} s"]
    lines += summary_lines(rows, results)
    lines.append(
        f"baked / its floor {results['ratio_baked_over_floor']:.2f}; pristine / its floor "
        f"{results['ratio_pristine_over_floor']:.2f}"
    )
    goals = results["goals"]
    lines.append(
        f"\nbaked deploy under {goals['baked_under_s']:g} s: {goals['baked_met']}; "
        f"nothing changed under {goals['nothing_changed_under_s']:g} s: "
        f"{goals['nothing_changed_met']}; instance run / lxc launch "
        f"{results['ratio_instance_run_over_lxc']:.3f} "
        f"(goal <= {goals['instance_run_ratio_max']}): {goals['instance_run_met']}"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3, help="deploy trials of each (3)")
    parser.add_argument("--run-trials", type=int, default=5, help="instance run trials (5)")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON results")
    args = parser.parse_args()
    if args.trials < 1 or args.run_trials < 1:
        parser.error("--trials and --run-trials must be at least 1")
    bench = Bench(settle=SETTLE)
    started = datetime.now(UTC)

    def cleanup() -> None:
        runs, containers = bench.cleanup()
        log(f"cleanup: terminated runs {runs}" if runs else "cleanup: no run left")
        log(f"cleanup: deleted {containers}" if containers else "cleanup: no container left")

    status, results = guarded(lambda: measure(bench, args.trials, args.run_trials), cleanup)
    if results is None:
        return status
    settings = {"trials": args.trials, "run_trials": args.run_trials}
    return publish(
        "bake", started, bench.prefix, settings, results, table, json_only=args.json_only
    )


if __name__ == "__main__":
    sys.exit(main())
