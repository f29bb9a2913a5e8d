"""Bisect: a break pushed among 8 untested commits, found by the server on its own; how many
runs it made and how long it took, beside the 8 runs that verifying every commit would make.

An installation of its own (``verify_world.World``: its server, a real git daemon, a real SMTP
server on loopback, real LXD) watches a repository holding a one-node application with no
packages (each run is a real container, its recipes, its teardown: seconds, not minutes). The
first commit is verified and passes. Then 8 commits are pushed at once, announced (``stratus
watch notify``); the one at ``--bad`` (1-8) breaks the deployment recipe, and every commit after
it stays broken. The server verifies the newest, finds it failing after a commit that passed,
and bisects the 7 between in git's own order until it names the first failing commit; the
clock runs from the end of the push to the mail whose subject says "broken by <that commit>".

Reported: whether the culprit named is the commit that broke it, the runs made (the newest and
each bisect step), the wall time, each run's commit, verdict and duration, and the baseline
count (8: one run per commit). Run from the project root:
``.venv/bin/python bench/bisect_commits.py [--bad 6] [--json-only]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from verify_world import World, measured

COMMITS = 8
IMAGE = "kind: image\nimages:\n  local: debian-12\n"
APP = "kind: application\nnodes:\n  svc:\n    component: svc\n"
SVC = """kind: component
parent: base
recipes:
  deployment: |
    #!/bin/sh
{body}
"""
GOOD = "    echo serving; ss-display ready"
BAD = '    echo "the new setting is not understood" >&2; exit 1'


def files(body: str = GOOD) -> dict[str, str]:
    return {"app/base.yaml": IMAGE, "app/module.yaml": APP, "app/svc.yaml": SVC.format(body=body)}


def measure(world: World, bad: int) -> dict[str, Any]:
    first = world.commit("a service", files())
    world.push()
    world.json(
        "watch", "add", world.url, "--module", "app", "--name", "svc", "--every", "3600",
        "--notify", "mailto:dev@example.org",
    )  # fmt: skip
    if world.verdict("svc", first, 600)["verdict"] != "passed":
        raise SystemExit("the application does not pass at its first commit")
    commits: list[str] = []
    for i in range(1, COMMITS + 1):
        body = BAD if i >= bad else GOOD
        note = {f"app/notes/{i}.txt": f"change {i}\n"}
        commits.append(world.commit(f"change {i}", files(body) | note, author=f"Dev{i}"))
    culprit = commits[bad - 1]
    world.push()
    pushed = time.monotonic()
    world.stratus("watch", "notify", "svc")
    mailed = world.mails.wait_for(f"broken by {culprit[:7]}", 1800)
    wall = mailed - pushed
    state = world.json("watch", "show", "svc")["branches"][0]
    rows = [r for r in world.json("watch", "history", "svc", "--limit", "1000")]
    runs = [r for r in rows if r["phase"] == "done" and r["commit"] != first]
    return {
        "commits": COMMITS,
        "bad_position": bad,
        "culprit": culprit,
        "named": state["broken_by"],
        "named_right": state["broken_by"] == culprit,
        "runs": len(runs),
        "baseline_runs": COMMITS,
        "wall_s": round(wall, 2),
        "steps": [
            {
                "commit": r["commit"],
                "position": commits.index(r["commit"]) + 1,
                "why": r["why"],
                "verdict": r["verdict"],
                "seconds": r["seconds"],
            }
            for r in sorted(runs, key=lambda r: r["started_at"])  # the order they ran
        ],
    }


def table(results: dict[str, Any]) -> str:
    lines = [f"{'#':>3} {'commit':<9} {'why':<8} {'verdict':<8} {'seconds':>8}"]
    for step in results["steps"]:
        lines.append(
            f"{step['position']:>3} {step['commit'][:7]:<9} {step['why']:<8} "
            f"{step['verdict']:<8} {step['seconds']:>8.1f}"
        )
    lines.append(
        f"\nbroken by {results['named'][:7]} (the commit at position {results['bad_position']}: "
        f"{'right' if results['named_right'] else 'WRONG'}); {results['runs']} runs against "
        f"{results['baseline_runs']} for one run per commit; push to the mail naming it "
        f"{results['wall_s']:.1f} s"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bad", type=int, default=6, choices=range(1, COMMITS + 1))
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args()
    return measured(
        "bisect_commits",
        lambda world: measure(world, args.bad),
        table,
        {"commits": COMMITS, "bad": args.bad},
        json_only=args.json_only,
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
