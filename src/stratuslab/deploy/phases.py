"""What each node instance of a run did, phase by phase: the test cases of its JUnit report.

A phase is one step of a node's recipes in one round of the run (pre-install, packages,
post-install, deployment and the scaling hooks in Executing, report in SendingReports), plus
``provisioning``: whether the node instance got a machine. Where a phase started and ended, and
with which exit code, the agent says among its output lines (``agent/protocol.py``,
``PHASE_STREAM``). What an older agent, or a node that is not our agent, does not say is
inferred: a phase of a state the node completed passed; when the node raised the abort itself,
the phase its reason names (or the last that printed something) failed; the rest did not run.

Pure: from the run's view, its events and its lines to :class:`Case` values. Each case keeps
only the last ``limit`` bytes of its output (:class:`Tail`), so that a run of any size is read
in bounded memory.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stratuslab.deploy.agent.protocol import EXECUTING, PHASE_STREAM, SENDING_REPORTS
from stratuslab.deploy.junit_files import clean
from stratuslab.deploy.plan import Plan

PHASES = {  # phase -> the run state it runs in, in the order a node runs them
    "pre-install": EXECUTING,
    "packages": EXECUTING,
    "post-install": EXECUTING,
    "deployment": EXECUTING,
    "on-vm-add": EXECUTING,
    "on-vm-remove": EXECUTING,
    "report": SENDING_REPORTS,
}
MAX_ROUNDS = 100  # cases of one phase per node instance; later rounds are merged into the last
PASSED, FAILED, ERROR, SKIPPED = "passed", "failed", "error", "skipped"


class Tail:
    """The last ``limit`` bytes (UTF-8) of a sequence of lines, and how much was left out."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.lines: deque[str] = deque()
        self.size = 0
        self.dropped = 0  # bytes left out, at the start

    def add(self, text: str) -> None:
        """Keep ``text`` as XML can hold it (junit_files.clean), dropping the oldest lines."""
        text = clean(text)
        size = len(text.encode("utf-8")) + 1
        if size > self.limit:  # one line longer than the whole tail: its end
            cut = text.encode("utf-8")[-(self.limit - 1) :]
            self.dropped += size - len(cut) - 1
            text, size = cut.decode("utf-8", "ignore"), len(cut) + 1
        self.lines.append(text)
        self.size += size
        while self.size > self.limit:
            gone = self.lines.popleft()
            gone_size = len(gone.encode("utf-8")) + 1
            self.size -= gone_size
            self.dropped += gone_size

    def text(self) -> str:
        return "".join(f"{line}\n" for line in self.lines)


@dataclass
class Case:
    """One test case: a phase of a node instance (or its provisioning)."""

    node_instance: str
    phase: str
    round: int = 1
    outcome: str = SKIPPED
    message: str = ""
    start: float | None = None  # seconds since 1970, as the node saw them
    end: float | None = None
    output: Tail | None = None
    marked: bool = False  # the agent said where it started and ended
    last_n: int = 0  # the last recipe of the phase that started
    ends: dict[int, tuple[int, bool]] = field(default_factory=dict)  # recipe -> (code, stopped)
    modules: dict[int, str] = field(default_factory=dict)  # recipe -> its module

    @property
    def name(self) -> str:
        suffix = f" (round {self.round})" if self.round > 1 else ""
        return f"{self.node_instance} {self.phase}{suffix}"

    @property
    def seconds(self) -> float:
        if self.start is None or self.end is None:
            return 0.0
        return round(max(self.end - self.start, 0.0), 3)

    def saw(self, t: float) -> None:
        if t > 0:
            self.start = t if self.start is None else min(self.start, t)
            self.end = t if self.end is None else max(self.end, t)


def expected(plan: Plan) -> dict[str, list[str]]:
    """The phases each node runs in a run's first round: those that have something to run."""
    return {
        name: [
            phase
            for phase in PHASES
            if (node.packages if phase == "packages" else node.recipes.get(phase))
            and not phase.startswith("on-vm-")
        ]
        for name, node in plan.nodes.items()
    }


