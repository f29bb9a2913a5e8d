"""Push to e-mail: how long after a push of examples/webapp people are told, beyond the time
the deployment itself takes (goal: under 60 s beyond it).

An installation of its own (``verify_world.World``: its server, a real git daemon, a real SMTP
server on loopback, real LXD) watches a repository holding examples/webapp. The first commit
is verified untimed (it warms the clone cache and the mirror's packages). Then, ``--trials``
times: a commit that breaks the test node (it asks the service for /itemz) is pushed and
announced (``stratus watch notify``, as a post-receive hook does); the clock runs from the end
of the push to the mail's arrival at the SMTP server, whose subject names the commit; then the
commit that fixes it, the same way. For each, the run's own duration (its creation to its end,
teardown included: what any deployment of this commit costs) is subtracted: what is left is
what continuous verification adds (noticing the push, fetching, checking the commit out,
pushing its modules, judging the run, composing and sending the mail), split into the time
before the run was created and after it ended.

Run from the project root: ``.venv/bin/python bench/push_to_mail.py [--trials 1] [--json-only]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from common import ROOT, log
from verify_world import World, measured

EXAMPLE = ROOT / "examples" / "webapp"
CHECK = '"$url/items" | grep -q'
BROKEN = '"$url/itemz" | grep -q'
DEPLOY_S = 900.0
GOAL_S = 60.0


def files(test: str | None = None) -> dict[str, str]:
    found = {f"examples/webapp/{p.name}": p.read_text() for p in sorted(EXAMPLE.glob("*.yaml"))}
    if test is not None:
        found["examples/webapp/test.yaml"] = test
    return found


def one(world: World, subject: str, test: str, author: str) -> dict[str, Any]:
    sha = world.commit(subject, files(test), author=author)
    world.push()
    pushed = time.monotonic()
    world.stratus("watch", "notify", "webapp")
    mailed = world.mails.wait_for(sha[:7], DEPLOY_S + 120)
    row = world.verdict("webapp", sha, 60)
    run = world.json("run", "show", row["run_id"])
    created = datetime.fromisoformat(run["created_at"])
    ended = datetime.fromisoformat(run["ended_at"])
    run_s = (ended - created).total_seconds()
    total = mailed - pushed
    queued = datetime.fromisoformat(row["queued_at"])
    return {
        "commit": sha,
        "verdict": row["verdict"],
        "push_to_mail_s": round(total, 2),
        "run_s": round(run_s, 2),
        "beyond_run_s": round(total - run_s, 2),
        "queued_to_run_created_s": round((created - queued).total_seconds(), 2),
    }


def measure(world: World, trials: int) -> dict[str, Any]:
    test = (EXAMPLE / "test.yaml").read_text()
    if CHECK not in test:
        raise SystemExit(f"examples/webapp/test.yaml no longer holds {CHECK!r}: update the bench")
    first = world.commit("the web application", files())
    world.push()
    world.json(
        "watch", "add", world.url, "--module", "examples/webapp", "--name", "webapp",
        "--every", "3600", "--notify", "mailto:dev@example.org",
    )  # fmt: skip
    log("verifying the first commit (untimed: it warms the caches)")
    if world.verdict("webapp", first, DEPLOY_S)["verdict"] != "passed":
        raise SystemExit("examples/webapp does not pass at its first commit")
    breaks, fixes = [], []
    for trial in range(trials):
        log(f"trial {trial + 1}: a commit that breaks the test node")
        breaks.append(one(world, f"ask for /itemz ({trial})", test.replace(CHECK, BROKEN), "Bob"))
        log(f"  {breaks[-1]}")
        log(f"trial {trial + 1}: the commit that fixes it")
        fixes.append(one(world, f"back to /items ({trial})", test, "Carol"))
        log(f"  {fixes[-1]}")
    return {"breaking": breaks, "fixing": fixes, "goal_beyond_run_s": GOAL_S}


def table(results: dict[str, Any]) -> str:
    lines = [
        f"{'commit':<10} {'verdict':<8} {'push->mail s':>13} {'run s':>8} {'beyond s':>9} "
        f"{'queued->run s':>14}"
    ]
    for kind in ("breaking", "fixing"):
        for r in results[kind]:
            lines.append(
                f"{r['commit'][:7]:<10} {r['verdict']:<8} {r['push_to_mail_s']:>13.2f} "
                f"{r['run_s']:>8.2f} {r['beyond_run_s']:>9.2f} "
                f"{r['queued_to_run_created_s']:>14.2f}"
            )
    beyond = [r["beyond_run_s"] for k in ("breaking", "fixing") for r in results[k]]
    lines.append(
        f"\nbeyond the deployment's own time: median {statistics.median(beyond):.2f} s, "
        f"max {max(beyond):.2f} s (goal < {GOAL_S:.0f} s)"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1)
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args()
    return measured(
        "push_to_mail",
        lambda world: measure(world, args.trials),
        table,
        {"trials": args.trials, "application": "examples/webapp"},
        json_only=args.json_only,
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
