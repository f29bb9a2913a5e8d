"""The floor for deploying examples/webapp: the same containers and recipes, with no server.

What it measures: the wall time, from the start of the launches until every node instance's
last recipe (its report) has returned, to

1. launch the application's five containers (db, web x2, lb, test) at once with
   ``lxc launch debian-12 <name> -p stratus``, give each a shared host directory at ``/ss``
   (``lxc config device add <c> ssdir disk ...``), wait until each has an IPv4 address (LXD's
   REST API over its unix socket, stdlib ``http.client``, every 20 ms), and push the ``ss-*``
   tools into it (``lxc file push``);
2. write into ``/ss`` what the server would provide at the start of Executing: every instance's
   ``hostname`` (its address), ``<node>:ids`` and ``<node>:multiplicity``, input defaults, and
   for a mapped input a symlink to its source key, so that reading the input waits for the
   source as it does on the server (``web.1:db_password -> db.1:password``, ...);
3. run, in one thread per node instance (all at once, as in a real run, where the blocking
   ``ss-get`` orders the nodes), the very recipe texts of ``examples/webapp``, read through
   ``stratuslab.deploy.tree.load_tree`` and ``stratuslab.deploy.plan.resolve``: pre-install,
   packages (``apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y ...``),
   post-install, deployment, then report, parent module first, each with ``lxc exec`` and the
   environment the agent gives recipes (``SLIPSTREAM_NODE_INSTANCE_NAME``,
   ``SLIPSTREAM_REPORT_DIR``, ``HOME=/root``, a ``PATH`` with ``/usr/local/bin``, cwd /root).

Why this is a fair floor for ``stratus deploy``: it does the same work on the same machine
(same image, profile, pool, bridge and Debian mirror; same packages installed; same scripts),
with no orchestration at all. The ``ss-*`` tools are small shell scripts that keep one file per
key in ``/ss`` (qualified as docs/agent.md says: a bare name is the caller's own, ``node:x`` is
``node.1:x`` except ``ids`` and ``multiplicity``); ``ss-get`` polls every 20 ms until the file
exists. What it leaves out is exactly what StratusLab adds: the API, the store,
contextualization and the agent's bootstrap, the state barriers (here a node's report runs
right after its own deployment, where a run waits for every node to finish Executing), report
upload. One accommodation, which can only make the floor slower: a mapped input that ``ss-get``
had to wait for is returned 250 ms after its source was set (``SETTLE`` below says why: the lb
recipe has a race that the real tools' start-up time hides and the floor's speed exposes); the
pauses are counted and reported. It checks that it deployed something real: every recipe must
exit 0 (else it fails, printing the output), no ``ss-abort`` may have been raised, and the test
node's ``result`` must be ``passed``.

Importable (``Floor(prefix).trial(tag)``; used by ``deploy_webapp.py``) and runnable on its own:
``.venv/bin/python bench/webapp_floor.py [--trials N] [--json-only]``, as root from the project
root. Containers are named ``<prefix>-<tag>-<node>-<i>`` with a unique ``bench-<6 hex>`` prefix
and deleted after each trial and in ``finally:``; host directories live under
``bench/.floor-<prefix>/`` and are removed too. Results: stdout and
``bench/results/webapp_floor-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import functools
import http.client
import json
import secrets
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import (
    ROOT,
    BenchError,
    UnixHTTPConnection,
    guarded,
    log,
    publish,
    summary,
    summary_lines,
)
from common import run as run_command

from stratuslab.deploy.model import ApplicationModule, Module, parse_module
from stratuslab.deploy.plan import Plan, resolve
from stratuslab.deploy.tree import load_tree
from stratuslab.errors import NotFound

APP = "examples/webapp"
IMAGE = "debian-12"
INSTALL_STEPS = ("pre-install", "packages", "post-install")  # what a baked image holds
PROFILE = "stratus"
LXC_TIMEOUT = 120.0  # one lxc launch / device add / push / delete
ADDRESS_TIMEOUT = 120.0  # until a container has an IPv4 address
STEP_TIMEOUT = 900.0  # one recipe (the recipes' own ss-get waits are up to 900 s)
POLL = 0.02
# examples/webapp/lb.yaml used to publish its URL right after `systemctl reload nginx`, which
# returns before nginx serves the new configuration (30 ms later on an idle container, more than
# 80 ms during a deployment): the floor's fast shell tools made the test's first request hit the
# default site. The recipe now waits until the application answers through nginx, so the floor
# needs no accommodation. --settle-ms N still makes ss-get return a mapped input it had to wait
# for N ms after its source appeared, to study such races; every pause is counted and reported.
SETTLE = 0.0
REPORT_DIR = "/var/tmp/slipstream/reports"
RECIPE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TOOL_NAMES = ("ss-get", "ss-set", "ss-display", "ss-abort", "ss-random", "ss-get-all")

# One bash file for every tool; it dispatches on the name it is called by. Values are stored
# without a trailing newline and printed with one, as the agent's tools do.
SS_TOOLS = r"""#!/bin/bash
# SlipStream's ss-* tools with no server (bench/webapp_floor.py): every runtime parameter is one
# file in /ss, shared by all the node instances, named by its full key (db.1:password).
SS=${SS_DIR:-/ss}
tool=${0##*/}
ni=${SLIPSTREAM_NODE_INSTANCE_NAME:-}
STARTED=${EPOCHREALTIME/./}  # microseconds

die() { echo "$tool: $2" >&2; exit "$1"; }
[ -n "$ni" ] || die 2 "SLIPSTREAM_NODE_INSTANCE_NAME is not set"

qualify() {  # sets REPLY to the full key, as docs/agent.md says
  local key=$1 owner param
  case $key in
    *:*)
      owner=${key%%:*} param=${key#*:}
      if [ "$owner" = ss ] || [[ $owner == *.* ]] || [ "$param" = ids ] \
        || [ "$param" = multiplicity ]; then
        REPLY=$key
      else
        REPLY=$owner.1:$param
      fi ;;
    ids | multiplicity) REPLY=${ni%.*}:$key ;;
    *) REPLY=$ni:$key ;;
  esac
}

