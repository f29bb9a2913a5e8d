"""Volumes on the local LXD cloud: attach and detach latency, and write throughput.

Measures, on one running container (image ``debian-12``, the connector's profile and pool):

1. Attach and detach of a custom volume through ``LxdConnector.attach_volume`` and
   ``detach_volume``, each timed from call to return (the mount is there, or gone, when they
   return), ``--trials`` times. Beside it, interleaved trial by trial, the same LXD API calls
   made directly with httpx on the unix socket: attach is ``GET /1.0/instances/<name>`` (its
   ETag) and ``PATCH`` of the disk device with ``If-Match``; detach is the ``GET`` and a ``PUT``
   of the instance without the device, with ``If-Match``, and the wait for its operation. The
   ratio of the medians is the connector's overhead (goal: at most 1.2). Other ways in (the
   server's ``stratus volume attach``) go through :func:`time_cycles`, which takes the attach
   and detach callables.
2. Write throughput inside the container: ``dd`` of ``--mib`` MiB (``conv=fdatasync``) to the
   attached volume and to the root disk (the same btrfs pool), ``--dd-trials`` times each,
   interleaved; the median MiB/s of each and their ratio.

Everything is named ``bench-<6 hex>-...`` and deleted at the end (the container, the volumes),
even on failure or Ctrl-C. Needs LXD as ``make setup`` left it and no other test using it.
From the project root: ``.venv/bin/python bench/volumes.py [--trials 20] [--dd-trials 3]
[--mib 256] [--json-only]``. Results go to stdout and bench/results/volumes-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from common import BenchError, guarded, log, percentile, publish, summary

from stratuslab import config
from stratuslab.cloud.base import InstanceSpec, Mount, VolumeSpec
from stratuslab.cloud.connectors.lxd import LxdConnector
from stratuslab.cloud.connectors.lxd_volumes import device_name
from stratuslab.errors import StratusError

IMAGE = "debian-12"
GOAL = 1.2
MiB = 1 << 20
PATH = "/mnt/bench"
_PUT_KEYS = ("architecture", "config", "devices", "ephemeral", "profiles", "stateful")
_DD = re.compile(r"(\d+) bytes .* copied, ([\d.]+) s")


def time_cycles(
    attach: Callable[[], None], detach: Callable[[], None], trials: int
) -> tuple[list[float], list[float]]:
    """Seconds of each of ``trials`` attaches, and of the detach after each."""
    attached: list[float] = []
    detached: list[float] = []
    for _ in range(trials):
        start = time.perf_counter()
        attach()
        attached.append(time.perf_counter() - start)
        start = time.perf_counter()
        detach()
        detached.append(time.perf_counter() - start)
    return attached, detached


class Direct:
    """The connector's LXD requests for an attach and a detach, made by hand with httpx."""

    def __init__(self, socket: str, profile: str, instance: str, volume: str) -> None:
        self.http = httpx.Client(
            transport=httpx.HTTPTransport(uds=socket), base_url="http://lxd", timeout=60
        )
        root = self.http.get(f"/1.0/profiles/{profile}").json()["metadata"]["devices"]["root"]
        pool = root["pool"]  # where the connector keeps volumes: its profile's root disk pool
        self.path = f"/1.0/instances/{instance}"
        self.device = device_name(volume)
        self.disk = {"type": "disk", "pool": pool, "source": volume, "path": PATH}

    def attach(self) -> None:
        read = self.http.get(self.path)
        meta = read.json()["metadata"]
        body = {"devices": {self.device: self.disk}, "description": meta.get("description", "")}
        sent = self.http.patch(self.path, json=body, headers={"If-Match": read.headers["etag"]})
        if sent.status_code != 200:
            raise BenchError(f"PATCH {self.path}: {sent.status_code} {sent.text}")

    def detach(self) -> None:
        read = self.http.get(self.path)
        meta = read.json()["metadata"]
        body = {key: meta[key] for key in _PUT_KEYS if key in meta}
        body["devices"] = {k: v for k, v in meta["devices"].items() if k != self.device}
        body["description"] = meta.get("description", "")
        sent = self.http.put(self.path, json=body, headers={"If-Match": read.headers["etag"]})
        if sent.status_code != 202:
            raise BenchError(f"PUT {self.path}: {sent.status_code} {sent.text}")
        done = self.http.get(f"{sent.json()['operation']}/wait", params={"timeout": 60})
        if done.json()["metadata"]["status_code"] != 200:
            raise BenchError(f"PUT {self.path}: {done.text}")

    def close(self) -> None:
        self.http.close()