def fold(lines: Iterable[Mapping[str, Any]], *, limit: int) -> dict[str, list[Case]]:
    """The phase cases each node instance's lines show, in the order they started."""
    cases: dict[str, list[Case]] = {}
    current: dict[tuple[str, str, str], Case] = {}  # (node instance, state, phase) -> case
    for line in lines:
        who = str(line.get("node_instance", ""))
        state, phase = str(line.get("state", "")), str(line.get("recipe", "")) or "output"
        key = (who, state, phase)
        t = _number(line.get("t"))
        case = current.get(key)
        if line.get("stream") == PHASE_STREAM:
            mark = _mark(line.get("text"))
            if mark is None:
                continue
            n = mark["n"]
            if case is not None and mark["event"] == "start" and case.marked and n <= case.last_n:
                case = None  # its first recipe again: the next round
            if case is None:
                case = _new(cases, current, key, limit)
            case.marked = True
            case.saw(t)
            if mark["event"] == "start":
                case.last_n = max(case.last_n, n)
                case.modules[n] = mark["module"]
            else:
                case.ends[n] = (mark["code"], mark["stopped"])
                case.modules.setdefault(n, mark["module"])
            continue
        if case is None:
            case = _new(cases, current, key, limit)
        case.saw(t)
        assert case.output is not None
        case.output.add(str(line.get("text", "")))
    return cases


def _new(
    cases: dict[str, list[Case]],
    current: dict[tuple[str, str, str], Case],
    key: tuple[str, str, str],
    limit: int,
) -> Case:
    who, _state, phase = key
    rounds = [c for c in cases.get(who, []) if c.phase == phase]
    if len(rounds) >= MAX_ROUNDS:  # merged into the last: a run cannot make cases without end
        current[key] = rounds[-1]
        return rounds[-1]
    case = Case(who, phase, round=len(rounds) + 1, output=Tail(limit))
    cases.setdefault(who, []).append(case)
    current[key] = case
    return case


def _mark(text: Any) -> dict[str, Any] | None:
    """A recipe boundary as the agent sends it; None for anything else (a node's own words)."""
    try:
        data = json.loads(str(text))
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("event") not in ("start", "end"):
        return None
    n, code = data.get("n"), data.get("code", 0)
    if not isinstance(n, int) or not isinstance(code, int) or isinstance(n, bool):
        return None
    return {
        "event": data["event"],
        "n": n,
        "module": str(data.get("module", ""))[:256],
        "code": code,
        "stopped": data.get("stopped") is True,
    }


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def node_cases(
    view: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    phases: Mapping[str, Sequence[str]],
    seen: Mapping[str, list[Case]],
    *,
    limit: int,
) -> dict[str, list[Case]]:
    """Every case of every node instance of the run (by node instance, provisioning first):
    those its lines show, judged, and those of the phases it was to run but never started."""
    facts = _Facts(view, events)
    found: dict[str, list[Case]] = {}
    for node in view.get("nodes", []):
        who = str(node["name"])
        observed = seen.get(who, [])
        names = {c.phase for c in observed}
        missing = [Case(who, p, output=Tail(limit)) for p in phases.get(node["node"], ())]
        cases = [*observed, *(c for c in missing if c.phase not in names)]
        cases.sort(key=lambda c: list(PHASES).index(c.phase) if c.phase in PHASES else 99)
        for case in cases:
            facts.judge(node, case)
        facts.attribute_abort(node, cases)
        found[who] = [facts.provisioning(node), *cases]
    return found