store() {  # KEY VALUE; an empty value unsets; a rename makes the write atomic
  if [ -z "$2" ]; then rm -f "$SS/$1"; return; fi
  local tmp="$SS/.tmp-$$-$RANDOM"
  printf '%s' "$2" > "$tmp" && mv -f "$tmp" "$SS/$1"
}

fetch() {  # KEY TIMEOUT NOBLOCK: print the value, polling every 20 ms until it is set
  local file=$SS/$1 seconds=${2%%.*} deadline=0 waited=0
  [[ $2 == *.*[1-9]* ]] && seconds=$((${seconds:-0} + 1))  # whole seconds, rounded up
  [ "${seconds:-0}" -gt 0 ] && deadline=$((STARTED + seconds * 1000000))
  until [ -e "$file" ]; do
    [ "$3" = 1 ] && die 1 "'$1' is not set"
    [ -e "$SS/ss:abort" ] && die 8 "the run is aborted: $(cat "$SS/ss:abort")"
    [ "$deadline" -gt 0 ] && [ "${EPOCHREALTIME/./}" -ge "$deadline" ] \
      && die 9 "timed out after $2 s waiting for '$1'"
    sleep 0.02
    waited=1
  done
  if [ "$waited" = 1 ] && [ -L "$file" ] && [ -n "${SS_SETTLE:-}" ]; then  # SETTLE in the .py
    sleep "$SS_SETTLE"
    echo "$1" >> "$SS/.settled"
  fi
  cat "$file"
  echo
}

seconds() {
  [[ $1 =~ ^[0-9]+(\.[0-9]*)?$ ]] || die 3 "invalid timeout '$1': give seconds, 0 for no limit"
}

