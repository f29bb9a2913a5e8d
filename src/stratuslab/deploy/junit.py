"""A run as JUnit XML, the results format CI tools read.

The document is a ``<testsuites>`` with one ``<testsuite>`` per node of the application
(``<application>.<node>``, its path's slashes as dots) holding, for each of its node instances,
a ``<testcase>`` named ``web.1 provisioning`` and one per recipe phase it runs (``web.1
pre-install``, ``web.1 packages``, ``web.1 post-install``, ``web.1 deployment``, ``web.1
report``; a scaling round's hooks and later rounds as ``web.1 report (round 2)``), as
``deploy/phases.py`` makes them: the phase's time, its output in ``<system-out>``, and
``<failure message="...">`` (the abort reason, then the end of the output), ``<error>`` or
``<skipped message="...">`` when it did not pass. Then the ``<testsuite>`` elements of the nodes'
own JUnit report files (``deploy/junit_files.py``).

Bounds: a case keeps the last ``MAX_CASE_OUTPUT`` bytes of its output, the document at most
``MAX_OUTPUT`` bytes of output in all (failing cases served first), and a cut says so in the
text. Everything a node wrote is escaped, ANSI escape sequences and the characters XML 1.0
forbids are taken out. The counts (tests, failures, errors, skipped) and times of each suite
are those of its cases, and the document's are the sums of its suites'.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from xml.etree import ElementTree as ET

from stratuslab.deploy import junit_files, phases
from stratuslab.deploy.junit_files import ReportFile, clean
from stratuslab.deploy.logs import RunLogs
from stratuslab.deploy.phases import ERROR, FAILED, SKIPPED, Case, Tail
from stratuslab.deploy.reports import ReportStore
from stratuslab.deploy.runs import MAX_EVENTS, RunService
from stratuslab.errors import NotFound
from stratuslab.principal import Principal

MAX_CASE_OUTPUT = 64 * 2**10  # bytes of output kept per case: its end
MAX_OUTPUT = 32 * 2**20  # bytes of output in one document
MIN_CASE_OUTPUT = 4 * 2**10  # what each case may keep while reading, however large the run
FAILURE_OUTPUT = 4 * 2**10  # bytes of the output's end repeated in a failure
MAX_MESSAGE = 4096  # characters of a message attribute
_COUNTS = ("tests", "failures", "errors", "skipped")
_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'


class JUnitReports:
    """The JUnit report of a run, for whoever may read the run (another user's run is not
    there: the run service's own checks answer)."""

    def __init__(self, *, runs: RunService, logs: RunLogs, reports: ReportStore) -> None:
        self.runs = runs
        self.logs = logs
        self.reports = reports

    def of_run(self, run_id: str, *, caller: Principal) -> bytes:
        view = self.runs.view(run_id, caller=caller)
        plan = self.runs.plan(run_id, caller=caller)
        events: list[dict[str, Any]] = []
        while True:
            after = events[-1]["id"] if events else 0
            page = self.runs.events(run_id, caller=caller, after=after)
            events.extend(page)
            if len(page) < MAX_EVENTS:
                break
        archives = []
        for sent in self.reports.of_run(run_id, caller=caller):
            try:
                path = self.reports.file(run_id, sent["node_instance"], caller=caller)
            except NotFound:  # replaced or removed meanwhile
                continue
            archives.append((str(sent["node_instance"]), path))
        files, notes = junit_files.xml_files(archives)
        facts = {"phases": phases.expected(plan), "events": events, "notes": notes}
        return report(view | facts, self.logs.each(run_id, caller=caller), files)


def report(
    run_view: Mapping[str, Any],
    logs: Iterable[Mapping[str, Any]],
    reports: Sequence[ReportFile] = (),
) -> bytes:
    """The JUnit XML of a run.

    ``run_view`` is ``RunService.view`` with ``phases`` (``phases.expected`` of its plan),
    ``events`` (every event of the run) and ``notes`` (what was left out before, as text)
    added; ``logs`` the run's lines in the order they arrived (``RunLogs.each``), read once;
    ``reports`` the XML files of the nodes' report archives (``junit_files.xml_files``).
    """
    nodes = list(run_view.get("nodes", []))
    expected: Mapping[str, Sequence[str]] = run_view.get("phases", {})
    estimated = sum(1 + len(expected.get(n["node"], ())) for n in nodes) or 1
    limit = max(min(MAX_CASE_OUTPUT, MAX_OUTPUT // estimated), MIN_CASE_OUTPUT)
    seen = phases.fold(logs, limit=limit)
    cases = phases.node_cases(run_view, run_view.get("events", []), expected, seen, limit=limit)
    allowed = _allowance([c for found in cases.values() for c in found])

    module = str(run_view.get("module", ""))
    application = module.rpartition("/")[0] or module
    root = ET.Element("testsuites", name=clean(f"{application} run {run_view.get('id', '')}"))
    notes = [str(n) for n in run_view.get("notes", [])]
    by_node: dict[str, list[Case]] = {}
    for node in nodes:
        by_node.setdefault(str(node["node"]), []).extend(cases.get(str(node["name"]), []))
    stamp = _timestamp(run_view.get("created_at"))
    for node, found in by_node.items():
        classname = clean(f"{application.replace('/', '.')}.{node}")
        suite = ET.SubElement(root, "testsuite", name=classname, timestamp=stamp)
        properties = ET.SubElement(suite, "properties")
        for name, value in (("stratus.run", run_view.get("id")), ("stratus.module", module)):
            ET.SubElement(properties, "property", name=name, value=clean(str(value or "")))
        for case in found:
            _testcase(suite, case, classname, allowed.get(id(case), 0))
        _count(suite)

    room = junit_files.MAX_SUITES
    for file in reports:
        taken, note = junit_files.suites(file, room)
        room -= len(taken)
        root.extend(taken)
        if note:
            notes.append(note)
    for note in notes:
        root.insert(0, ET.Comment(_comment(note)))
    for name in _COUNTS:
        root.set(name, str(sum(int(s.get(name, "0")) for s in root.findall("testsuite"))))
    total = sum(junit_files.seconds(s.get("time")) or 0.0 for s in root.findall("testsuite"))
    root.set("time", f"{total:.3f}")
    ET.indent(root)
    return _DECLARATION + ET.tostring(root, encoding="unicode").encode("utf-8") + b"\n"


def _allowance(cases: list[Case]) -> dict[int, int]:
    """Bytes of output each case may show (by ``id``): failing ones first, then the others
    in order, until ``MAX_OUTPUT`` bytes are given."""
    left = MAX_OUTPUT
    allowed: dict[int, int] = {}
    ordered = sorted(cases, key=lambda c: c.outcome not in (FAILED, ERROR))
    for case in ordered:
        size = min(case.output.size if case.output else 0, left)
        allowed[id(case)] = size
        left -= size
    return allowed


def _testcase(suite: ET.Element, case: Case, classname: str, allowed: int) -> None:
    element = ET.SubElement(
        suite, "testcase", name=clean(case.name), classname=classname, time=f"{case.seconds:.3f}"
    )
    output = _shown(case.output, allowed) if case.output else ""
    message = clean(case.message)[:MAX_MESSAGE]
    if case.outcome in (FAILED, ERROR):
        tag = "failure" if case.outcome == FAILED else "error"
        problem = ET.SubElement(element, tag, message=message, type=case.phase)
        end = output.encode("utf-8")[-FAILURE_OUTPUT:].decode("utf-8", "ignore")
        problem.text = f"{message}\n\n{end}" if end else message
    elif case.outcome == SKIPPED:
        ET.SubElement(element, "skipped", message=message)
    if output:
        ET.SubElement(element, "system-out").text = output


def _shown(tail: Tail, allowed: int) -> str:
    """The output of a case, within what it is allowed, saying what was left out."""
    text = tail.text()
    dropped = tail.dropped
    data = text.encode("utf-8")
    if len(data) > allowed:
        dropped += len(data) - allowed
        text = data[len(data) - allowed :].decode("utf-8", "ignore") if allowed else ""
    text = clean(text)
    if dropped:
        text = (
            f"[output cut: its first {dropped} bytes are left out; a case keeps the last "
            f"{MAX_CASE_OUTPUT // 2**10} KiB of its output, a report {MAX_OUTPUT // 2**20} MiB "
            f"in all]\n{text}"
        )
    return text


def _count(suite: ET.Element) -> None:
    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
    suite.set("errors", str(sum(1 for c in cases if c.find("error") is not None)))
    suite.set("skipped", str(sum(1 for c in cases if c.find("skipped") is not None)))
    total = sum(float(c.get("time", "0")) for c in cases)
    suite.set("time", f"{total:.3f}")


def _timestamp(value: Any) -> str:
    """ISO 8601 in UTC without a zone, as JUnit's schema has it."""
    try:
        at = datetime.fromisoformat(str(value))
    except ValueError:
        at = datetime.now(UTC)
    if at.tzinfo is not None:
        at = at.astimezone(UTC)
    return at.replace(tzinfo=None, microsecond=0).isoformat()


def _comment(text: str) -> str:
    """A note as an XML comment holds it (no ``--``, no ``-`` at the end)."""
    text = clean(text).replace("--", "- -")
    return f" {text.rstrip('-')} "
