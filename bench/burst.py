"""Bursting: examples/webapp with ``--multiplicity web=8`` on a local cloud capped at 4
instances, its other node instances placed on a second LXD host, against the same run on one
host with room.

The second host is real: an LXD daemon inside a system container of this host's LXD
(``cloud/nested_host.py``, made or taken from its cached image), registered with the server
as the cloud ``host2`` over HTTPS (``stratus cloud add host2 --lxd URL --trust-password-stdin
--profile stratus --priority 200``). examples/webapp's image module lists ``debian-12`` for
both clouds.

Interleaved trials, a pause before each:

1. one host with room: ``stratus cloud set local --max-instances none``, then
   ``stratus deploy examples/webapp --multiplicity web=8 --keep-running always -o json``;
2. bursting: ``stratus cloud set local --max-instances 4``, then the same deploy: the first
   four node instances (by the plan's order) go to local, the seven others burst to host2.

For each: the deploy's wall time (spawn to exit: the run is Ready with every node done), the
server-side time (the run's first event to its ``-> Ready`` state event), and where each node
instance went (``stratus run show -o json``: ``cloud``, ``placement``). The run is then
terminated (untimed). Why it is fair: the same application, image, recipes, mirror and
machine; what differs is only where the eleven containers run. The second host is a container
on the same two cores, so "bursting" here pays nesting (its containers' storage is a btrfs pool
in a container, and its traffic crosses a second NAT), not a second machine's capacity: the
figure is the cost of spanning two LXD hosts, not a speed-up.

Cleanup in ``finally:``, even on Ctrl-C: every run started is terminated, local's cap is put
back as it was, host2 is removed from the store and the nested host deleted (its cached image
stays). Run as root from the project root:
``.venv/bin/python bench/burst.py [--trials 2] [--cap 4] [--web 8] [--json-only]``.
Results go to stdout and bench/results/burst-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from common import ROOT, STRATUS, BenchError, guarded, log, publish, run, summary, summary_lines

from stratuslab.cloud import nested_host

CLOUD = "host2"
DEPLOY_TIMEOUT = 1800.0
PAUSE = 5.0


def stratus(*args: str, stdin: str | None = None, timeout: float = 120.0) -> str:
    proc = subprocess.run(
        [STRATUS, *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise BenchError(f"stratus {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc.stdout


def cap_of_local() -> int | None:
    shown = json.loads(stratus("cloud", "show", "local", "-o", "json"))
    cap = shown.get("max_instances")
    return int(cap) if cap is not None else None


def set_cap(cap: int | None) -> None:
    stratus("cloud", "set", "local", "--max-instances", "none" if cap is None else str(cap))


def register(host: nested_host.NestedHost) -> None:
    known = {c["name"] for c in json.loads(stratus("cloud", "list", "-o", "json"))}
    if CLOUD in known:
        stratus("cloud", "remove", CLOUD)
    stratus(
        "cloud",
        "add",
        CLOUD,
        "--lxd",
        host.endpoint,
        "--trust-password-stdin",
        "--profile",
        host.profile,
        "--priority",
        "200",
        "-o",
        "json",
        stdin=host.trust_password + "\n",
    )


def server_side(run_id: str) -> float:
    events = json.loads(stratus("run", "events", run_id, "-o", "json"))
    start = datetime.fromisoformat(events[0]["at"])
    ready = next(e for e in events if e["kind"] == "state" and e["fields"].get("state") == "Ready")
    return (datetime.fromisoformat(ready["at"]) - start).total_seconds()


def active_runs() -> set[str]:
    listed = json.loads(stratus("run", "list", "--active", "-o", "json"))
    return {r["id"] for r in listed}


def ended(run_id: str) -> bool:
    shown = json.loads(stratus("run", "show", run_id, "-o", "json"))
    return shown["state"] in ("Done", "Aborted", "Cancelled")


def trial(label: str, web: int, started: list[str]) -> dict[str, Any]:
    time.sleep(PAUSE)
    log(f"{label}: stratus deploy examples/webapp --multiplicity web={web}")
    before = time.monotonic()
    proc = run(
        [
            STRATUS,
            "deploy",
            "examples/webapp",
            "--multiplicity",
            f"web={web}",
            "--keep-running",
            "always",
            "-o",
            "json",
        ],
        timeout=DEPLOY_TIMEOUT,
        check=False,
    )
    wall = time.monotonic() - before
    try:
        answer = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise BenchError(f"deploy printed no JSON: {proc.stdout}{proc.stderr}") from exc
    run_id = answer["id"]
    started.append(run_id)
    if proc.returncode != 0 or answer.get("state") != "Ready":
        raise BenchError(f"run {run_id} ended {answer.get('state')}: {proc.stderr[-2000:]}")
    shown = json.loads(stratus("run", "show", run_id, "-o", "json"))
    where = Counter(n["cloud"] for n in shown["nodes"])
    reasons = sorted({n["placement"] for n in shown["nodes"] if n.get("placement")})
    took = server_side(run_id)
    log(f"  {wall:.1f} s wall, {took:.1f} s server-side, placed {dict(where)}")
    stratus("run", "terminate", run_id, timeout=600)
    return {"wall": wall, "server": took, "placed": dict(where), "reasons": reasons}


def bench(trials: int, cap: int, web: int, started: list[str]) -> dict[str, Any]:
    rows: dict[str, list[dict[str, Any]]] = {"room": [], "burst": []}
    for n in range(trials):
        log(f"trial {n + 1} of {trials}")
        set_cap(None)
        rows["room"].append(trial("one host with room", web, started))
        set_cap(cap)
        rows["burst"].append(trial(f"local capped at {cap}, bursting to {CLOUD}", web, started))
    results: dict[str, Any] = {}
    for key, samples in rows.items():
        results[f"{key}_wall"] = summary([s["wall"] for s in samples])
        results[f"{key}_server"] = summary([s["server"] for s in samples])
        results[f"{key}_placed"] = [s["placed"] for s in samples]
        results[f"{key}_reasons"] = sorted({r for s in samples for r in s["reasons"]})
    results["ratio_wall"] = results["burst_wall"]["median"] / results["room_wall"]["median"]
    results["ratio_server"] = results["burst_server"]["median"] / results["room_server"]["median"]
    return results


def table(results: dict[str, Any]) -> str:
    lines = summary_lines(
        [
            ("one host with room: deploy wall", "room_wall"),
            ("one host with room: server-side", "room_server"),
            ("capped, bursting: deploy wall", "burst_wall"),
            ("capped, bursting: server-side", "burst_server"),
        ],
        results,
    )
    lines.append(f"placed, one host:  {results['room_placed']}")
    lines.append(f"placed, bursting:  {results['burst_placed']}")
    for reason in results["burst_reasons"]:
        lines.append(f"  reason: {reason}")
    lines.append(
        f"bursting / one host: wall {results['ratio_wall']:.2f}x, "
        f"server-side {results['ratio_server']:.2f}x"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--cap", type=int, default=4)
    parser.add_argument("--web", type=int, default=8)
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args()
    began = datetime.now(UTC)
    started: list[str] = []
    state: dict[str, Any] = {}

    def work() -> dict[str, Any]:
        stratus("cloud", "init", "-o", "json", timeout=600)
        state["before"] = active_runs()
        state["cap"] = cap_of_local()
        log("making the second host (cloud/nested_host.py)")
        made = time.monotonic()
        host = nested_host.ensure()
        state["host"] = host.name
        log(f"  {host.endpoint} in {time.monotonic() - made:.1f} s")
        register(host)
        state["registered"] = True
        return bench(args.trials, args.cap, args.web, started)

    def cleanup() -> None:
        # Runs this bench started, also one whose deploy was cut off before it said its id.
        mine = set(started) | (active_runs() - state["before"] if "before" in state else set())
        steps: list[tuple[str, Any]] = [
            (f"terminating {r}", lambda r=r: stratus("run", "terminate", r, timeout=600))
            for r in sorted(mine)
            if not ended(r)
        ]
        if "cap" in state:
            steps.append(("putting local's cap back", lambda: set_cap(state["cap"])))
        if state.get("registered"):
            steps.append((f"removing {CLOUD}", lambda: stratus("cloud", "remove", CLOUD)))
        if "host" in state:
            steps.append(("deleting the nested host", lambda: nested_host.remove(state["host"])))
        for what, step in steps:  # each step whatever the one before did
            try:
                step()
            except (BenchError, subprocess.TimeoutExpired) as exc:
                log(f"cleanup: {what} failed: {exc}")

    code, results = guarded(work, cleanup)
    if results is None:
        return code
    settings = {"trials": args.trials, "cap": args.cap, "web": args.web, "cloud": CLOUD}
    return publish("burst", began, "", settings, results, table, json_only=args.json_only)


if __name__ == "__main__":
    sys.exit(main())