class Bench:
    def __init__(self) -> None:
        settings = config.load()
        self.socket = settings.lxd_endpoint.removeprefix("unix://")
        self.connector = LxdConnector(endpoint=settings.lxd_endpoint, profile=settings.lxd_profile)
        self.prefix = f"bench-{secrets.token_hex(3)}"
        self.instance = f"{self.prefix}-box"
        self.volumes: list[str] = []

    def volume(self, what: str, size: int) -> str:
        made = f"{self.prefix}-{what}"
        self.volumes.append(made)
        self.connector.create_volume(VolumeSpec(name=made, size_bytes=size))
        return made

    def sh(self, script: str) -> str:
        ran = self.connector.exec(self.instance, ["sh", "-c", script], timeout=300)
        if ran.exit_code != 0:
            raise BenchError(f"{script!r}: exit {ran.exit_code}: {ran.stderr}")
        return ran.stdout + ran.stderr

    def dd(self, target: str, mib: int) -> float:
        """MiB/s of writing ``mib`` MiB to ``target`` and syncing it; the file is removed."""
        said = self.sh(f"dd if=/dev/zero of={target} bs=1M count={mib} conv=fdatasync")
        self.sh(f"rm -f {target} && sync")
        match = _DD.search(said)
        if match is None:
            raise BenchError(f"dd said nothing of its speed: {said}")
        return int(match.group(1)) / MiB / float(match.group(2))

    def cleanup(self) -> list[str]:
        left = []
        with contextlib.suppress(StratusError):
            self.connector.get(self.instance)
            left.append(self.instance)
            self.connector.destroy(self.instance)
        for volume in self.volumes:
            with contextlib.suppress(StratusError):
                self.connector.get_volume(volume)
                left.append(volume)
                self.connector.delete_volume(volume)
        self.connector.close()
        return left


def latency(samples: list[float]) -> dict[str, Any]:
    return {**summary(samples), "p90": percentile(samples, 90)}


