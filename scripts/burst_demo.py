"""The demo's second act: bursting to a second LXD host.

A second LXD host is made on this machine (an LXD daemon inside a system container,
``cloud/nested_host.py``; cached after the first time) and registered with the server as the
cloud ``host2`` over HTTPS, after ``local`` in priority. ``local`` is capped at 3 instances,
and examples/webapp is deployed with four web servers: three of its seven node instances run
here, the others burst to host2, and the load balancer spreads requests over web servers on
both hosts (nodes reach each other and the server by address: this host routes host2's
network, nothing shares a bridge). Everything is put back as it was at the end (the run torn down, host2 removed
from the store and deleted, local's cap restored), also on failure or Ctrl-C.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from stratuslab.cloud import nested_host

ROOT = Path(__file__).resolve().parent.parent
STRATUS = str(ROOT / ".venv" / "bin" / "stratus")
CLOUD, CAP, WEB = "host2", 3, 4


def stratus(*args: str, stdin: str | None = None, check: bool = True) -> str:
    done = subprocess.run(
        [STRATUS, *args], cwd=ROOT, input=stdin, capture_output=True, text=True, check=False
    )
    if check and done.returncode != 0:
        raise SystemExit(f"stratus {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def main() -> int:
    before = json.loads(stratus("cloud", "show", "local", "-o", "json")).get("max_instances")
    known = {c["name"] for c in json.loads(stratus("cloud", "list", "-o", "json"))}
    registered, run_id, status = False, "", 1
    print("==> making a second LXD host on this machine (an LXD inside a container)")
    host = nested_host.ensure(progress=lambda what: print(f"    {what}", flush=True))
    try:
        if CLOUD not in known:
            print(f"==> registering it as the cloud {CLOUD}: {host.endpoint}")
            stratus(
                "cloud", "add", CLOUD, "--lxd", host.endpoint, "--trust-password-stdin",
                "--profile", host.profile, "--priority", "200",
                stdin=host.trust_password + "\n",
            )  # fmt: skip
            registered = True
        print(f"==> capping local at {CAP} instances, deploying examples/webapp with {WEB} web")
        stratus("cloud", "set", "local", "--max-instances", str(CAP))
        deployed = subprocess.run(
            [STRATUS, "deploy", "examples/webapp", "--multiplicity", f"web={WEB}",
             "--keep-running", "always", "--tags", "demo,burst"],
            cwd=ROOT, check=False,
        )  # fmt: skip
        run_id = json.loads(stratus("run", "list", "-n", "1", "-o", "json"))[0]["id"]
        shown: dict[str, Any] = json.loads(stratus("run", "show", run_id, "-o", "json"))
        print("==> where the node instances went:")
        for node in shown["nodes"]:
            print(f"    {node['name']:<8} {node['cloud']:<6} {node['hostname'] or '':<12} "
                  f"{node['placement']}")  # fmt: skip
        params = json.loads(stratus("run", "params", run_id, "-o", "json"))
        url, verdict = params.get("ss:url.service"), params.get("test.1:result")
        print(f"==> service URL: {url or 'none'}; test verdict: {verdict or 'failed'}")
        if deployed.returncode == 0 and url:
            print("==> asking the service from this host (answered by web servers on both hosts):")
            for _ in range(WEB):
                with urllib.request.urlopen(f"{url}/", timeout=10) as answer:  # noqa: S310
                    print("    " + answer.read().decode().strip())
            status = 0
        return status
    finally:
        if run_id:
            print(f"==> tearing down run {run_id[:8]}")
            stratus("run", "terminate", run_id, check=False)
        stratus("cloud", "set", "local", "--max-instances", str(before or "none"), check=False)
        if registered:
            stratus("cloud", "remove", CLOUD, check=False)
        nested_host.remove(host.name)


if __name__ == "__main__":
    sys.exit(main())
