"""Verifying one commit: its modules from the repository at that commit, a run of its
application from pristine instances, and the verdict read from how the run ended.

The modules are read exactly as ``stratus deploy`` reads a repository (``deploy/tree.py``'s
``read_tree``), so a commit whose modules do not load is ``invalid`` with the file, line and
key, and nothing is provisioned. They are pushed as versions tagged ``git:<sha>`` (a module
whose text did not change keeps its version), and the run is the watch owner's, under their
quota.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from stratuslab.deploy.modules import ModuleStore
from stratuslab.deploy.runs import RunRequest, RunService
from stratuslab.deploy.states import KeepRunning
from stratuslab.deploy.tree import load_tree
from stratuslab.errors import (
    BackendError,
    CapacityExceeded,
    Forbidden,
    Invalid,
    NotFound,
    StratusError,
)
from stratuslab.principal import Principal
from stratuslab.verify.values import Verdict

RUN_TIMEOUT_S = 3600  # a commit whose application is not Ready within an hour fails
MAX_REASON = 2000
# What the infrastructure did, not the commit: a machine that could not be made, or was lost.
_INFRASTRUCTURE = ("provisioning-failed", "lost")
JUDGED_KINDS = ("abort", *_INFRASTRUCTURE)  # the events a verdict is read from


class Tree(Protocol):
    def export(self, sha: str, dest: Path, *, max_mib: int = 512) -> None: ...


@dataclass(frozen=True)
class Started:
    run_id: str | None  # None: the verdict is known without a run
    verdict: Verdict | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Judged:
    verdict: Verdict
    reason: str | None
    node: str | None
    seconds: float | None


def start(
    tree: Tree,
    sha: str,
    *,
    module: str,
    owner: Principal,
    modules: ModuleStore,
    runs: RunService,
    params: Mapping[str, str],
    keep_running: str,
    tags: Sequence[str],
) -> Started:
    """Export the commit, push its modules, start the run. Problems of the commit's own making
    are ``invalid``; those of the site's (a quota full, git failing) are ``error``."""
    with tempfile.TemporaryDirectory(prefix="stratus-verify-") as scratch:
        root = Path(scratch)
        try:
            tree.export(sha, root)
        except Invalid as exc:  # a tree over the bounds: the commit's own making
            return Started(None, Verdict.INVALID, _bounded(f"checking {sha[:12]} out: {exc}"))
        except StratusError as exc:
            return Started(None, Verdict.ERROR, _bounded(f"checking {sha[:12]} out: {exc}"))
        try:
            texts = load_tree(root, module)
        except Invalid as exc:
            return Started(None, Verdict.INVALID, _bounded(str(exc)))
    try:
        stored = modules.push(texts, caller=owner, only_changed=True, tag=f"git:{sha}")
    except (Invalid, Forbidden, NotFound) as exc:  # Forbidden: a path someone else holds
        return Started(None, Verdict.INVALID, _bounded(str(exc)))
    application = stored[0]
    request = RunRequest(
        module=f"{application.path}/{application.version}",
        given=dict(params),
        keep_running=KeepRunning(keep_running),
        tags=list(tags),
        timeout_s=RUN_TIMEOUT_S,
    )
    try:
        run = runs.create(request, caller=owner)
    except Invalid as exc:  # the application does not resolve (a parameter, a node)
        return Started(None, Verdict.INVALID, _bounded(str(exc)))
    except (CapacityExceeded, BackendError) as exc:
        return Started(None, Verdict.ERROR, _bounded(str(exc)))
    return Started(str(run["id"]))


def judge(run: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> Judged | None:
    """The verdict of a run that has settled (``RunService.settled``: ended, or kept in Ready
    with every node done), from its summary and its events of ``JUDGED_KINDS``; None for a
    run in Ready that its policy is about to end (its verdict comes with Done)."""
    state = run["state"]
    if state == "Ready" and run.get("keep_running") not in ("always", "on-success"):
        return None
    if state not in ("Done", "Aborted", "Cancelled", "Ready"):
        return None
    seconds = _seconds(run)
    if run.get("cancelled") or state == "Cancelled":
        return Judged(Verdict.CANCELLED, run.get("abort_reason"), None, seconds)
    reason = run.get("abort_reason")
    if reason is None and state in ("Done", "Ready"):
        return Judged(Verdict.PASSED, None, None, seconds)
    node = _aborting_node(events)
    infrastructure = [e for e in events if e.get("kind") in _INFRASTRUCTURE]
    if infrastructure:
        first = infrastructure[0]
        said = (first.get("fields") or {}).get("reason") or first.get("message") or ""
        where = first.get("node_instance")
        text = f"{where}: {said}" if where and not str(said).startswith(f"{where}:") else said
        return Judged(Verdict.ERROR, _bounded(f"the infrastructure failed: {text}"), where, seconds)
    if run.get("timed_out"):
        return Judged(Verdict.FAILED, _bounded(reason or "timed out"), node, seconds)
    return Judged(Verdict.FAILED, _bounded(reason or f"the run ended {state}"), node, seconds)


def _aborting_node(events: Sequence[Mapping[str, Any]]) -> str | None:
    for event in events:
        if event.get("kind") == "abort":
            found = event.get("node_instance")
            return str(found) if found else None
    return None


def _seconds(run: Mapping[str, Any]) -> float | None:
    ended = run.get("ended_at") or run.get("last_state_change")
    if not ended:
        return None
    delta = datetime.fromisoformat(ended) - datetime.fromisoformat(run["created_at"])
    return round(delta.total_seconds(), 1)


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"