def measure(bench: Bench, trials: int, dd_trials: int, mib: int) -> dict[str, Any]:
    c = bench.connector
    log(f"container {bench.instance} ...")
    c.create(InstanceSpec(name=bench.instance, image=IMAGE))
    volume = bench.volume("lat", 64 * MiB)
    mount = Mount(volume, PATH)
    direct = Direct(bench.socket, c.profile, bench.instance, volume)
    try:
        for way in (lambda: c.attach_volume(bench.instance, mount), direct.attach):  # warm-up
            way()
            if c.exec(bench.instance, ["mountpoint", "-q", PATH]).exit_code != 0:
                raise BenchError(f"{volume} is not mounted at {PATH} after the attach returned")
            c.detach_volume(bench.instance, volume)
        timed: dict[str, tuple[list[float], list[float]]] = {
            "connector": ([], []),
            "direct": ([], []),
        }
        ways = {
            "connector": (
                lambda: c.attach_volume(bench.instance, mount),
                lambda: c.detach_volume(bench.instance, volume),
            ),
            "direct": (direct.attach, direct.detach),
        }
        for i in range(trials):  # interleaved, so that both see the same machine
            for way, (attach, detach) in ways.items():
                attached, detached = time_cycles(attach, detach, 1)
                timed[way][0].extend(attached)
                timed[way][1].extend(detached)
            log(f"trial {i + 1}/{trials}: attach {timed['connector'][0][-1] * 1000:.1f} ms")
    finally:
        direct.close()

    data = bench.volume("dd", (mib * 2 + 64) * MiB)
    c.attach_volume(bench.instance, Mount(data, "/mnt/dd"))
    on_volume: list[float] = []
    on_root: list[float] = []
    for i in range(dd_trials):
        on_volume.append(bench.dd("/mnt/dd/zero", mib))
        on_root.append(bench.dd("/root/zero", mib))
        log(f"dd {i + 1}/{dd_trials}: volume {on_volume[-1]:.0f} MiB/s, root {on_root[-1]:.0f}")

    results: dict[str, Any] = {}
    for op, index in (("attach", 0), ("detach", 1)):
        mine, floor = timed["connector"][index], timed["direct"][index]
        ratio = statistics.median(mine) / statistics.median(floor)
        results[op] = {
            "connector": latency(mine),
            "direct": latency(floor),
            "ratio": ratio,
            "goal_max": GOAL,
            "goal_met": ratio <= GOAL,
        }
    results["dd"] = {
        "mib": mib,
        "volume_mib_s": summary(on_volume),
        "root_mib_s": summary(on_root),
        "ratio_volume_over_root": statistics.median(on_volume) / statistics.median(on_root),
    }
    return results


def table(results: dict[str, Any]) -> str:
    lines = [f"{'measure (ms)':<34} {'n':>3} {'median':>8} {'p90':>8} {'min':>8} {'max':>8}"]
    for op in ("attach", "detach"):
        for way, label in (("connector", "LxdConnector"), ("direct", "same calls, httpx")):
            s = results[op][way]
            lines.append(
                f"{op + ': ' + label:<34} {s['n']:>3} {s['median'] * 1000:>8.1f} "
                f"{s['p90'] * 1000:>8.1f} {s['min'] * 1000:>8.1f} {s['max'] * 1000:>8.1f}"
            )
    for op in ("attach", "detach"):
        r = results[op]
        met = "met" if r["goal_met"] else "NOT met"
        lines.append(f"{op} ratio median(connector) / median(direct): {r['ratio']:.3f}")
        lines[-1] += f"   goal: <= {GOAL} ({met})"
    dd = results["dd"]
    lines.append(f"\ndd {dd['mib']} MiB, conv=fdatasync (MiB/s)  n  median   min   max")
    for key, label in (("volume_mib_s", "attached volume"), ("root_mib_s", "root disk")):
        s = dd[key]
        lines.append(
            f"{label:<36} {s['n']:>2} {s['median']:>6.0f} {s['min']:>5.0f} {s['max']:>5.0f}"
        )
    lines.append(f"median volume / median root: {dd['ratio_volume_over_root']:.2f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="attach/detach cycles (20)")
    parser.add_argument("--dd-trials", type=int, default=3, help="dd runs per target (3)")
    parser.add_argument("--mib", type=int, default=256, help="MiB each dd writes (256)")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON results")
    args = parser.parse_args()
    if args.trials < 1 or args.dd_trials < 1 or not 1 <= args.mib <= 4096:
        parser.error("--trials and --dd-trials must be at least 1, --mib from 1 to 4096")

    bench = Bench()
    started = datetime.now(UTC)

    def cleanup() -> None:
        left = bench.cleanup()
        log(f"cleanup: deleted {left}" if left else "cleanup: nothing left over")

    status, results = guarded(
        lambda: measure(bench, args.trials, args.dd_trials, args.mib),
        cleanup,
        failures=(StratusError,),
    )
    if results is None:
        return status
    settings = {"trials": args.trials, "dd_trials": args.dd_trials, "mib": args.mib}
    return publish(
        "volumes", started, bench.prefix, settings, results, table, json_only=args.json_only
    )


if __name__ == "__main__":
    sys.exit(main())
