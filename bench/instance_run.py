"""How long `stratus instance run` takes, compared with plain LXD.

Measures, on the local LXD cloud (image ``debian-12``, profile ``stratus``):

1. ``stratus instance run debian-12 --name NAME -o json``: wall time from spawn to exit.
2. Baseline A, "lxc launch + address": ``lxc launch debian-12 NAME -p stratus -q``, then polling
   the LXD REST API over its unix socket every 20 ms until the container has a global IPv4
   address. This is the fair floor: ``lxc launch`` returns as soon as the container is started,
   before DHCP has given it an address, whereas ``stratus instance run`` returns only once it
   has one. Polling uses a kept-alive stdlib ``http.client`` connection so it adds very little.
3. Baseline B, ``lxc launch`` alone (for information: it returns before there is an address).
4. The ratio median(1) / median(A), against the goal of at most 1.2.
5. ``stratus instance run -n 10`` against ten single runs in sequence (timed end to end), and
   beside baseline C: ten ``lxc launch`` started at once, until all ten have addresses (LXD's
   own floor for ten in parallel).

Stratus and lxc trials are interleaved so both see the same machine conditions. Every container
is deleted between trials, and a ``finally:`` block deletes whatever is left whose name starts
with this run's unique prefix ``bench-<6 hex>``; nothing else is touched. Run as root from the
project root: ``.venv/bin/python bench/instance_run.py [--trials N] [--par-trials N]``.
Results go to stdout (table, or JSON with --json-only) and bench/results/*.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import secrets
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

from common import (
    LXD_SOCKET,
    STRATUS,
    BenchError,
    UnixHTTPConnection,
    guarded,
    log,
    publish,
    summary,
    summary_lines,
)
from common import run as run_command

IMAGE = "debian-12"
PROFILE = "stratus"
TIMEOUT = 120.0
POLL = 0.02
PAR_COUNT = 10
# LXD keeps deleting the previous trial's btrfs subvolume in the background; each timed trial
# (stratus and lxc alike) starts after this pause, so that neither inherits the other's clean-up.
SETTLE = 1.5


def run(cmd: list[str], *, check: bool = True) -> tuple[float, str]:
    """Run ``cmd``; return (wall seconds from spawn to exit, stdout)."""
    start = time.perf_counter()
    proc = run_command(cmd, timeout=TIMEOUT, check=check)
    return time.perf_counter() - start, proc.stdout


def kill(*names: str) -> None:
    run([STRATUS, "instance", "kill", *names])


def delete(*names: str) -> None:
    run(["lxc", "delete", "-f", *names])


class Bench:
    def __init__(self) -> None:
        self.prefix = f"bench-{secrets.token_hex(3)}"
        self.conn = UnixHTTPConnection(LXD_SOCKET)

    def ping(self) -> None:
        self.conn.request("GET", "/1.0")
        resp = self.conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise BenchError(f"LXD API at {LXD_SOCKET} answered {resp.status}")

    def has_global_ipv4(self, name: str) -> bool:
        try:
            self.conn.request("GET", f"/1.0/instances/{name}/state")
            resp = self.conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()  # dropped keep-alive: reconnect on the next poll
            return False
        if resp.status != 200:
            return False
        network: dict[str, Any] = json.loads(body).get("metadata", {}).get("network") or {}
        return any(
            a.get("family") == "inet" and a.get("scope") == "global"
            for dev, net in network.items()
            if dev != "lo"
            for a in net.get("addresses") or []
        )

    def stratus_run(self, name: str, count: int = 1) -> float:
        cmd = [STRATUS, "instance", "run", IMAGE, "--name", name, "-o", "json"]
        if count > 1:
            cmd[4:4] = ["-n", str(count)]
        elapsed, out = run(cmd)
        instances = json.loads(out)
        if len(instances) != count or not all(i.get("addresses") for i in instances):
            raise BenchError(f"{' '.join(cmd)} gave unexpected output:\n{out}")
        return elapsed

    def lxc_trial(self, name: str) -> tuple[float, float]:
        """(seconds for `lxc launch` to return, seconds until the container has an address)."""
        self.ping()  # open the kept-alive connection outside the timing
        start = time.perf_counter()
        launched, _ = run(["lxc", "launch", IMAGE, name, "-p", PROFILE, "-q"])
        deadline = start + TIMEOUT
        while not self.has_global_ipv4(name):
            if time.perf_counter() > deadline:
                raise BenchError(f"{name} got no IPv4 address within {TIMEOUT:.0f} s")
            time.sleep(POLL)
        return launched, time.perf_counter() - start

    def lxc_parallel(self, names: list[str]) -> float:
        """Seconds for `lxc launch` of all ``names`` at once until every one has an address."""
        self.ping()
        start = time.perf_counter()
        launches = [
            subprocess.Popen(["lxc", "launch", IMAGE, n, "-p", PROFILE, "-q"]) for n in names
        ]
        for launch in launches:
            if launch.wait(timeout=TIMEOUT) != 0:
                raise BenchError(f"lxc launch failed for one of {names}")
        waiting = set(names)
        while waiting:
            if time.perf_counter() > start + TIMEOUT:
                raise BenchError(f"{sorted(waiting)} got no IPv4 address within {TIMEOUT:.0f} s")
            waiting = {n for n in waiting if not self.has_global_ipv4(n)}
            time.sleep(POLL)
        return time.perf_counter() - start

    def cleanup(self) -> list[str]:
        """Delete everything this run created; return the names that were still there."""
        self.conn.close()
        mine, live = self.prefix + "-", list[str]()
        try:  # through stratus first, so its records say gone; then lxc for whatever is left
            _, out = run([STRATUS, "instance", "list", "-o", "json"], check=False)
            records = json.loads(out) if out.lstrip().startswith("[") else []
            ours = [r for r in records if r["name"].startswith(mine) and r["state"] != "gone"]
            live = [r["name"] for r in ours]
            if live:
                run([STRATUS, "instance", "kill", *live], check=False)
        except (subprocess.TimeoutExpired, ValueError, KeyError) as exc:
            log(f"cleanup through stratus failed ({exc!r}); deleting with lxc")
        _, out = run(["lxc", "list", "--format", "csv", "-c", "n"], check=False)
        left = [n for n in out.split() if n.startswith(mine)]
        if left:
            run(["lxc", "delete", "-f", *left], check=False)
        return sorted(set(live) | set(left))


def measure(bench: Bench, trials: int, par_trials: int) -> dict[str, Any]:
    p = bench.prefix
    run([STRATUS, "server", "start"])
    log(f"warm-up (prefix {p}) ...")
    bench.stratus_run(f"{p}-warm-s")
    kill(f"{p}-warm-s")
    bench.lxc_trial(f"{p}-warm-l")
    delete(f"{p}-warm-l")

    single: list[float] = []
    launch: list[float] = []
    address: list[float] = []
    for i in range(1, trials + 1):
        time.sleep(SETTLE)
        single.append(bench.stratus_run(f"{p}-s{i}"))
        kill(f"{p}-s{i}")
        time.sleep(SETTLE)
        launched, addressed = bench.lxc_trial(f"{p}-l{i}")
        delete(f"{p}-l{i}")
        launch.append(launched)
        address.append(addressed)
        log(f"trial {i}/{trials}: stratus {single[-1]:.3f} s, lxc+address {addressed:.3f} s")

    par: list[float] = []
    seq: list[float] = []
    floor: list[float] = []
    for k in range(1, par_trials + 1):
        par.append(bench.stratus_run(f"{p}-par{k}", PAR_COUNT))
        kill(*(f"{p}-par{k}-{j}" for j in range(1, PAR_COUNT + 1)))
        lxc_names = [f"{p}-lpar{k}-{j}" for j in range(1, PAR_COUNT + 1)]
        floor.append(bench.lxc_parallel(lxc_names))
        delete(*lxc_names)
        names = [f"{p}-seq{k}-{j}" for j in range(1, PAR_COUNT + 1)]
        start = time.perf_counter()
        for name in names:
            bench.stratus_run(name)
        seq.append(time.perf_counter() - start)
        kill(*names)
        log(
            f"parallel trial {k}/{par_trials}: -n {PAR_COUNT} {par[-1]:.3f} s, "
            f"lxc parallel {floor[-1]:.3f} s, seq {seq[-1]:.3f} s"
        )

    ratio = statistics.median(single) / statistics.median(address)
    return {
        "stratus_run": summary(single),
        "baseline_a_lxc_launch_address": summary(address),
        "baseline_b_lxc_launch": summary(launch),
        "ratio_stratus_over_baseline_a": ratio,
        "ratio_goal_max": 1.2,
        "ratio_goal_met": ratio <= 1.2,
        f"stratus_run_n{PAR_COUNT}": summary(par),
        f"stratus_run_{PAR_COUNT}_sequential": summary(seq),
        f"baseline_c_lxc_launch_{PAR_COUNT}_parallel": summary(floor),
        "parallel_speedup": statistics.median(seq) / statistics.median(par),
    }


def table(results: dict[str, Any]) -> str:
    rows = [
        ("stratus instance run (1 instance)", "stratus_run"),
        ("baseline A: lxc launch + address", "baseline_a_lxc_launch_address"),
        ("baseline B: lxc launch alone", "baseline_b_lxc_launch"),
        (f"stratus instance run -n {PAR_COUNT}", f"stratus_run_n{PAR_COUNT}"),
        (f"{PAR_COUNT} x stratus instance run, in sequence", f"stratus_run_{PAR_COUNT}_sequential"),
        (
            f"baseline C: {PAR_COUNT} x lxc launch at once + addr",
            f"baseline_c_lxc_launch_{PAR_COUNT}_parallel",
        ),
    ]
    lines = summary_lines(rows, results)
    ratio, met = results["ratio_stratus_over_baseline_a"], results["ratio_goal_met"]
    lines.append(f"\nratio median(stratus run) / median(baseline A): {ratio:.3f}   goal: <= 1.2")
    lines[-1] += "   (met)" if met else "   (NOT met)"
    speedup = results["parallel_speedup"]
    lines.append(f"-n {PAR_COUNT} speed-up over {PAR_COUNT} sequential runs: {speedup:.2f}x")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10, help="single-instance trials (10)")
    parser.add_argument("--par-trials", type=int, default=3, help="-n 10 vs sequential trials (3)")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON results")
    args = parser.parse_args()
    if args.trials < 1 or args.par_trials < 1:
        parser.error("--trials and --par-trials must be at least 1")

    bench = Bench()
    started = datetime.now(UTC)

    def cleanup() -> None:
        left = bench.cleanup()
        log(f"cleanup: deleted leftovers {left}" if left else "cleanup: nothing left over")

    status, results = guarded(lambda: measure(bench, args.trials, args.par_trials), cleanup)
    if results is None:
        return status
    settings = {"trials": args.trials, "par_trials": args.par_trials}
    return publish(
        "instance_run", started, bench.prefix, settings, results, table, json_only=args.json_only
    )


if __name__ == "__main__":
    sys.exit(main())