case $tool in
  ss-get)
    timeout=60 noblock=0
    while [ $# -gt 1 ]; do
      case $1 in
        --timeout) timeout=$2; shift 2 ;;
        --timeout=*) timeout=${1#*=}; shift ;;
        --noblock) noblock=1; shift ;;
        --ignore-abort) shift ;;
        *) break ;;
      esac
    done
    [ $# -eq 1 ] || die 2 "usage: ss-get [--timeout S] [--noblock] [--ignore-abort] KEY"
    seconds "$timeout"
    qualify "$1"
    fetch "$REPLY" "$timeout" "$noblock" ;;
  ss-set)
    [ "$1" = --ignore-abort ] && shift
    [ $# -eq 2 ] || die 2 "usage: ss-set [--ignore-abort] KEY VALUE"
    qualify "$1"
    store "$REPLY" "$2" ;;
  ss-display)
    [ $# -ge 1 ] || die 2 "usage: ss-display TEXT..."
    store "$ni:statecustom" "$*" ;;
  ss-abort)
    if [ "$1" = --cancel ]; then rm -f "$SS/$ni:abort"; exit 0; fi
    reason=${*:-aborted by ss-abort on $ni}
    store "$ni:abort" "$reason"
    [ -e "$SS/ss:abort" ] || store ss:abort "$ni: $reason"
    echo "$tool: $reason" >&2 ;;
  ss-random)
    size=12
    if [ "$1" = -s ]; then size=$2; shift 2; fi
    [[ $size =~ ^[0-9]+$ ]] && [ "$size" -ge 1 ] \
      || die 3 "invalid size '$size': give a positive number"
    value=$(LC_ALL=C tr -dc 'A-Za-z0-9' < /dev/urandom | head -c "$size")
    if [ $# -ge 1 ]; then qualify "$1"; store "$REPLY" "$value"; fi
    echo "$value" ;;
  ss-get-all)
    timeout=60 noblock=0 check=0 want=
    while [ $# -gt 2 ]; do
      case $1 in
        --value) want=$2 check=1; shift 2 ;;
        --timeout) timeout=$2; shift 2 ;;
        --noblock) noblock=1; shift ;;
        *) break ;;
      esac
    done
    [ $# -eq 2 ] || die 2 "usage: ss-get-all [--value V] [--timeout S] [--noblock] NODE KEY"
    seconds "$timeout"
    ids=$(fetch "$1:ids" "$timeout" "$noblock") || exit
    differ=
    for i in ${ids//,/ }; do
      value=$(fetch "$1.$i:$2" "$timeout" "$noblock") || exit
      echo "$1.$i:$2 $value"
      [ "$check" = 1 ] && [ "$value" != "$want" ] && differ="$differ $1.$i:$2"
    done
    [ -z "$differ" ] || die 1 "${differ# } not equal to '$want'" ;;
  *) die 2 "call this file as one of: ss-get ss-set ss-display ss-abort ss-random ss-get-all" ;;
esac
"""


def run(cmd: list[str], *, check: bool = True, timeout: float = LXC_TIMEOUT) -> str:
    """Run ``cmd`` (no stdin); its stdout. A non-zero exit raises with everything it printed."""
    return run_command(cmd, timeout=timeout, check=check).stdout


def global_ipv4(conn: UnixHTTPConnection, name: str) -> str | None:
    """The container's global IPv4 address, or None (not yet, or the API did not answer)."""
    try:
        conn.request("GET", f"/1.0/instances/{name}/state")
        resp = conn.getresponse()
        body = resp.read()
    except (OSError, http.client.HTTPException):
        conn.close()  # dropped keep-alive: reconnect on the next poll
        return None
    if resp.status != 200:
        return None
    network: dict[str, Any] = json.loads(body).get("metadata", {}).get("network") or {}
    for dev, net in network.items():
        if dev == "lo":
            continue
        for address in net.get("addresses") or []:
            if address.get("family") == "inet" and address.get("scope") == "global":
                return str(address["address"])
    return None


def load_plan(root: Path = ROOT, app: str = APP) -> Plan:
    """The application's plan, from the files on disk, as the server resolves it."""
    texts = load_tree(root, app)
    modules: dict[str, Module] = {
        t.path: parse_module(t.text, path=t.path, file=t.file) for t in texts
    }
    application = modules[texts[0].path]
    if not isinstance(application, ApplicationModule):
        raise BenchError(f"{app} is not an application")

    def lookup(path: str, version: int | None) -> tuple[Module, int]:
        if path not in modules:
            raise NotFound(f"no module {path!r}")
        return modules[path], 1

    return resolve(application, 1, lookup)


@dataclass(frozen=True)
class Step:
    name: str  # pre-install, packages, post-install, deployment, report
    module: str  # the module whose recipe it is ("apt-get" for packages)
    command: list[str]  # what runs in the container


@dataclass(frozen=True)
class NodeInstance:
    name: str  # web.2
    node: str  # web
    index: int
    container: str
    steps: list[Step]


@dataclass
class FloorResult:
    seconds: float  # start of the launches -> every node instance's report returned
    ready_seconds: float  # -> every container has an address and the tools
    done_seconds: dict[str, float] = field(default_factory=dict)  # per instance, from start
    result: str = ""  # test.1:result
    settle_pauses: list[str] = field(default_factory=list)  # keys ss-get paused SETTLE on


def initial_values(plan: Plan, addresses: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(key -> value, key -> key it links to): what the server holds when Executing starts."""
    values: dict[str, str] = {}
    links: dict[str, str] = {}
    for node, spec in plan.nodes.items():
        values[f"{node}:ids"] = ",".join(str(i) for i in range(1, spec.multiplicity + 1))
        values[f"{node}:multiplicity"] = str(spec.multiplicity)
        for index in range(1, spec.multiplicity + 1):
            ni = f"{node}.{index}"
            values[f"{ni}:hostname"] = addresses[ni]
            values[f"{ni}:nodename"] = node
            values[f"{ni}:id"] = str(index)
            for name, definition in spec.inputs.items():
                source = spec.mappings.get(name)
                if source is None:
                    if definition.default is not None:
                        values[f"{ni}:{name}"] = definition.default
                elif source.kind == "literal":
                    values[f"{ni}:{name}"] = source.value or ""
                else:
                    links[f"{ni}:{name}"] = source.key() or ""
    return values, links


class Floor:
    """Trials of the floor, each with its own containers and key directory."""

    def __init__(
        self,
        prefix: str,
        *,
        root: Path = ROOT,
        app: str = APP,
        settle: float = SETTLE,
        images: dict[str, str] | None = None,
    ) -> None:
        self.prefix = prefix
        self.settle = settle
        # node -> image it starts from, its install steps (pre-install, packages,
        # post-install) already in it: the floor of a deployment from baked images.
        self.images = images or {}
        self.plan = load_plan(root, app)
        self.workdir = root / "bench" / f".floor-{prefix}"
        self.tools = self.workdir / "bin"
        self._lock = threading.Lock()
        self._made: set[str] = set()  # containers launched and not yet deleted
        self._threads: list[threading.Thread] = []  # every thread a trial started

    # -- one trial ------------------------------------------------------------------------

    def trial(self, tag: str) -> FloorResult:
        """Deploy once; delete the containers and the key directory, even on failure."""
        self._write_tools()
        ss = self.workdir / tag / "ss"
        instances = self._instances(tag, ss)
        try:
            return self._deploy(instances, ss)
        finally:
            self.delete([i.container for i in instances])
            shutil.rmtree(self.workdir / tag, ignore_errors=True)

    def _deploy(self, instances: list[NodeInstance], ss: Path) -> FloorResult:
        addresses: dict[str, str] = {}
        start = time.perf_counter()

        def prepare(instance: NodeInstance) -> None:
            addresses[instance.name] = self._prepare(instance, ss)

        _together({i.name: functools.partial(prepare, i) for i in instances}, self._threads)
        ready = time.perf_counter() - start
        values, links = initial_values(self.plan, addresses)
        for key, value in values.items():
            (ss / key).write_text(value)
        for key, target in links.items():
            (ss / key).symlink_to(target)  # relative: the same link inside and outside
        done: dict[str, float] = {}

        def deploy(instance: NodeInstance) -> None:
            try:
                for step in instance.steps:
                    self._run_step(instance, step)
            except BaseException:
                (ss / "ss:abort").write_text(f"{instance.name} failed")  # stop the waiters
                raise
            done[instance.name] = time.perf_counter() - start

        _together({i.name: functools.partial(deploy, i) for i in instances}, self._threads)
        total = time.perf_counter() - start
        aborts = sorted(p.name for p in ss.iterdir() if p.name.endswith(":abort"))
        if aborts:
            raise BenchError(f"ss-abort was raised: {aborts}")
        result_file = ss / "test.1:result"
        result = result_file.read_text() if result_file.exists() else ""
        if result != "passed":
            raise BenchError(f"test.1:result is {result!r}, not 'passed': nothing real deployed")
        settled = ss / ".settled"
        pauses = settled.read_text().split() if settled.exists() else []
        return FloorResult(total, ready, dict(sorted(done.items())), result, pauses)

    def _prepare(self, instance: NodeInstance, ss: Path) -> str:
        """Launch, mount /ss, wait for the address, install the tools; the address."""
        name = instance.container
        with self._lock:
            self._made.add(name)
        run(["lxc", "launch", self.images.get(instance.node, IMAGE), name, "-p", PROFILE, "-q"])
        run(["lxc", "config", "device", "add", name, "ssdir", "disk", f"source={ss}", "path=/ss"])
        conn = UnixHTTPConnection()
        try:
            deadline = time.perf_counter() + ADDRESS_TIMEOUT
            while (address := global_ipv4(conn, name)) is None:
                if time.perf_counter() > deadline:
                    raise BenchError(f"{name} got no IPv4 address in {ADDRESS_TIMEOUT:.0f} s")
                time.sleep(POLL)
        finally:
            conn.close()
        tools = [str(self.tools / t) for t in TOOL_NAMES]
        run(["lxc", "file", "push", "--mode", "0755", *tools, f"{name}/usr/local/bin/"])
        run(["lxc", "exec", name, "--", "mkdir", "-p", REPORT_DIR])
        return address

    def _run_step(self, instance: NodeInstance, step: Step) -> None:
        env = {
            "SLIPSTREAM_NODE_INSTANCE_NAME": instance.name,
            "SLIPSTREAM_REPORT_DIR": REPORT_DIR,
            "HOME": "/root",
            "PATH": RECIPE_PATH,
        }
        if self.settle > 0:
            env["SS_SETTLE"] = f"{self.settle:.3f}"
        flags = [f"--env={k}={v}" for k, v in env.items()]
        cmd = ["lxc", "exec", instance.container, "--cwd", "/root", *flags, "--", *step.command]
        proc = run_command(cmd, timeout=STEP_TIMEOUT, check=False)
        if proc.returncode != 0:
            raise BenchError(
                f"{instance.name}: {step.name} recipe of {step.module} exited "
                f"{proc.returncode}\n--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}"
            )

    # -- set-up and clean-up --------------------------------------------------------------

    def _write_tools(self) -> None:
        self.tools.mkdir(parents=True, exist_ok=True)
        for tool in TOOL_NAMES:
            (self.tools / tool).write_text(SS_TOOLS)

    def _instances(self, tag: str, ss: Path) -> list[NodeInstance]:
        """The node instances, their recipes written to ``ss/.recipes`` (/ss/.recipes inside)."""
        recipes = ss / ".recipes"
        recipes.mkdir(parents=True)
        ss.chmod(0o777)  # container root is an unmapped uid on the host: it must write here
        instances = []
        for node, spec in self.plan.nodes.items():
            for index in range(1, spec.multiplicity + 1):
                ni = f"{node}.{index}"
                steps: list[Step] = []
                for step in ("pre-install", "packages", "post-install", "deployment", "report"):
                    if node in self.images and step in INSTALL_STEPS:
                        continue  # in the image the node starts from
                    if step == "packages":
                        if spec.packages:
                            install = " ".join(spec.packages)
                            script = (
                                "apt-get update && DEBIAN_FRONTEND=noninteractive "
                                f"apt-get install -y {install}"
                            )
                            steps.append(Step(step, "apt-get", ["/bin/sh", "-c", script]))
                        continue
                    for n, (module, script) in enumerate(spec.recipes.get(step, ()), start=1):
                        file = recipes / f"{ni}-{step}-{n}"
                        file.write_text(script)
                        file.chmod(0o755)
                        inside = f"/ss/.recipes/{file.name}"
                        # As the agent: a script with #! runs as is, others with bash -e.
                        command = (
                            [inside] if script.startswith("#!") else ["/bin/bash", "-e", inside]
                        )
                        steps.append(Step(step, module, command))
                container = f"{self.prefix}-{tag}-{node.replace('_', '-')}-{index}"
                instances.append(NodeInstance(ni, node, index, container, steps))
        return instances

    def delete(self, names: list[str]) -> None:
        with self._lock:
            names = [n for n in names if n in self._made]
        existing = set(run(["lxc", "list", "--format", "csv", "-c", "n"], check=False).split())
        if gone := [n for n in names if n in existing]:
            run(["lxc", "delete", "-f", *gone], check=False)
        with self._lock:
            self._made.difference_update(names)

    def cleanup(self) -> list[str]:
        """Delete every container with this prefix and the work directory; the names deleted.

        After an interruption, threads may still be launching containers or running recipes:
        deleting the containers ends the recipes, then the threads are waited for (30 s at
        most) and whatever they launched meanwhile is deleted too."""
        left = self._delete_mine()
        deadline = time.monotonic() + 30
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        left += self._delete_mine()
        shutil.rmtree(self.workdir, ignore_errors=True)
        return sorted(set(left))

    def _delete_mine(self) -> list[str]:
        mine = self.prefix + "-"
        out = run(["lxc", "list", "--format", "csv", "-c", "n"], check=False)
        left = [n for n in out.split() if n.startswith(mine)]
        if left:
            run(["lxc", "delete", "-f", *left], check=False)
        return left


def _together(work: dict[str, Callable[[], None]], started: list[threading.Thread]) -> None:
    """Run every job at once, each in its own thread; raise the first failure once all have
    returned (the others are waited for, so nothing is left running)."""
    errors: dict[str, BaseException] = {}

    def guarded(label: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException as exc:
            errors[label] = exc

    threads = [
        threading.Thread(target=guarded, args=(label, fn), daemon=True, name=label)
        for label, fn in work.items()
    ]
    for thread in threads:
        started.append(thread)
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.2)
    if errors:
        label, first = next(iter(errors.items()))
        others = f"\n(also failed: {', '.join(sorted(errors)[1:])})" if len(errors) > 1 else ""
        what = str(first) if isinstance(first, BenchError) else f"{label}: {first!r}"
        raise BenchError(what + others) from first


def table(results: dict[str, Any]) -> str:
    rows = [
        ("floor: launch + recipes, no server", "floor"),
        ("  of which: 5 containers up, tools in", "floor_containers_ready"),
    ]
    return "\n".join(summary_lines(rows, results))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1, help="floor trials (1)")
    parser.add_argument(
        "--settle-ms",
        type=float,
        default=SETTLE * 1000,
        help=f"pause of a waited-for mapped input after it is set ({SETTLE * 1000:.0f})",
    )
    parser.add_argument("--json-only", action="store_true", help="print only the JSON results")
    args = parser.parse_args()
    if args.trials < 1 or args.settle_ms < 0:
        parser.error("--trials must be at least 1, --settle-ms at least 0")

    floor = Floor(f"bench-{secrets.token_hex(3)}", settle=args.settle_ms / 1000)
    started = datetime.now(UTC)

    def trials() -> list[FloorResult]:
        results: list[FloorResult] = []
        for i in range(1, args.trials + 1):
            results.append(floor.trial(f"f{i}"))
            log(f"floor trial {i}/{args.trials}: {results[-1].seconds:.3f} s")
        return results

    def cleanup() -> None:
        left = floor.cleanup()
        log(f"cleanup: deleted leftovers {left}" if left else "cleanup: nothing left over")

    status, done = guarded(trials, cleanup)
    if done is None:
        return status
    results = {
        "floor": summary([r.seconds for r in done]),
        "floor_containers_ready": summary([r.ready_seconds for r in done]),
        "per_trial": [r.__dict__ for r in done],
    }
    settings = {"trials": args.trials, "settle_ms": args.settle_ms}
    return publish(
        "webapp_floor", started, floor.prefix, settings, results, table, json_only=args.json_only
    )


if __name__ == "__main__":
    sys.exit(main())
