"""What the benchmarks under bench/ share: errors, commands, statistics, guarded runs, reports.

Each benchmark is a script run from the project root (``.venv/bin/python bench/NAME.py``), so
this directory is on ``sys.path`` and the scripts import this module as ``common``. Nothing here
measures anything by itself.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
STRATUS = str(ROOT / ".venv" / "bin" / "stratus")
LXD_SOCKET = "/var/lib/lxd/unix.socket"
RESULTS = ROOT / "bench" / "results"

R = TypeVar("R")


class BenchError(RuntimeError):
    """A command failed or gave an unexpected answer."""


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (the LXD API), standard library only."""

    def __init__(self, socket_path: str = LXD_SOCKET, timeout: float = 10.0) -> None:
        super().__init__("lxd", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(cmd: list[str], *, timeout: float, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` from the project root, no stdin, output captured.

    A non-zero exit raises :class:`BenchError` with everything the command printed, unless
    ``check`` is false.
    """
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return proc


def free_port() -> int:
    """A TCP port of 127.0.0.1 free at this moment."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def summary(samples: list[float]) -> dict[str, Any]:
    """Median, min and max of samples in seconds, with the samples."""
    s = samples
    return {"n": len(s), "median": statistics.median(s), "min": min(s), "max": max(s), "samples": s}


def percentile(samples: list[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def guarded(
    work: Callable[[], R],
    cleanup: Callable[[], None],
    *,
    failures: tuple[type[BaseException], ...] = (),
    on_failure: Callable[[], None] | None = None,
) -> tuple[int, R | None]:
    """Run ``work``, then ``cleanup`` whatever happened, Ctrl-C included.

    Returns (0, what work returned), or (1, None) when it failed with a :class:`BenchError`, a
    command timeout or one of ``failures`` (said on stderr, then ``on_failure`` is called), or
    (130, None) when interrupted. Ctrl-C is ignored while ``cleanup`` runs, so that it finishes.
    """
    caught: tuple[type[BaseException], ...] = (BenchError, subprocess.TimeoutExpired, *failures)
    try:
        return 0, work()
    except KeyboardInterrupt:
        log("interrupted")
        return 130, None
    except caught as exc:
        log(f"benchmark failed: {exc}")
        if on_failure is not None:
            on_failure()
        return 1, None
    finally:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            cleanup()
        finally:
            signal.signal(signal.SIGINT, previous)


def publish(
    name: str,
    started: datetime,
    prefix: str,
    settings: dict[str, Any],
    results: dict[str, Any],
    table: Callable[[dict[str, Any]], str],
    *,
    json_only: bool,
) -> int:
    """Write the report to bench/results/NAME-<time>.json and print it (table or JSON); 0."""
    report = {
        "benchmark": name,
        "started_at": started.isoformat(),
        "prefix": prefix,
        "host": {"node": platform.node(), "cpus": os.cpu_count(), "kernel": platform.release()},
        **settings,
        "results": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    if json_only:
        print(json.dumps(report, indent=2))
    else:
        print(table(results))
        print(f"\nresults written to {path.relative_to(ROOT)}")
    return 0


def summary_lines(rows: list[tuple[str, str]], results: dict[str, Any]) -> list[str]:
    """A table of :func:`summary` entries of ``results``: a header, then a line per (label, key)."""
    lines = [f"{'measure (seconds)':<44} {'n':>3} {'median':>8} {'min':>8} {'max':>8}"]
    for label, key in rows:
        s = results[key]
        lines.append(
            f"{label:<44} {s['n']:>3} {s['median']:>8.3f} {s['min']:>8.3f} {s['max']:>8.3f}"
        )
    return lines
