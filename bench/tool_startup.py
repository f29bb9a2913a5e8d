"""Node tools before and after the agent became a package in a zipapp: `ss-set` from spawn to
exit, and from `ss-set` to the return of an `ss-get` already blocked on the key.

Two installations of the tools, measured in the same run, trial by trial, interleaved (the
order of the two swapped at every trial, so that neither always goes first):

- *before*: the single-file agent of commit ``8151204``
  (``git show 8151204:src/stratuslab/deploy/agent/stratus_agent.py``) in a folder of its own,
  with the launchers its own ``install-tools`` writes (they import it; it compiles its
  bytecode once);
- *after*: ``stratus-agent.pyz`` downloaded from the server as a node's bootstrap does
  (``GET /agent/stratus-agent.pyz``, its SHA-256 checked against ``.sha256``), with the
  launchers its ``install-tools`` writes (they import the tools from the zipapp).

The server is a separate process with its own temporary store and a recorded fake cloud
(``control_plane.Server``: no LXD, no machines). One run of ``bench/tools`` with one node
instance ``probe.1`` (a component with one output ``key``, as ``param_propagation.py`` uses) is
driven to Ready by completing each barrier with the site token, and left there (Ready waits for
a ``complete`` that never comes, and the run timeout bounds only the way to Ready). The tools
need the node's own token: a new one is issued through ``NodeTokens.issue`` on the
server's store, as the orchestrator does for each node instance it creates.

Per trial and per installation, with the tools' configuration in the environment (server URL,
run, ``probe.1``, token; ``STRATUS_AGENT_CONF`` names no file): *before* over plain HTTP on
loopback, *after* over HTTPS to the server's listener for nodes with the site CA, as nodes
call it since the bridge is shared (so *after* includes what TLS costs):

1. ``ss-set probe.1:key <value>`` alone: spawn to exit (the key unset before, untimed, and
   checked set after);
2. ``param_propagation.Bench.process_trial``: ``ss-get --timeout 30 probe.1:key`` is started
   and left blocked (connected, and 20 ms more); t0; ``ss-set`` is started; t1 = when the
   ss-get process has exited, its output checked to be the value.

Warm-up trials are not counted. Reported: p50/p90/p99/max in ms for each measure, after beside
before, and the goals: p99 under 50 ms, after no slower than before. Why this is fair: both
installations run the same Python (``--python``), against the same server and run, alternately,
so the machine's noise falls on both alike; the only difference is the agent's code and how it
is laid out on disk.

The server is stopped and the temporary directory (``bench/.tools-<prefix>``) removed in
``finally:``, even on Ctrl-C. Run from the project root, as root or not:
``.venv/bin/python bench/tool_startup.py [--trials 1000] [--warmup 20] [--json-only]``.
Results go to stdout and bench/results/tool_startup-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import secrets
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import ROOT, BenchError, guarded, log, publish
from control_plane import PYTHON, Driver, Server
from param_propagation import KEY, Bench, percentiles

BEFORE_COMMIT = "8151204"
BEFORE_FILE = "src/stratuslab/deploy/agent/stratus_agent.py"
ZIPAPP = "stratus-agent.pyz"
NODE_INSTANCE = KEY.partition(":")[0]
MODULES = [
    {
        "path": "bench/base",
        "file": "bench/base.yaml",
        "text": "kind: image\nimages:\n  local: debian-12\n",
    },
    {
        "path": "bench/probe",
        "file": "bench/probe.yaml",
        "text": "kind: component\nparent: base\noutputs:\n  key: {}\n",
    },
    {
        "path": "bench/tools",
        "file": "bench/tools/module.yaml",
        "text": "kind: application\nnodes:\n  probe:\n    component: bench/probe\n",
    },
]
VARIANTS = ("before", "after")
GOAL_MS = 50.0
TOOL_TIMEOUT = 40.0
ISSUE_TOKEN = """
import sys
from stratuslab import config
from stratuslab.db.session import engine_for
from stratuslab.deploy.tokens import NodeTokens
settings = config.load()
print(NodeTokens(engine_for(settings.database_url)).issue(sys.argv[1], sys.argv[2]))
"""


class Tools:
    """The two installations of the ss-* tools, and the measurements on them."""

    def __init__(self, server: Server, work: Path, python: str) -> None:
        self.server = server
        self.work = work
        self.python = python
        self.bench = Bench(f"http://127.0.0.1:{server.port}", python)
        self.bins = {variant: work / variant / "bin" for variant in VARIANTS}
        self.site_ca = ""  # read once the server has made it

    # -- set-up ---------------------------------------------------------------------------

    def ready_run(self) -> None:
        """One run of one node instance, driven to Ready, and a token of that node."""
        driver = Driver(self.server, 1)
        driver.api.json("POST", "/api/modules", {"modules": MODULES}, expect=201)
        run = {"module": "bench/tools", "keep_running": "always"}
        driver.run_id = driver.api.json("POST", "/api/runs", run, expect=201)["id"]
        driver.wait_provisioned()
        state = driver.wait_state("Provisioning", "Initializing")
        for barrier, following in (
            ("Provisioning", "Executing"),
            ("Executing", "SendingReports"),
            ("SendingReports", "Ready"),
        ):
            state = driver.wait_state(barrier, state)
            path = f"/run/{driver.run_id}/{NODE_INSTANCE}:complete?state={barrier}"
            status, body = driver.api.request("POST", path)
            if status != 200:
                raise BenchError(f"completing {barrier} answered {status}: {body}")
            state = driver.wait_state(following, state)
        driver.api.close()
        issued = subprocess.run(
            [PYTHON, "-c", ISSUE_TOKEN, driver.run_id, NODE_INSTANCE],
            env=self.server.env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if issued.returncode != 0:
            raise BenchError(f"issuing a node token failed:\n{issued.stderr}")
        self.bench.run_id, self.bench.token = driver.run_id, issued.stdout.strip()
        self.site_ca = (self.server.work / "data" / "tls" / "site-ca.pem").read_text()
        log(f"run {driver.run_id} in Ready; tools act as {NODE_INSTANCE}")

    def install(self) -> dict[str, str]:
        """Both installations; what each is, for the report."""
        before = self.work / "before" / "opt" / "stratus_agent.py"
        before.parent.mkdir(parents=True)
        shown = subprocess.run(
            ["git", "show", f"{BEFORE_COMMIT}:{BEFORE_FILE}"],
            cwd=ROOT,
            capture_output=True,
            check=True,
            timeout=60,
        )
        before.write_bytes(shown.stdout)
        self._install_tools(before, self.bins["before"])
        after = self.work / "after" / "opt" / ZIPAPP
        after.parent.mkdir(parents=True)
        data = self._download(f"/agent/{ZIPAPP}")
        digest = hashlib.sha256(data).hexdigest()
        expected = self._download(f"/agent/{ZIPAPP}.sha256").decode().split()[0]
        if digest != expected:
            raise BenchError(f"the zipapp's SHA-256 is {digest}, the server says {expected}")
        after.write_bytes(data)
        self._install_tools(after, self.bins["after"])
        return {
            "before": f"{BEFORE_COMMIT}:{BEFORE_FILE} ({len(shown.stdout)} bytes)",
            "after": f"GET /agent/{ZIPAPP} ({len(data)} bytes, sha256 {digest})",
        }

    def _install_tools(self, agent: Path, bin_dir: Path) -> None:
        subprocess.run(
            [self.python, str(agent), "install-tools", str(bin_dir)],
            check=True,
            timeout=60,
            capture_output=True,
        )
        if not (bin_dir / "ss-set").exists():
            raise BenchError(f"{agent} install-tools wrote no ss-set in {bin_dir}")

    def _download(self, path: str) -> bytes:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=60)
        try:
            conn.request("GET", path)
            answer = conn.getresponse()
            data = answer.read()
        finally:
            conn.close()
        if answer.status != 200:
            raise BenchError(f"GET {path} answered {answer.status}: {data[:200]!r}")
        return data

    # -- trials ---------------------------------------------------------------------------

    def set_alone(self, conn: http.client.HTTPConnection, variant: str, value: str) -> float:
        """ss-set, spawn to exit, in seconds."""
        self.bench.unset(conn)
        self.bench.tools = self.bins[variant]
        self.bench.ca = self.site_ca if variant == "after" else ""  # before spoke HTTP only
        began = time.perf_counter()
        setter = subprocess.run(
            [str(self.bins[variant] / "ss-set"), KEY, value],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=self.bench.tool_env(),
            timeout=TOOL_TIMEOUT,
            check=False,
        )
        seconds = time.perf_counter() - began
        if setter.returncode != 0:
            raise BenchError(f"{variant} ss-set exited {setter.returncode}: {setter.stderr}")
        status, body = self.bench.request(conn, "GET", self.bench.path())
        if (status, body) != (200, value):
            raise BenchError(f"after the {variant} ss-set, {KEY} answered {status} {body!r}")
        return seconds

    def propagation(self, conn: http.client.HTTPConnection, variant: str, value: str) -> float:
        """ss-set called -> the blocked ss-get exited, in seconds."""
        self.bench.tools = self.bins[variant]
        self.bench.ca = self.site_ca if variant == "after" else ""  # before spoke HTTP only
        latency, _setter = self.bench.process_trial(conn, value)
        return latency

    def cleanup(self) -> None:
        """Kill an ss-get left blocked (the run and the server go with the temporary store)."""
        getter = self.bench.getter
        if getter is not None and getter.poll() is None:
            getter.kill()
            getter.wait()


def measure(server: Server, work: Path, python: str, trials: int, warmup: int) -> dict[str, Any]:
    server.start()
    tools = Tools(server, work, python)
    try:
        tools.ready_run()
        installed = tools.install()
        samples: dict[str, dict[str, list[float]]] = {
            measure: {variant: [] for variant in VARIANTS} for measure in ("set", "propagation")
        }
        conn = tools.bench.connection()
        log(f"{warmup} warm-up + {trials} trials, each: both installations, alternately")
        try:
            for i in range(warmup + trials):
                order = VARIANTS if i % 2 == 0 else VARIANTS[::-1]
                for variant in order:
                    seconds = tools.set_alone(conn, variant, f"s{i}-{secrets.token_hex(4)}")
                    if i >= warmup:
                        samples["set"][variant].append(seconds)
                for variant in order:
                    seconds = tools.propagation(conn, variant, f"p{i}-{secrets.token_hex(4)}")
                    if i >= warmup:
                        samples["propagation"][variant].append(seconds)
                if i >= warmup and (i - warmup + 1) % 100 == 0:
                    log(f"  {i - warmup + 1}/{trials}")
        finally:
            conn.close()
    finally:
        tools.cleanup()
    results: dict[str, Any] = {"python": python, "installed": installed}
    for name, by_variant in samples.items():
        results[name] = {variant: percentiles(s) for variant, s in by_variant.items()}
    after_p99 = max(results[name]["after"]["p99_ms"] for name in samples)
    results["goal_p99_ms_max"] = GOAL_MS
    results["goal_p99_met"] = after_p99 < GOAL_MS
    results["after_not_slower"] = all(
        results[name]["after"][p] <= results[name]["before"][p]
        for name in samples
        for p in ("p50_ms", "p99_ms")
    )
    return results


def table(results: dict[str, Any]) -> str:
    rows = (
        ("ss-set, spawn -> exit", "set"),
        ("ss-set called -> blocked ss-get exits", "propagation"),
    )
    head = f"{'measure (ms)':<40} {'agent':<7} {'n':>5} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}"
    lines = [head]
    for label, key in rows:
        for variant in VARIANTS:
            s = results[key][variant]
            lines.append(
                f"{label if variant == 'before' else '':<40} {variant:<7} {s['n']:>5} "
                f"{s['p50_ms']:>8.2f} {s['p90_ms']:>8.2f} {s['p99_ms']:>8.2f} {s['max_ms']:>8.2f}"
            )
        before, after = results[key]["before"], results[key]["after"]
        lines.append(
            f"{'':<40} {'after/before: p50':<21} {after['p50_ms'] / before['p50_ms']:>5.2f}   "
            f"p99 {after['p99_ms'] / before['p99_ms']:>5.2f}"
        )
    met = "met" if results["goal_p99_met"] else "NOT met"
    kept = "yes" if results["after_not_slower"] else "NO"
    lines.append(f"\nafter: p99 < {GOAL_MS:.0f} ms: {met}; after <= before (p50 and p99): {kept}")
    for variant in VARIANTS:
        lines.append(f"{variant}: {results['installed'][variant]}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000, help="counted trials (1000)")
    parser.add_argument("--warmup", type=int, default=20, help="uncounted trials first (20)")
    parser.add_argument("--python", default="/usr/bin/python3", help="runs the tools")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON results")
    args = parser.parse_args()
    if args.trials < 1 or args.warmup < 0:
        parser.error("--trials must be at least 1 and --warmup at least 0")

    prefix = f"bench-{secrets.token_hex(3)}"
    work = ROOT / "bench" / f".tools-{prefix}"
    server = Server(work / "server", None)
    started = datetime.now(UTC)

    def cleanup() -> None:
        code = server.stop()
        log(f"cleanup: server stopped (exit {code}); removing {work.relative_to(ROOT)}")
        shutil.rmtree(work, ignore_errors=True)

    status, results = guarded(
        lambda: measure(server, work, args.python, args.trials, args.warmup),
        cleanup,
        failures=(OSError, http.client.HTTPException, subprocess.CalledProcessError),
        on_failure=lambda: log(f"server log (tail):\n{server.log()}"),
    )
    if results is None:
        return status
    settings = {"trials": args.trials, "warmup": args.warmup, "before_commit": BEFORE_COMMIT}
    return publish(
        "tool_startup", started, prefix, settings, results, table, json_only=args.json_only
    )


if __name__ == "__main__":
    sys.exit(main())