class _Facts:
    """What the run's view and events say about each node instance."""

    def __init__(self, view: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> None:
        self.view = view
        self.completed: dict[str, set[str]] = {}
        self.reasons: dict[tuple[str, str], str] = {}  # (node instance, kind) -> reason
        self.provisioned: dict[str, float] = {}
        for event in events:
            who, kind = event.get("node_instance") or "", event.get("kind")
            fields = event.get("fields") or {}
            if kind == "complete":
                self.completed.setdefault(who, set()).add(str(fields.get("state")))
            elif kind in ("provisioning-failed", "lost"):
                self.reasons.setdefault((who, str(kind)), str(fields.get("reason", "")))
            elif kind == "provisioned":
                self.provisioned.setdefault(who, _seconds(event.get("at")))

    @property
    def why_not_run(self) -> str:
        run = self.view
        if run.get("abort_reason"):
            return f"the run aborted first: {run['abort_reason']}"
        if run.get("cancelled"):
            return "the run was cancelled first"
        if run.get("state") in ("Done", "Aborted", "Cancelled"):
            return "the run ended first"
        return "not yet"

    def provisioning(self, node: Mapping[str, Any]) -> Case:
        who = str(node["name"])
        case = Case(who, "provisioning")
        created, at = _seconds(self.view.get("created_at")), self.provisioned.get(who)
        if node.get("provisioning") == "failed":
            reason = self.reasons.get((who, "provisioning-failed"), "provisioning failed")
            tolerated = node.get("removed") and not self.view.get("abort_reason")
            case.outcome = SKIPPED if tolerated else FAILED
            case.message = (
                f"left out, within the node's allowance: {reason}" if tolerated else reason
            )
        elif node.get("lost"):
            case.outcome = FAILED
            case.message = f"lost: {self.reasons.get((who, 'lost'), 'its machine is gone')}"
        elif at is not None or node.get("provisioning") == "ready":
            case.outcome = PASSED
        else:
            case.message = f"not provisioned: {self.why_not_run}"
        if at is not None and created:
            case.start, case.end = created, at
        return case

    def judge(self, node: Mapping[str, Any], case: Case) -> None:
        who = str(node["name"])
        if case.phase not in PHASES:  # lines of no phase a node runs: only their output
            case.outcome = PASSED
            return
        state = PHASES[case.phase]
        run = self.view
        if case.marked:
            started = set(case.modules)
            failed = sorted(n for n, (code, stopped) in case.ends.items() if code and not stopped)
            if failed:
                n = failed[0]
                code = case.ends[n][0]
                what = f"{case.phase} recipe of {case.modules.get(n, '?')} exited with {code}"
                case.outcome = FAILED
                if state == SENDING_REPORTS:
                    case.message = f"{who}: {what} (a report recipe: the run went on)"
                else:
                    case.message = str(node.get("abort") or f"{who}: {what}")
            elif any(stopped for _, stopped in case.ends.values()):
                if run.get("timed_out"):
                    case.outcome, case.message = FAILED, str(run.get("abort_reason") or "timed out")
                else:
                    case.message = f"stopped: the run left {state} ({self.why_not_run})"
            elif started - set(case.ends):
                if node.get("lost"):
                    case.message = f"did not finish: {who} was lost"
                elif run.get("state") in ("Done", "Aborted", "Cancelled"):
                    case.outcome = ERROR
                    case.message = f"{who}: the {case.phase} recipe started and never ended"
                else:
                    case.message = "not finished yet"
            else:
                case.outcome = PASSED
            return
        if state in self.completed.get(who, set()):
            case.outcome = PASSED
        elif node.get("provisioning") == "failed":
            case.message = f"not run: {who} could not be provisioned"
        elif node.get("lost"):
            case.message = f"not run: {who} was lost"
        else:
            case.message = f"not run: {self.why_not_run}"

    def attribute_abort(self, node: Mapping[str, Any], cases: list[Case]) -> None:
        """A node that raised the abort itself has a failing case that says so: the one that
        failed; else, without the agent's word, the phase its reason names, or the last that
        printed, or the first; else (a recipe's own ss-abort) the last one that ran."""
        reason = node.get("abort")
        executing = [c for c in cases if PHASES.get(c.phase) == EXECUTING]
        if not reason or node.get("lost") or not executing:
            return
        if any(c.outcome == FAILED for c in executing):
            return
        if any(c.marked for c in executing):
            ran = [c for c in executing if c.marked]
            culprit = ran[-1]
        else:
            named = [c for c in executing if f" {c.phase} recipe " in f" {reason}"]
            printed = [c for c in executing if c.output is not None and c.output.lines]
            culprit = (named or printed[-1:] or executing)[0]
            position = executing.index(culprit)
            for before in executing[:position]:
                before.outcome, before.message = PASSED, ""
        culprit.outcome, culprit.message = FAILED, str(reason)


def _seconds(value: Any) -> float:
    from datetime import datetime

    if not isinstance(value, str) or not value:
        return 0.0
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return 0.0
